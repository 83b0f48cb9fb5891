"""bench/quality.py's pieces: the split on the real data (skipped without ../shared/data), the
resumable trunk cache, and whole runs on a tiny model over cached trunk states."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import quality  # noqa: E402
import quality_cache  # noqa: E402
import quality_lm  # noqa: E402
from quality_table import columns, print_table  # noqa: E402
from quality_data import GSM8K, GSM8K_TRAIN, Seq, Task, gsm8k_perturb_task, gsm8k_task  # noqa: E402

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


@pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"{GSM8K_TRAIN} is absent")
def test_gsm8k_perturb_pairs_share_the_prefix_up_to_the_known_first_error():
    task = gsm8k_perturb_task(load_tokenizer("tiny"), 256, 40)
    assert len(task.pairs) == 40
    for c, r in task.pairs:
        chosen, rejected = task.seqs[c], task.seqs[r]
        assert chosen.label and not rejected.label and chosen.group == rejected.group and chosen.error is None
        # completions (prompts may be cut from the left differently when one side is longer)
        c_ids, r_ids, e = chosen.ids[chosen.start :], rejected.ids[rejected.start :], rejected.error
        assert c_ids[:e] == r_ids[:e] and c_ids != r_ids
        # the first wrong token starts the changed number; the ids part within it (72 -> 71)
        differ = next(i for i, (a, b) in enumerate(zip(c_ids, r_ids)) if a != b)
        assert e <= differ < e + 8


def test_the_trunk_cache_resumes_from_its_parts(tmp_path, monkeypatch):
    task, _, offsets = _tiny_task()
    trunk = build_model("tiny").eval()
    expected = _states(trunk, task.seqs)
    monkeypatch.setattr(quality_cache, "CACHE", tmp_path)
    monkeypatch.setattr(quality_cache, "PART", 20)  # 96 sequences: 5 parts
    real, calls = quality_cache._part_states, []

    def interrupted(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(quality_cache, "_part_states", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quality_cache.trunk_cache(task, trunk, "tiny", 1, 0)
    parts = quality_cache.cache_path(task, "tiny", 1).with_suffix(".parts")
    assert len(list(parts.iterdir())) == 2 and not quality_cache.cache_path(task, "tiny", 1).exists()

    calls.clear()
    monkeypatch.setattr(quality_cache, "_part_states", lambda *a: calls.append(a[2]) or real(*a))
    states, got_offsets = quality_cache.trunk_cache(task, trunk, "tiny", 1, 0)
    assert len(calls) == 3  # only the parts the interrupted run did not write
    assert torch.equal(got_offsets, offsets) and torch.allclose(states, expected, atol=1e-5)
    assert not parts.exists()
    calls.clear()
    again, _ = quality_cache.trunk_cache(task, trunk, "tiny", 1, 0)  # whole: read, not computed
    assert not calls and torch.equal(again, states)


def _states(trunk, seqs):
    """The input of layer 1, each sequence alone (no padding), concatenated."""
    return torch.cat([trunk_states(trunk, torch.tensor([s.ids]), torch.ones(1, len(s.ids), dtype=torch.long), 1)[0] for s in seqs])


def _tiny_task(name="gsm8k"):
    g = torch.Generator().manual_seed(0)
    seqs, pairs = [], []
    for q in range(24):
        base = len(seqs)
        for k in range(4):
            n = int(torch.randint(10, 24, (1,), generator=g))
            seqs.append(Seq(torch.randint(3, 250, (n,), generator=g).tolist(), 5, f"question {q}", k % 2 == 0, str(k % 3),
                            error=None if k % 2 == 0 else int(torch.randint(0, n - 5, (1,), generator=g))))
        pairs += [(base, base + 1), (base + 2, base + 3)]
    task = Task(name, seqs, pairs)
    states = _states(build_model("tiny").eval(), seqs)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor([len(s.ids) for s in seqs]).cumsum(0)])
    return task, states, offsets


def _tiny_configs(monkeypatch):
    real = quality.load_config

    def tiny_config(path, overrides=None):
        overrides = dict(overrides or {})
        overrides["model"] = {**overrides.get("model", {}), "name_or_path": "tiny"}
        overrides["train"] = {**overrides.get("train", {}), "max_steps": 4, "warmup_steps": 1}
        return real(path, overrides)

    monkeypatch.setattr(quality, "load_config", tiny_config)
    return type("Args", (), {"eval_fraction": 0.25, "cut": 1, "export": "", "lr": None, "steps": None, "eval_every": None,
                           "precision": None, "device": torch.device("cpu"), "progress": None})()


def test_a_quality_run_is_deterministic_and_only_the_setting_differs(monkeypatch):
    task, states, offsets = _tiny_task()
    args = _tiny_configs(monkeypatch)
    bt, bt_again, paper = (quality.run(task, states, offsets, args, s, 3) for s in ("bt", "bt", "paper"))
    assert bt == {**bt_again, "seconds": bt["seconds"]}  # same seed: same split, weights, order, numbers
    assert bt["final_loss"]["contrastive_loss"] == 0 and paper["final_loss"]["contrastive_loss"] > 0
    assert bt["eval_seqs"] == paper["eval_seqs"] and bt["train_pairs"] == paper["train_pairs"]
    assert bt["auroc"] != paper["auroc"] or bt["final_loss"]["bt_loss"] != paper["final_loss"]["bt_loss"]
    for row in (bt, paper):
        assert set(row["prefix_auroc_q"]) == {"0.25", "0.5", "0.75", "1.0"}
        saved = [row["filtering"][q]["tokens_saved"] for q in ("0.05", "0.1", "0.25")]
        assert saved == sorted(saved)  # a higher threshold stops more tokens


def test_a_gsm8k_perturb_run_reports_localization_and_a_learning_curve(monkeypatch, capsys):
    task, states, offsets = _tiny_task("gsm8k_perturb")
    args = _tiny_configs(monkeypatch)
    row = quality.run(task, states, offsets, args, "paper", 0)
    assert f"step 4/4: held-out pair accuracy {row['curve'][-1][1]:.3f}" in capsys.readouterr().out  # as it is measured
    loc = row["localization"]
    assert loc["n_with_first_error"] == row["eval_pairs"] > 0
    assert 0 <= loc["tokens_saved_at_5pct"] <= 1 and 0 <= loc["auroc"] <= 1
    assert [s for s, _ in row["curve"]] == [4]  # max_steps 4 < eval_every: the final step only
    assert abs(row["curve"][-1][1] - row["pairwise_accuracy"]) <= 1 / row["eval_pairs"]  # other batches, same model
    assert "filtering" not in row  # majority voting needs several solutions per question
    assert row["device"] == "cpu"  # recorded with the run; not part of its key
    args.eval_every = 2
    assert [s for s, _ in quality.run(task, states, offsets, args, "bt", 0)["curve"]] == [2, 4]  # --eval-every
    zero = {**row, "localization": {**loc, "detect_at_1": 0.0, "detection_delay": None}}
    cells = {h: get(zero) for h, get in columns("gsm8k_perturb")[1:]}
    assert cells["localization detect_at_1"] == 0.0  # measured zero, shown as 0, not as "-"
    assert cells["localization detection_delay"] != cells["localization detection_delay"]  # None: NaN, shown "-"


def test_an_interrupted_run_continues_from_its_last_curve_point_to_the_same_result(monkeypatch, tmp_path, capsys):
    task, states, offsets = _tiny_task("gsm8k_perturb")
    args = _tiny_configs(monkeypatch)
    args.eval_every = 2
    whole = quality.run(task, states, offsets, args, "paper", 0)  # the contrastive sampler draws from the generator

    args.progress = tmp_path
    real, steps = quality.reward_model_loss, []

    def interrupted(*a, **k):
        if len(steps) == 3:  # in step 4: step 2 was saved, step 3's work is lost
            raise KeyboardInterrupt
        steps.append(1)
        return real(*a, **k)

    monkeypatch.setattr(quality, "reward_model_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quality.run(task, states, offsets, args, "paper", 0)
    saved = list(tmp_path.iterdir())
    assert saved == [quality.run_progress(task, args, "paper", 0)]
    assert quality.run_progress(task, args, "bt", 0) != saved[0] != quality.run_progress(task, args, "paper", 1)
    state = torch.load(saved[0], weights_only=True)
    state["seconds"] = 1000.0  # as if steps 1 and 2 had taken that long
    torch.save(state, saved[0])

    steps.clear()
    monkeypatch.setattr(quality, "reward_model_loss", lambda *a, **k: steps.append(1) or real(*a, **k))
    args.eval_every = 1  # continued with the curve measured more often: the same run, one more curve point
    resumed = quality.run(task, states, offsets, args, "paper", 0)
    assert len(steps) == 2  # steps 3 and 4 only
    assert "continuing from step 2/4" in capsys.readouterr().out
    # weights, AdamW moments, schedule and the sampler's generator all came back: the same numbers
    assert [p for p in resumed["curve"] if p[0] != 3] == whole["curve"] and [p[0] for p in resumed["curve"]] == [2, 3, 4]
    assert resumed == {**whole, "seconds": resumed["seconds"], "curve": resumed["curve"]}
    assert 1000 <= resumed["seconds"] < 1000 + 60  # the run's time counts its part before the interruption


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_asked_for_between_curve_points_saves_that_step_and_the_run_continues_from_it(monkeypatch, tmp_path, capsys, signum):
    task, states, offsets = _tiny_task("gsm8k_perturb")
    args = _tiny_configs(monkeypatch)
    args.eval_every = 2
    whole = quality.run(task, states, offsets, args, "paper", 0)

    args.progress = tmp_path
    real, steps = quality.reward_model_loss, []

    def stopped_in_step_3(*a, **k):
        steps.append(1)
        if len(steps) == 3:  # as `kill` (or Ctrl-C) would, in the middle of step 3
            os.kill(os.getpid(), signum)
        return real(*a, **k)

    monkeypatch.setattr(quality, "reward_model_loss", stopped_in_step_3)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as stop:
        quality.run(task, states, offsets, args, "paper", 0)
    assert stop.value.code == 128 + signum and len(steps) == 3  # step 3 finished, step 4 not begun
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert "stopped at step 3/4, saved to" in capsys.readouterr().out
    assert torch.load(quality.run_progress(task, args, "paper", 0), weights_only=True)["step"] == 3

    steps.clear()
    monkeypatch.setattr(quality, "reward_model_loss", lambda *a, **k: steps.append(1) or real(*a, **k))
    resumed = quality.run(task, states, offsets, args, "paper", 0)
    assert len(steps) == 1 and "continuing from step 3/4" in capsys.readouterr().out
    assert resumed == {**whole, "seconds": resumed["seconds"]}  # step 3's work kept: the same numbers


def test_a_bf16_run_trains_under_autocast_and_is_recorded_as_another_run(monkeypatch):
    task, states, offsets = _tiny_task("gsm8k_perturb")
    args = _tiny_configs(monkeypatch)
    fp32 = quality.run(task, states, offsets, args, "paper", 0)
    args.precision = "bf16"
    bf16 = quality.run(task, states, offsets, args, "paper", 0)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert quality.run_key(fp32) != quality.run_key(bf16)  # not skipped as already done
    assert quality.run_key({k: v for k, v in fp32.items() if k != "precision"}) == quality.run_key(fp32)  # older rows were fp32
    # bf16 rounding moves the numbers (autocast is on), and only a little (the weights stay fp32)
    assert bf16["final_loss"]["bt_loss"] != fp32["final_loss"]["bt_loss"]
    assert abs(bf16["final_loss"]["loss"] - fp32["final_loss"]["loss"]) < 0.05
    torch.manual_seed(0)
    model = quality.top_only(quality.build_model("tiny", quality.load_config(str(quality.CONFIGS / "quality_gsm8k_perturb.yaml")).model.heads()), 1)
    goal = torch.ones(states.shape[1])
    ref, out = (quality.forward_all(model, task, states, offsets, [0, 1, 2], goal, precision=p) for p in ("fp32", "bf16"))
    assert out["final"].dtype == torch.float32 and {str(q.dtype) for q in out["q"]} == {"float32"}  # back in fp32
    assert out["reward"] != ref["reward"] and torch.allclose(torch.tensor(out["reward"]), torch.tensor(ref["reward"]), atol=0.05)


def test_the_lm_reference_over_trunk_states_equals_the_whole_lm_on_token_ids():
    task, _, _ = _tiny_task("gsm8k_perturb")
    torch.manual_seed(0)
    lm = quality_lm.load_lm("tiny")
    seqs = task.seqs[:7]  # lengths 10-23: batches of 3 are right-padded
    # the input of decoder layer 1, from the whole LM: hidden_states[1]
    states = torch.cat([lm(torch.tensor([s.ids]), output_hidden_states=True).hidden_states[1][0] for s in seqs]).detach()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor([len(s.ids) for s in seqs]).cumsum(0)])
    want = []
    for s in seqs:  # log p of each completion token, from the whole LM on the ids
        logp = torch.log_softmax(lm(torch.tensor([s.ids])).logits[0], -1)
        want.append(torch.stack([logp[t - 1, s.ids[t]] for t in range(s.start, len(s.ids))]))
    top = quality_lm.top_lm(lm, 1)
    got = quality_lm.token_logprobs(top, lambda idx: quality.features(states, offsets, task, idx, torch.device("cpu")), task, list(range(7)), batch=3)
    assert [len(g) for g in got] == [len(s.ids) - s.start for s in seqs]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.detach(), atol=1e-5, rtol=1e-5)


def test_the_lm_reference_scores_a_completion_by_its_mean_token_log_probability():
    seqs = [Seq([1] * 6, 2, "q0", True), Seq([1] * 6, 2, "q0", False, error=1),
            Seq([1] * 6, 2, "q1", True), Seq([1] * 6, 2, "q1", False, error=0)]
    task = Task("gsm8k_perturb", seqs, [(0, 1), (2, 3)])
    traces = {0: torch.tensor([-1.0, -1.0, -1.0, -1.0]), 1: torch.tensor([-1.0, -5.0, -1.0, -1.0]),  # mean -2 < -1
              2: torch.tensor([-3.0, -3.0, -3.0, -3.0]), 3: torch.tensor([-1.0, -1.0, -1.0, -2.0])}  # mean -1.25 > -3
    m = quality_lm.lm_metrics(traces, task, task.pairs, [0, 1, 2, 3], (0.25, 1.0))
    assert m["pairwise_accuracy"] == 0.5
    # the first token alone: chosen -1, -3 against rejected -1, -1: two ties (half each) in four comparisons
    assert m["prefix_auroc_q"]["0.25"] == 0.25
    assert m["prefix_auroc_q"]["1.0"] == m["auroc"] == 0.5  # means: chosen -1, -3 against rejected -2, -1.25
    assert m["localization"]["n_with_first_error"] == 2


def test_a_quality_run_of_the_lm_reference_trains_nothing_and_reports_localization(monkeypatch):
    task, states, offsets = _tiny_task("gsm8k_perturb")
    args = _tiny_configs(monkeypatch)
    row = quality.run(task, states, offsets, args, "lm", 0)
    assert row["setting"] == "lm" and row["steps"] == 0 and row["final_loss"] is None
    assert row["localization"]["n_with_first_error"] == row["eval_pairs"] > 0
    cells = {h: get(row) for h, get in columns("gsm8k_perturb")[1:]}
    assert cells["BT loss (last 20 steps)"] != cells["BT loss (last 20 steps)"]  # no loss: NaN, shown "-"


def test_the_table_keeps_runs_of_another_task_size_cut_learning_rate_or_length_apart(tmp_path, capsys):
    def row(seed, lr, pairs, acc):
        return {"task": "hh", "setting": "bt", "seed": seed, "lr": lr, "steps": 50, "pairs": pairs, "cut": 28,
                "pairwise_accuracy": acc, "auroc": acc}

    rows = [row(0, 1e-4, 100, 0.6), row(1, 1e-4, 100, 0.8), row(0, 2e-5, 100, 0.1), row(0, 1e-4, 300, 0.9),
            {**row(0, 1e-4, 100, 0.3), "steps": 99}, {**row(0, None, 100, 0.5), "setting": "lm"}, {**row(2, 1e-4, 100, 0.2), "cut": 26},
            {**row(1, 1e-4, 100, 0.4), "precision": "bf16"}, {**row(0, 1e-4, 100, 0.6), "precision": "fp32"}]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print_table(path)
    out = capsys.readouterr().out
    assert "hh (100 pairs, --cut 28)" in out and "hh (300 pairs, --cut 28)" in out and "hh (100 pairs, --cut 26)" in out
    assert "| bt, lr 0.0001, 50 steps | 3 | 0.667 ± 0.115 |" in out  # three seeds at one size, cut, rate, length, fp32
    assert "| bt, lr 0.0001, 50 steps, bf16 | 1 | 0.400 ± 0.000 |" in out
    assert "| bt, lr 0.0001, 50 steps | 1 | 0.200 ± 0.000 |" in out  # seed 2 at cut 26: a table of its own
    assert "| bt, lr 2e-05, 50 steps | 1 | 0.100 ± 0.000 |" in out and "| lm | 1 | 0.500 ± 0.000 |" in out
    assert "| bt, lr 0.0001, 99 steps | 1 | 0.300 ± 0.000 |" in out


def test_the_table_pairs_each_setting_with_bt_trained_alike_seed_by_seed(tmp_path, capsys):
    def row(setting, seed, acc, steps=50):
        return {"task": "hh", "setting": setting, "seed": seed, "lr": 1e-4, "steps": steps, "pairs": 100, "cut": 28,
                "pairwise_accuracy": acc, "auroc": 0.5}

    rows = [row("bt", 0, 0.6), row("bt", 1, 0.7), row("paper", 1, 0.65), row("paper", 0, 0.7), row("paper", 2, 0.9),
            row("bt", 2, 0.1, steps=99), {**row("lm", 0, 0.8), "lr": None}]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print_table(path)
    lines = [line for line in capsys.readouterr().out.splitlines() if "− bt" in line]
    # seed 2 has no bt at 50 steps (its bt trained 99); lm trains nothing to pair
    assert lines == ["  paper, lr 0.0001, 50 steps − bt, seeds 0, 1: pairwise acc +0.100, -0.050; AUROC (reward) +0.000, +0.000"]


def test_a_batch_is_built_on_the_runs_device_with_explicit_dtypes():
    task, states, offsets = _tiny_task("gsm8k_perturb")
    emb, mask, start, end = quality.features(states, offsets, task, [0, 3, 5], torch.device("meta"))
    assert {t.device.type for t in (emb, mask, start, end)} == {"meta"}  # the cache stays on the host, the batch moves
    assert (emb.dtype, mask.dtype, start.dtype, end.dtype) == (torch.float32, torch.long, torch.long, torch.long)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit, match="torch sees no GPU"):
        quality.main(["--task", "gsm8k_perturb", "--device", "cuda"])
