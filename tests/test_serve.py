"""`goalrm serve` end to end: the command on an embedded local Ray with a tiny export, called over
real HTTP. One server for the module (Ray and a replica take seconds to start); the last test
stops it and checks the shutdown."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import requests
import torch

from goalrm.config import ScoreConfig
from goalrm.data.tokenize import tokenize_completion
from goalrm.score.block import score_block
from goalrm.score.io import SCORED, input_files, output_paths, plan_blocks
from goalrm.score.scorer import load_scorer, score_sequences
from goalrm.tiny import tiny_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "test-key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = {"max_items_per_request": 8, "max_tokens_per_item": 200, "max_batch_tokens": 1024, "max_request_bytes": 65536}
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    """`goalrm serve` as a user starts it (default host), with an API key and small limits."""
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "key").write_text(KEY + "\n")
    (tmp / "serve.yaml").write_text("".join(f"{k}: {v}\n" for k, v in {**LIMITS, "torch_threads": 1}.items()))
    port, ray_tmp = _free_port(), f"/tmp/gs-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "GOALRM_RAY_TMP": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "goalrm.cli", "serve", "--model", tiny_export, "--config", str(tmp / "serve.yaml"),
           "--port", str(port), "--api-key-file", str(tmp / "key")]  # fmt: skip
    log_path = tmp / "serve.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + START_TIMEOUT_S
    try:
        while "goalrm serve: http" not in log_path.read_text():
            assert proc.poll() is None, f"goalrm serve exited with {proc.returncode}:\n{log_path.read_text()}"
            assert time.time() < deadline, f"goalrm serve did not start in {START_TIMEOUT_S} s:\n{log_path.read_text()}"
            time.sleep(0.5)
        yield {"url": url, "port": port, "proc": proc, "log": log_path, "ray_tmp": ray_tmp}
    finally:
        if proc.poll() is None:  # a failed test left it running: the whole group goes
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _post(server, endpoint, body, headers=AUTH, **kw):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{server['url']}/{endpoint}", data=data, headers={"Content-Type": "application/json", **headers}, timeout=60, **kw)


ROWS = [
    {"prompt": "Q: 2+3=? ", "completion": "Work: 2+3=5 so 5"},
    {"prompt": "Q: 7-4=? ", "completion": "It is 3, since 7-4=3."},
    {"prompt": "Say hi. ", "completion": "hi there, how are you today?"},
    {"prompt": "Count: ", "completion": "1 2 3 4 5 6 7 8 9 10 11 12"},
    {"prompt": "Q: 9*9=? ", "completion": "81"},
]


def _goalrm_score(tiny_export, tmp_path, threshold):
    """The rows as `goalrm score` writes them: its per-block function, on a JSONL file."""
    tmp_path.mkdir()
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": i, **r}) + "\n" for i, r in enumerate(ROWS)))
    fs, files = input_files(str(data))
    (block,) = plan_blocks(fs, files, 100)
    cfg = ScoreConfig(model=tiny_export, input=str(data), output=str(tmp_path / "out"), threshold=threshold, batch_size=2)
    model, tok, goal, packing = load_scorer(tiny_export)
    score_block(fs, block, model, tok, goal, cfg, cfg.output, packing=packing)
    return pq.read_table(output_paths(cfg.output, block)[SCORED]).sort_by("id").to_pylist()


def test_endpoints_match_goalrm_score(server, tiny_export, tmp_path):
    min_q = sorted(e["min_q"] for e in _goalrm_score(tiny_export, tmp_path / "a", 0.0))
    threshold = (min_q[2] + min_q[3]) / 2  # between the rows' lowest Q-values: some rows kept, some dropped
    expected = _goalrm_score(tiny_export, tmp_path / "b", threshold)
    prompts, completions = [r["prompt"] for r in ROWS], [r["completion"] for r in ROWS]

    r = _post(server, "reward", {"prompts": prompts, "completions": completions})
    assert r.status_code == 200 and set(r.json()) == {"rewards"}
    np.testing.assert_allclose(r.json()["rewards"], [e["reward"] for e in expected], atol=1e-5)
    assert len({round(e["reward"], 4) for e in expected}) == len(ROWS)  # distinct: a mixed-up answer would show

    r = _post(server, "q_values", {"prompts": prompts, "completions": completions, "threshold": threshold})
    assert r.status_code == 200 and r.json()["threshold"] == threshold
    for got, e in zip(r.json()["results"], expected):
        assert set(got) == {"reward", "q_values", "min_q", "first_below", "keep"}
        np.testing.assert_allclose(got["q_values"], e["q_values"], atol=1e-5)
        assert got["reward"] == pytest.approx(e["reward"], abs=1e-5) and got["min_q"] == pytest.approx(e["min_q"], abs=1e-5)
        assert (got["first_below"], got["keep"]) == (e["first_below"], e["keep"])
    assert {e["keep"] for e in expected} == {True, False}  # the threshold splits the rows: both outcomes checked

    queries = [f"<bos>{p}{c}<eos>" for p, c in zip(prompts, completions)]  # decoded with special tokens, as OpenRLHF sends them
    r = _post(server, "get_reward", {"query": queries, "prompts": prompts, "labels": [None] * len(ROWS)})
    assert r.status_code == 200 and r.json()["rewards"] == r.json()["scores"]
    np.testing.assert_allclose(r.json()["rewards"], [e["reward"] for e in expected], atol=1e-5)

    assert requests.get(f"{server['url']}/health", timeout=10).json() == {"status": "ok"}  # no key needed
    info = requests.get(f"{server['url']}/info", headers=AUTH, timeout=10).json()
    assert (info["model"], info["kind"], info["goal_state"], info["goal_dim"], info["dtype"]) == (tiny_export, "goalrm", True, 128, "float32")
    assert {k: info[k] for k in LIMITS if k in info} == {k: v for k, v in LIMITS.items() if k != "max_request_bytes"}


def test_openrlhf_shaped_client(server, tiny_export):
    """What OpenRLHF's remote reward client does: POST {"query", "prompts", "labels"}, raise on an
    HTTP error, read "rewards" (and "scores") into a tensor. It sends no key; here the header is added."""
    tok = tiny_tokenizer()
    prompts, responses = [r["prompt"] for r in ROWS], [r["completion"] for r in ROWS]
    # the query as OpenRLHF builds it: prompt ids (no special tokens added) + generated ids ending in EOS, decoded
    queries = [tok.decode(tok(p, add_special_tokens=False)["input_ids"] + tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
               for p, c in zip(prompts, responses)]  # fmt: skip
    response = requests.post(f"{server['url']}/get_reward", json={"query": queries, "prompts": prompts, "labels": ["x"] * len(ROWS)},
                             headers={"Content-Type": "application/json", **AUTH}, timeout=180)  # fmt: skip
    response.raise_for_status()
    body = response.json()
    assert "rewards" in body
    rewards, scores = torch.tensor(body["rewards"]), torch.tensor(body.get("scores"))
    assert rewards.shape == (len(ROWS),) and torch.equal(rewards, scores)
    plain = _post(server, "reward", {"prompts": prompts, "completions": responses}).json()["rewards"]
    np.testing.assert_allclose(rewards.numpy(), plain, atol=1e-5)
    one = requests.post(f"{server['url']}/get_reward", json={"query": queries[:1], "prompts": prompts[:1], "labels": [None]}, headers=AUTH, timeout=60).json()
    assert torch.tensor([one["rewards"]]).shape == (1, 1)  # OpenRLHF's torch.tensor([reward]) per sample


BAD = [  # endpoint, body, status, field, index, part of the message
    ("reward", b'{"prompts": ["a"], ', 400, None, None, "malformed JSON"),
    ("reward", b'["a"]', 400, None, None, "must be a JSON object"),
    ("reward", {"completions": ["a"]}, 422, "prompts", None, "missing field 'prompts'"),
    ("q_values", {"prompts": ["a", "b"], "completions": ["x"]}, 422, "completions", None, "has 1 items but 'prompts' has 2"),
    ("reward", {"prompts": ["a", "b"], "completions": ["x", 3]}, 422, "completions", 1, "must be a string"),
    ("reward", {"prompts": ["a", "b", "c"], "completions": ["x", "y", ""]}, 422, "completions", 2, "empty completion"),
    ("get_reward", {"query": ["ok", None]}, 422, "query", 1, "must be a string"),
    ("get_reward", {"query": ["<bos>Q: <eos>"], "prompts": ["Q: "]}, 422, "query", 0, "empty completion"),
    ("q_values", {"prompts": ["a"], "completions": ["x"], "threshold": "high"}, 422, "threshold", None, "finite number"),
    ("reward", {"prompts": ["a"] * 9, "completions": ["x"] * 9}, 413, "prompts", None, "over max_items_per_request=8"),
    ("reward", {"prompts": ["a", "b"], "completions": ["x", "y" * 300]}, 413, "completions", 1, "over max_tokens_per_item=200"),
    ("reward", b'{"prompts": ["' + b"a" * 70000 + b'"], "completions": ["x"]}', 413, None, None, "over max_request_bytes=65536"),
]


@pytest.mark.parametrize("endpoint, body, status, field, index, text", BAD)
def test_bad_requests_get_4xx_json_naming_field_and_index(server, endpoint, body, status, field, index, text):
    r = _post(server, endpoint, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert (err["field"], err["index"]) == (field, index) and text in err["error"]
    assert "Traceback" not in r.text


def test_key_required_everywhere_but_health(server):
    body = {"prompts": ["a"], "completions": ["b"]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for endpoint in ("reward", "q_values", "get_reward"):
            r = _post(server, endpoint, body if endpoint != "get_reward" else {"query": ["ab"]}, headers=headers)
            assert r.status_code == 401 and "bearer token" in r.json()["error"]
        assert requests.get(f"{server['url']}/info", headers=headers, timeout=10).status_code == 401
    assert requests.get(f"{server['url']}/health", timeout=10).status_code == 200


def _item(rng, k):
    words = "the of and to a in is that for it as was with".split()
    n = rng.choice([3, 10, 20, 30])  # up to about 175 tokens, under max_tokens_per_item
    return f"Req {k} Q{rng.randint(0, 99)}: ", " ".join(rng.choice(words) for _ in range(n)) + f" #{k}"


def test_concurrent_load_answers_match_requests_and_bad_ones_fail_alone(server, tiny_export):
    """32 clients, 2 requests each, 1-8 completions of varied lengths, every eighth request bad:
    each answer checked against its own request's items, scored here with the same model."""
    rng = random.Random(0)
    requests_ = []
    for k in range(64):
        items = [_item(rng, f"{k}.{j}") for j in range(rng.randint(1, 8))]
        bad = k % 8 == 3
        body = {"prompts": [p for p, _ in items], "completions": ["" if bad and j == 0 else c for j, (_, c) in enumerate(items)]}
        requests_.append(("q_values" if k % 2 else "reward", body, bad))
    model, tok, goal, _ = load_scorer(tiny_export)
    seqs = {(p, c): tokenize_completion(p, c, tok, 200)[:2] for _, body, _ in requests_ for p, c in zip(body["prompts"], body["completions"]) if c}
    keys = list(seqs)
    ref_r, ref_q = score_sequences(model, goal, [seqs[k] for k in keys], tok.pad_token_id, 4096)
    ref = {k: (r, q) for k, r, q in zip(keys, ref_r, ref_q)}
    before = requests.get(f"{server['url']}/info", headers=AUTH, timeout=10).json()["replica_counts"]

    session_per_thread = {}

    def send(req):
        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        endpoint, body, _ = req
        return session.post(f"{server['url']}/{endpoint}", json=body, headers=AUTH, timeout=120)

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, requests_))
    assert len(answers) == len(requests_)
    for (endpoint, body, bad), r in zip(requests_, answers):
        if bad:
            assert (r.status_code, r.json()["field"], r.json()["index"]) == (422, "completions", 0)
            continue
        assert r.status_code == 200, r.text
        got = r.json()["rewards"] if endpoint == "reward" else [x["reward"] for x in r.json()["results"]]
        assert len(got) == len(body["prompts"])
        for j, (p, c) in enumerate(zip(body["prompts"], body["completions"])):
            assert got[j] == pytest.approx(float(ref[(p, c)][0]), abs=1e-5)
            if endpoint == "q_values":
                np.testing.assert_allclose(r.json()["results"][j]["q_values"], ref[(p, c)][1], atol=1e-5)
    after = requests.get(f"{server['url']}/info", headers=AUTH, timeout=10).json()["replica_counts"]
    good_seqs = sum(len(b["prompts"]) for _, b, bad in requests_ if not bad)
    assert after["sequences"] - before["sequences"] == good_seqs  # every good item scored once, no bad one
    # dynamic batching across requests: batches held several requests' chunks
    assert (after["chunks"] - before["chunks"]) > (after["batches"] - before["batches"])


def test_listens_on_loopback_only(server):
    port = server["port"]
    listening = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert listening and all(ip in ("127.0.0.1", "::1") for ip in listening), listening
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")]  # fmt: skip
    for ip in others:  # this host's other addresses: nothing there on the port
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=2).close()


def _ray_processes(ray_tmp):
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(ray_tmp in part for part in p.info["cmdline"] or ()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_zz_clean_shutdown(server):
    """Last in the module: SIGTERM stops the server, its Ray and every process of it, with exit 0."""
    proc, log = server["proc"], server["log"]
    assert _ray_processes(server["ray_tmp"])  # the embedded Ray's processes exist, so the check below means something
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    text = log.read_text()
    assert "goalrm serve: stopped" in text and "Traceback" not in text
    # no progress bars, access lines or Ray's batch-size warning (which counts requests, not tokens) on the console
    assert "Loading weights" not in text and "POST /" not in text and "max_batch_size" not in text
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server["port"]), timeout=2).close()
    deadline = time.time() + 30
    while (left := _ray_processes(server["ray_tmp"])) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, [p.info["cmdline"][:2] for p in left]
