"""bench/quality.py's pieces: the split on the real data (skipped without ../shared/data) and one
whole run on a tiny model over cached trunk states."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality  # noqa: E402
from quality_data import GSM8K, Seq, Task, gsm8k_task  # noqa: E402

from goalrm.frozen_trunk import trunk_states  # noqa: E402
from goalrm.model import build_model, load_tokenizer  # noqa: E402


@pytest.mark.skipif(not GSM8K.exists(), reason=f"{GSM8K} is absent")
def test_gsm8k_pairs_are_correct_over_incorrect_and_split_by_question():
    task = gsm8k_task(load_tokenizer("tiny"), 256)
    assert len(task.seqs) == 4 * 915
    assert all(task.seqs[c].label and not task.seqs[r].label for c, r in task.pairs)
    assert all(task.seqs[c].group == task.seqs[r].group for c, r in task.pairs)
    splits = {}
    for seed in (0, 1):
        train, evals, eval_seqs = task.split(seed, 0.25)
        held = {task.seqs[i].group for i in eval_seqs}
        assert not held & {task.seqs[c].group for c, _ in train}
        assert {task.seqs[c].group for c, _ in evals} <= held
        assert len(train) + len(evals) == len(task.pairs)
        splits[seed] = held
    assert splits[0] != splits[1]


def _tiny_task():
    g = torch.Generator().manual_seed(0)
    seqs, pairs = [], []
    for q in range(24):
        base = len(seqs)
        for k in range(4):
            n = int(torch.randint(10, 24, (1,), generator=g))
            seqs.append(Seq(torch.randint(3, 250, (n,), generator=g).tolist(), 5, f"question {q}", k % 2 == 0, str(k % 3)))
        pairs += [(base, base + 1), (base + 2, base + 3)]
    task = Task("gsm8k", seqs, pairs)
    trunk = build_model("tiny").eval()
    states = torch.cat([trunk_states(trunk, torch.tensor([s.ids]), torch.ones(1, len(s.ids), dtype=torch.long), 1)[0] for s in seqs])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor([len(s.ids) for s in seqs]).cumsum(0)])
    return task, states, offsets


def test_a_quality_run_is_deterministic_and_only_the_setting_differs(monkeypatch):
    task, states, offsets = _tiny_task()
    real = quality.load_config

    def tiny_config(path, overrides=None):
        overrides = dict(overrides or {})
        overrides["model"] = {**overrides.get("model", {}), "name_or_path": "tiny"}
        overrides["train"] = {**overrides.get("train", {}), "max_steps": 4, "warmup_steps": 1}
        return real(path, overrides)

    monkeypatch.setattr(quality, "load_config", tiny_config)
    args = type("Args", (), {"eval_fraction": 0.25, "cut": 1, "export": ""})()
    bt, bt_again, paper = (quality.run(task, states, offsets, args, s, 3) for s in ("bt", "bt", "paper"))
    assert bt == {**bt_again, "seconds": bt["seconds"]}  # same seed: same split, weights, order, numbers
    assert bt["final_loss"]["contrastive_loss"] == 0 and paper["final_loss"]["contrastive_loss"] > 0
    assert bt["eval_seqs"] == paper["eval_seqs"] and bt["train_pairs"] == paper["train_pairs"]
    assert bt["auroc"] != paper["auroc"] or bt["final_loss"]["bt_loss"] != paper["final_loss"]["bt_loss"]
    for row in (bt, paper):
        assert set(row["prefix_auroc_q"]) == {"0.25", "0.5", "0.75", "1.0"}
        saved = [row["filtering"][q]["tokens_saved"] for q in ("0.05", "0.1", "0.25")]
        assert saved == sorted(saved)  # a higher threshold stops more tokens
