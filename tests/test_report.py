import base64
import html
import json
import re

import pytest
import torch

from goalrm.cli import main
from goalrm.data.errors import BadRowError
from goalrm.export import save_reward_model
from goalrm.model import build_model
from goalrm.report.build import build_report, read_metrics
from goalrm.tiny import tiny_tokenizer

IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
TOKEN = re.compile(r'<span class="tok ([^"]*)" style="background:#[0-9a-f]{6}" title="Q = ([-+0-9.]+)[^"]*">(.*?)</span>', re.S)
HEAT = re.compile(r'<div class="heat">(.*?)</div>', re.S)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run dir laid out as `goalrm train` leaves it: model/ (the export) and metrics.jsonl, plus eval pairs."""
    root = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    save_reward_model(build_model("tiny", tokenizer=tok), tok, str(root / "run" / "model"), goal_state=torch.randn(128))
    rows = []
    for step in range(25, 225, 25):
        row = {"step": step, "loss": 1.4 - step / 1000, "bt_loss": 0.7 - step / 2000, "contrastive_loss": 1.35, "pairs_per_s": 60.0}
        if step % 100 == 0:
            row |= {"eval_accuracy": 0.6 + step / 1000, "eval_auroc": 0.6, "eval_prefix_auroc_0.25": 0.52, "eval_prefix_auroc_1.0": 0.6}
        rows.append(row)
    (root / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "synthetic", "--output", str(root / "pairs.jsonl"), "--n", "12"]) == 0
    return root


def test_report_has_every_part_self_contained(run):
    out = run / "out" / "report.html"
    metrics = build_report(str(run / "run"), str(run / "pairs.jsonl"), str(out), samples=3)
    page = out.read_text()
    assert metrics["n_pairs"] == 12
    for anchor in ("summary", "training", "auroc", "localization", "qvalues"):
        assert f'<section id="{anchor}">' in page
    assert f"<td>accuracy</td><td>{metrics['accuracy']:.3f}</td>" in page
    # the synthetic pairs know their first wrong token: the localization panel has the numbers eval computes
    loc = metrics["localization"]
    assert loc["n_with_first_error"] == 12
    assert f"<td>detected within 4 tokens of the error</td><td>{loc['detect_at_4']:.1%}</td>" in page
    # nothing to fetch: every image inline
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page and "<link" not in page
    images = IMG.findall(page)
    alts = [alt for alt, _ in images]
    assert alts[:5] == ["training curves", "AUROC against prefix", "reward histograms", "error localization", "Q-value colour scale"]
    assert alts[5:] == [f"Q along the completions of pair {i}" for i in (1, 2, 3)]
    for _, data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


def test_heatmaps_show_each_completion_token_and_mark_the_first_error(run):
    out = run / "report.html"
    build_report(str(run / "run"), str(run / "pairs.jsonl"), str(out), samples=3)
    page = out.read_text()
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()][:3]
    heatmaps = HEAT.findall(page)
    assert len(heatmaps) == 6  # chosen and rejected per pair
    for pair, chosen, rejected in zip(pairs, heatmaps[0::2], heatmaps[1::2]):
        for heat, text in ((chosen, pair["chosen"]), (rejected, pair["rejected"])):
            tokens = TOKEN.findall(heat)
            assert "".join(html.unescape(t) for _, _, t in tokens).replace("↵", "") == text + "<eos>"
            assert all(-1.0 <= float(q) <= 1.0 for _, q, _ in tokens)
        marked = [(i, t) for i, (cls, _, t) in enumerate(TOKEN.findall(rejected)) if "first-error" in cls]
        # byte tokens: the marked token is the first wrong character itself
        assert marked == [(pair["rejected_first_error"], pair["rejected"][pair["rejected_first_error"]])]
        same = [i for i, (cls, _, _) in enumerate(TOKEN.findall(chosen)) if "same-position" in cls]
        assert same == [pair["rejected_first_error"]]


def test_report_without_metrics_file_says_so(run, tmp_path):
    save_dir = tmp_path / "run"
    (save_dir / "model").mkdir(parents=True)
    for f in (run / "run" / "model").iterdir():
        (save_dir / "model" / f.name).write_bytes(f.read_bytes())
    build_report(str(save_dir), str(run / "pairs.jsonl"), str(tmp_path / "r.html"), samples=1)
    page = (tmp_path / "r.html").read_text()
    assert "No metrics.jsonl" in page and "training curves" not in page


def test_read_metrics_names_the_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": \n')
    with pytest.raises(BadRowError, match=r"metrics.jsonl:2: malformed JSON"):
        read_metrics(str(path))
    path.write_text('{"loss": 1.0}\n')
    with pytest.raises(BadRowError, match=r"metrics.jsonl:1: field 'step'"):
        read_metrics(str(path))


def test_cli_report(run, tmp_path, capsys):
    out = tmp_path / "cli" / "report.html"
    argv = ["report", "--run", str(run / "run"), "--data", str(run / "pairs.jsonl"), "--output", str(out), "--samples", "2"]
    assert main(argv) == 0
    assert out.exists() and len(HEAT.findall(out.read_text())) == 4
    assert f"report written to {out}" in capsys.readouterr().out
    assert main(["report", "--run", str(tmp_path / "nope"), "--data", "synthetic", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "goalrm: error:" in err and "is not a goalrm export" in err and "Traceback" not in err
