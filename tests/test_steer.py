import json
import statistics
from functools import partial

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from goalrm.cli import main
from goalrm.config import ConfigError
from goalrm.data.errors import BadRowError
from goalrm.export import load_goal, load_reward_model, save_reward_model
from goalrm.model import HeadConfig, build_model, load_tokenizer
from goalrm.steer import SteerSettings, decode, decode_all, final_q, load_policy, prompt_ids
from goalrm.steer_cli import read_prompts, run_steer
from goalrm.tiny import tiny_config, tiny_tokenizer

PROMPTS = [f"Q{i}: {i} plus {i % 7} is\n" for i in range(24)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rm():
    torch.manual_seed(1)
    tok = tiny_tokenizer()
    return build_model("tiny", tokenizer=tok).eval(), tok, torch.randn(128)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, rm):
    """An exported reward model and a saved tiny random policy, as the CLI loads them."""
    root = tmp_path_factory.mktemp("steer")
    model, tok, goal = rm
    save_reward_model(model, tok, str(root / "rm"), goal_state=goal)
    torch.manual_seed(2)
    AutoModelForCausalLM.from_config(tiny_config()).save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    return root


def test_steering_raises_final_q_over_plain_sampling(rm):
    model, tok, goal = rm
    policy, ptok = load_policy("tiny")
    score = partial(final_q, model, tok, goal)
    settings = SteerSettings(candidates=6, step_tokens=4, max_new_tokens=8, seed=0)
    rows = list(decode_all(policy, ptok, score, PROMPTS, ("steer", "sample"), settings))
    steer = [r.final_q for r in rows if r.mode == "steer"]
    sample = [r.final_q for r in rows if r.mode == "sample"]
    diff = [a - b for a, b in zip(steer, sample)]
    mean, se = statistics.fmean(diff), statistics.stdev(diff) / len(diff) ** 0.5
    wins = sum(d > 0 for d in diff)
    # a sign test: 19 or more wins of 24 has p < 0.004 under "steering does nothing"
    assert wins >= 19, diff
    assert mean > 4 * se, (mean, se)


def test_each_step_keeps_the_best_candidate_and_traces_its_q(rm):
    model, tok, goal = rm
    policy, ptok = load_policy("tiny")
    scored = []

    def score(texts):
        q = final_q(model, tok, goal, texts)
        scored.append(q)
        return q

    torch.manual_seed(0)
    d = decode(policy, ptok, score, PROMPTS[0], "steer", SteerSettings(candidates=5, step_tokens=3, max_new_tokens=7))
    assert all(len(q) == 5 for q in scored)
    assert d.q_trace == pytest.approx([float(q.max()) for q in scored])
    assert d.final_q == pytest.approx(float(final_q(model, tok, goal, [d.prompt + d.text])[0]), abs=1e-5)
    assert d.new_tokens <= 7 and (d.stopped == "eos" or d.new_tokens == 7)
    if d.stopped == "length":
        assert len(d.q_trace) == 3  # chunks of 3, 3 and 1 tokens


def test_greedy_is_deterministic_and_prompt_has_no_trailing_eos(rm):
    model, tok, goal = rm
    policy, ptok = load_policy("tiny")
    assert prompt_ids(ptok, "abc")[-1] != ptok.eos_token_id
    score = partial(final_q, model, tok, goal)
    settings = SteerSettings(step_tokens=4, max_new_tokens=8)
    a = [decode(policy, ptok, score, p, "greedy", settings) for p in PROMPTS[:2]]
    torch.manual_seed(123)
    b = [decode(policy, ptok, score, p, "greedy", settings) for p in PROMPTS[:2]]
    assert [x.text for x in a] == [x.text for x in b]


def test_settings_and_modes_are_validated():
    with pytest.raises(ConfigError, match="candidates must be >= 1"):
        SteerSettings(candidates=0)
    with pytest.raises(ConfigError, match="mode must be one of"):
        decode(None, None, None, "p", "beam", SteerSettings())


def test_goal_file_is_checked(tmp_path):
    save_file({"goal": torch.zeros(7)}, str(tmp_path / "g.safetensors"))
    with pytest.raises(ConfigError, match=r"shape \[7\], but the model's representations have size 128"):
        load_goal(str(tmp_path / "g.safetensors"), None, 128)
    save_file({"g": torch.zeros(128)}, str(tmp_path / "h.safetensors"))
    with pytest.raises(ConfigError, match="no tensor named 'goal'"):
        load_goal(str(tmp_path / "h.safetensors"), None, 128)
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        (tmp_path / "x.safetensors").write_text("not safetensors")
        load_goal(str(tmp_path / "x.safetensors"), None, 128)
    with pytest.raises(ConfigError, match="no goal_state.safetensors; pass --goal"):
        load_goal(None, None, 128)
    assert load_goal(str(tmp_path / "g.safetensors"), torch.ones(128), 7).shape == (7,)  # --goal wins over the export's
    assert torch.equal(load_goal(None, torch.ones(7, dtype=torch.bfloat16), 7), torch.ones(7))  # float32


def test_goal_of_projection_size_steers(tmp_path):
    """A model with a projection head points Q-values at a goal of projection_dim, not hidden size."""
    tok = load_tokenizer("tiny")
    rm = build_model("tiny", HeadConfig(projection_dim=16), tok)
    save_reward_model(rm, tok, str(tmp_path / "rm"), goal_state=torch.randn(16))
    save_file({"goal": torch.randn(16)}, str(tmp_path / "goal.safetensors"))
    (tmp_path / "p.txt").write_text("Ann has 3 pens.\n")
    settings = SteerSettings(candidates=2, step_tokens=2, max_new_tokens=2)
    rows = run_steer("tiny", str(tmp_path / "rm"), str(tmp_path / "p.txt"), settings, ("steer",), str(tmp_path / "goal.safetensors"))
    assert len(rows) == 1 and -1 <= rows[0]["final_q"] <= 1
    save_file({"goal": torch.randn(128)}, str(tmp_path / "hidden.safetensors"))  # hidden size: the wrong space
    with pytest.raises(ConfigError, match="representations have size 16"):
        run_steer("tiny", str(tmp_path / "rm"), str(tmp_path / "p.txt"), settings, ("steer",), str(tmp_path / "hidden.safetensors"))


def test_read_prompts_jsonl_text_and_errors(tmp_path):
    (tmp_path / "p.txt").write_text("first\n\nsecond\n")
    assert read_prompts(str(tmp_path / "p.txt")) == ["first", "second"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b", "x": 1}\n')
    assert read_prompts(str(tmp_path / "p.jsonl")) == ["a", "b"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"question": "b"}\n')
    with pytest.raises(BadRowError, match=r"bad.jsonl:2: field 'prompt'"):
        read_prompts(str(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(BadRowError, match=r"broken.jsonl:2: malformed JSON"):
        read_prompts(str(tmp_path / "broken.jsonl"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(BadRowError, match="no prompts"):
        read_prompts(str(tmp_path / "empty.txt"))


def test_cli_writes_jsonl_per_prompt_and_mode_with_goal_override(dirs, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]))
    goal = torch.randn(128)
    save_file({"goal": goal}, str(tmp_path / "goal.safetensors"))
    out = tmp_path / "out" / "steer.jsonl"
    argv = ["steer", "--policy", str(dirs / "policy"), "--rm", str(dirs / "rm"), "--prompts", str(prompts)]
    argv += ["--candidates", "3", "--step-tokens", "4", "--max-new-tokens", "8", "--goal", str(tmp_path / "goal.safetensors")]
    assert main(argv + ["--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["mode"]) for r in rows] == [(p, m) for p in PROMPTS[:3] for m in ("steer", "sample", "greedy")]
    assert all(len(r["q_trace"]) >= 1 for r in rows)
    # the recorded Q is the Q of prompt + text toward the --goal tensor, not the export's goal
    model, tok, _, _ = load_reward_model(str(dirs / "rm"))
    recomputed = final_q(model, tok, goal, [r["prompt"] + r["text"] for r in rows])
    assert recomputed.tolist() == pytest.approx([r["final_q"] for r in rows], abs=1e-5)
    summary = capsys.readouterr().out
    assert "mean final Q" in summary and "steer" in summary and "greedy" in summary


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--candidates", "0"], "candidates must be >= 1"),
        (["--modes", "steer,beam"], "--modes: expected"),
        (["--goal", "missing.safetensors"], "--goal missing.safetensors"),
    ],
)
def test_cli_bad_options_exit_2(dirs, tmp_path, capsys, extra, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    argv = ["steer", "--policy", "tiny", "--rm", str(dirs / "rm"), "--prompts", str(prompts)]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_bad_prompts_file_exit_2(dirs, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": 3}\n')
    assert main(["steer", "--policy", "tiny", "--rm", str(dirs / "rm"), "--prompts", str(prompts)]) == 2
    assert f"{prompts}:1: field 'prompt'" in capsys.readouterr().err
