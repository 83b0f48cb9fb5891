"""The quality runs' data: every sequence once (for the trunk cache), pairs as indices into them.

GSM8K: the four GPT-3 solutions of each question in ../shared/data/gsm8k/model_solutions_dev.jsonl,
labelled `is_correct`; pairs are goalrm's `model_pairs` (correct chosen, incorrect rejected).
HH: a fixed subset of ../shared/data/hh-rlhf harmless-base pairs. Splits are by question (GSM8K) or
by pair (HH), per seed, with goalrm's `is_eval_question` hash.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from goalrm.data.formats import read_pairs
from goalrm.data.gsm8k import final_answer, is_eval_question, prompt_for, question_id
from goalrm.data.gsm8k_solutions import model_pairs, read_questions
from goalrm.data.tokenize import tokenize_completion, tokenize_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K = DATA / "gsm8k" / "model_solutions_dev.jsonl"
HH = DATA / "hh-rlhf" / "harmless-base-dev.jsonl.gz"


@dataclass(frozen=True)
class Seq:
    ids: list[int]
    start: int  # first completion token
    group: str  # the split unit: a question's text (GSM8K) or a pair's number (HH)
    label: bool  # is_correct (GSM8K); chosen (HH)
    answer: str | None = None  # extracted final answer (GSM8K), for majority voting


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
