"""ZeRO-3 with the parameter release that large models get: every forward all-gathers its parameters,
so ranks must run the same number of forwards. 33 eval pairs and 65 goal-state pairs on 2 workers
give the ranks shards of different sizes (17/16, 33/32) and, at a batch of 16, different batch counts;
before the shards were padded this run died at its first eval with gloo `Received data size doesn't match`
(on NCCL: a hang). The run must finish, and its sharded metrics must equal one process's on the same data.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from goalrm.config import load_config
from goalrm.data.load import load_tokenized
from goalrm.evaluate import goal_and_reward_stats, goal_and_reward_summary, evaluate_pairs, summarize
from goalrm.export import load_reward_model
from goalrm.train.deepspeed_config import FORCE_PARAM_RELEASE

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)  # a collective mismatch may hang instead of failing
def test_uneven_shards_finish_and_match_one_process(ray_session, tmp_path):
    from goalrm.train.trainer import train

    (tmp_path / "ds.json").write_text(json.dumps(FORCE_PARAM_RELEASE))
    cfg = load_config(None, {
        "data": {"synthetic_train_size": 512, "synthetic_eval_size": 33, "goal_state_pairs": 65},
        "train": {
            "num_workers": 2, "zero_stage": 3, "max_steps": 20, "eval_every": 10, "log_every": 10,
            "eval_batch_size": 16, "micro_batch_size": 8, "deepspeed_config": str(tmp_path / "ds.json"),
        },
    })
    result = train(cfg, str(tmp_path / "run"))
    final = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")][-1]
    assert final["step"] == 20 and final["eval_n_pairs"] == 33  # every pair once, no padding counted

    # one process, the exported weights (gathered from the shards), the same 33 pairs
    model, tok, goal, meta = load_reward_model(result.model_dir)
    pairs, _, _ = load_tokenized("synthetic", "eval", cfg.data, tok)
    alone = summarize(evaluate_pairs(model, pairs, tok.pad_token_id, 16, None))
    for k in ("accuracy", "auroc", "reward_margin"):
        assert final[f"eval_{k}"] == pytest.approx(alone[k], abs=1e-5), k
    # the goal state and reward statistics: the first 65 training pairs, each once
    train_pairs, _, _ = load_tokenized("synthetic", "train", cfg.data, tok)
    want_goal, want_mean, want_std = goal_and_reward_summary(*goal_and_reward_stats(model, train_pairs[:65], tok.pad_token_id, 16))
    assert torch.allclose(goal, want_goal, atol=1e-5)
    assert meta["reward_mean"] == pytest.approx(want_mean, abs=1e-5) and meta["reward_std"] == pytest.approx(want_std, abs=1e-5)
    assert meta["reward_std"] > 1e-4  # rewards that differ, or the comparison says nothing
    assert load_file(os.path.join(result.model_dir, "model.safetensors"))["score.weight"].dtype == torch.float32
