"""The quality runs' data: every sequence once (for the trunk cache), pairs as indices into them.

GSM8K: the four GPT-3 solutions of each question in ../shared/data/gsm8k/model_solutions_dev.jsonl,
labelled `is_correct`; pairs are goalrm's `model_pairs` (correct chosen, incorrect rejected).
GSM8K-perturb: the reference solutions of a fixed subset of ../shared/data/gsm8k/train.jsonl, each
against itself with one calculation wrong (`goalrm data gsm8k-perturb`), so the rejected completion's
first wrong token is known. HH: a fixed subset of ../shared/data/hh-rlhf harmless-base pairs. Splits
are by question (GSM8K) or by pair (HH), per seed, with goalrm's `is_eval_question` hash.
"""

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from goalrm.data.errors import BadRowError
from goalrm.data.formats import PreferencePair, read_pairs, records
from goalrm.data.gsm8k import final_answer, is_eval_question, prompt_for, question_id
from goalrm.data.gsm8k_perturb import perturbed_pair
from goalrm.data.gsm8k_solutions import model_pairs, read_questions
from goalrm.data.tokenize import tokenize_completion, tokenize_pair, tokenize_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K = DATA / "gsm8k" / "model_solutions_dev.jsonl"
GSM8K_TRAIN = DATA / "gsm8k" / "train.jsonl"
HH = DATA / "hh-rlhf" / "harmless-base-dev.jsonl.gz"


@dataclass(frozen=True)
class Seq:
    ids: list[int]
    start: int  # first completion token
    group: str  # the split unit: a question's text (GSM8K) or a pair's number (HH)
    label: bool  # is_correct (GSM8K); chosen (HH)
    answer: str | None = None  # extracted final answer (GSM8K), for majority voting
    error: int | None = None  # the first wrong token, counted from `start` (GSM8K-perturb's rejected)


@dataclass(frozen=True)
class Task:
    name: str
    seqs: list[Seq]
    pairs: list[tuple[int, int]]  # (chosen, rejected) indices into seqs

    def split(self, seed: int, eval_fraction: float):
        """(train pairs, eval pairs, eval sequences) for one seed; a group is wholly on one side."""
        held = {g for g in {s.group for s in self.seqs} if is_eval_question(g, seed, eval_fraction)}
        train = [p for p in self.pairs if self.seqs[p[0]].group not in held]
        evals = [p for p in self.pairs if self.seqs[p[0]].group in held]
        return train, evals, [i for i, s in enumerate(self.seqs) if s.group in held]


def gsm8k_task(tokenizer, max_length: int) -> Task:
    seqs, pairs = [], []
    for q in read_questions(str(GSM8K)):
        prompt, index = prompt_for(q.question), {}
        for s in q.solutions:
            ids, start, _ = tokenize_completion(prompt, s.text, tokenizer, max_length)
            index.setdefault(s.text, len(seqs))
            seqs.append(Seq(ids, start, q.question, s.is_correct, final_answer(s.text)))
        pairs += [(index[p["chosen"]], index[p["rejected"]]) for p in model_pairs(q)]
    return Task("gsm8k", seqs, pairs)


def gsm8k_perturb_task(tokenizer, max_length: int, n_pairs: int) -> Task:
    """The first `n_pairs` questions of a fixed shuffle that perturb cleanly, each perturbed as
    `goalrm data gsm8k-perturb --seed 0` does (seeded by question)."""
    rows = [r for _, r in records(str(GSM8K_TRAIN))]
    random.Random(0).shuffle(rows)
    seqs, index = [], []
    for r in rows:
        row, _ = perturbed_pair(r["question"], r["answer"], random.Random(f"0:{question_id(r['question'])}"))
        if row is None:
            continue
        pair = PreferencePair(row["prompt"], row["chosen"], row["rejected"], rejected_first_error=row["rejected_first_error"])
        try:
            t = tokenize_pair(pair, tokenizer, max_length)
        except BadRowError:  # the whole difference lies past max_length
            continue
        if t.rejected_first_error is None:  # the error cut away by max_length
            continue
        index.append((len(seqs), len(seqs) + 1))
        seqs += [Seq(t.chosen_ids, t.chosen_start, r["question"], True),
                 Seq(t.rejected_ids, t.rejected_start, r["question"], False, error=t.rejected_first_error - t.rejected_start)]
        if len(index) == n_pairs:
            break
    return Task("gsm8k_perturb", seqs, index)


def hh_task(tokenizer, max_length: int, n_pairs: int) -> Task:
    """The first `n_pairs` usable pairs of a fixed shuffle (the same subset for every seed)."""
    pairs = read_pairs(str(HH), on_bad_row="skip")  # a few transcripts have an empty last turn
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    tokenized, _ = tokenize_pairs([pairs[i] for i in order[: n_pairs * 2]], tokenizer, max_length, on_bad_row="skip")
    seqs, index = [], []
    for k, t in enumerate(tokenized[:n_pairs]):
        seqs += [Seq(t.chosen_ids, t.chosen_start, f"hh-{k}", True), Seq(t.rejected_ids, t.rejected_start, f"hh-{k}", False)]
        index.append((2 * k, 2 * k + 1))
    return Task("hh", seqs, index)


def question_ids(task: Task, idx: list[int]) -> list[str]:
    return [question_id(task.seqs[i].group) for i in idx]
