"""`goalrm serve` (Ray Serve, batching across requests) against a one-process baseline that runs one
padded forward per request (bench/serve_baseline.py, OpenRLHF serve_rm's style), side by side:
both servers up, the same requests, rounds alternating between them.

Load: CLIENTS concurrent clients on 127.0.0.1, each sending REQUESTS_PER_CLIENT requests one after
another, then stopping. A request is one prompt with 1-8 completions of varied length (prompts of
--prompt-chars characters (default 40-400), completions log-normal around --median-chars; sequences over 1,000 characters
are left out, so neither server truncates), sent as OpenRLHF does: POST /get_reward
{"query": [prompt + completion, ...], "prompts": [...]}. The model is an export of the tiny preset
or the SmolLM2-135M shape (random weights) with the byte-level tokenizer.

    python bench/serve_load.py --shape tiny [--clients 32] [--requests-per-client 8] [--rounds 2]
"""

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import aiohttp

from score_throughput import build, samples  # bench/, on the path when a bench script runs
from shapes import SHAPES

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RAY_WORKER_NICENESS = 15  # Ray's default worker_niceness


def workload(clients: int, per_client: int, median_chars: int, prompt_chars: tuple[int, int], seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    rows = [r for r in samples(4000, seed, median_chars, prompt_chars) if len(r["prompt"]) + len(r["completion"]) < 1000]
    out = []
    for _ in range(clients):
        reqs = []
        for _ in range(per_client):
            prompt = rng.choice(rows)["prompt"]
            completions = [rng.choice(rows)["completion"] for _ in range(rng.randint(1, 8))]
            reqs.append({"query": [prompt + c for c in completions], "prompts": [prompt] * len(completions)})
        out.append(reqs)
    return out


async def run_load(url: str, load: list[list[dict]]) -> dict:
    """Every client's requests, in order; latencies per request and the answers, by (client, i)."""
    latencies, answers = [], {}

    async def client(session, c, reqs):
        for i, body in enumerate(reqs):
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body) as r:
                    payload = await r.json()
            except aiohttp.ClientError as e:
                raise RuntimeError(f"{url}: client {c}, request {i}: {e!r}") from None
            if r.status != 200 or len(payload.get("rewards", ())) != len(body["query"]):
                raise RuntimeError(f"{url}: HTTP {r.status}: {str(payload)[:300]}")
            latencies.append(time.perf_counter() - t0)
            answers[(c, i)] = payload["rewards"]

    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, c, reqs) for c, reqs in enumerate(load)))
        wall = time.perf_counter() - t0
    n_req = sum(len(r) for r in load)
    n_comp = sum(len(b["query"]) for r in load for b in r)
    lat = sorted(latencies)
    return {
        "seconds": wall,
        "requests_per_s": n_req / wall,
        "completions_per_s": n_comp / wall,
        "p50_s": statistics.median(lat),
        "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "answers": answers,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc, log: str, timeout_s: float = 600) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)


def start_goalrm(model_dir: str, tmp: str, args) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    config = {"max_batch_tokens": args.max_batch_tokens, "micro_batch_tokens": args.micro_batch_tokens,
              "batch_wait_timeout_s": args.batch_wait_s, "torch_threads": args.threads,
              "max_items_per_request": 8, "max_tokens_per_item": 1024, "max_ongoing_requests": 256, "num_replicas": args.replicas}  # fmt: skip
    with open(os.path.join(tmp, "serve.yaml"), "w") as f:
        f.writelines(f"{k}: {v}\n" for k, v in config.items())
    env = {**os.environ, "GOALRM_RAY_TMP": os.path.join(tmp, "ray"), "RAY_AUTH_MODE": "disabled"}
    log = os.path.join(tmp, "goalrm_serve.log")
    cmd = [sys.executable, "-m", "goalrm.cli", "serve", "--model", model_dir, "--config", os.path.join(tmp, "serve.yaml"), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log


def start_baseline(model_dir: str, tmp: str, args) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    log = os.path.join(tmp, "baseline.log")
    cmd = [sys.executable, os.path.join(BENCH, "serve_baseline.py"), "--model", model_dir, "--port", str(port), "--threads", str(args.threads)]
    # Ray runs its workers (Serve's proxy and replicas among them) at nice 15; the baseline gets the
    # same, or on a shared machine it would take CPU from goalrm's replica instead of from other jobs
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(RAY_WORKER_NICENESS))
    return proc, f"http://127.0.0.1:{port}", log


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="tiny", choices=list(SHAPES))
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests-per-client", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--median-chars", type=int, default=150, help="completions' median length")
    p.add_argument("--prompt-chars", type=int, nargs=2, default=(40, 400), metavar=("MIN", "MAX"), help="prompts' length range")
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--micro-batch-tokens", type=int, default=2048)
    p.add_argument("--batch-wait-s", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1, help="torch threads of each server (of each goalrm replica)")
    p.add_argument("--replicas", type=int, default=1, help="goalrm serve replicas, one CPU each")
    p.add_argument("--output", help="write the results as JSON here")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="gsb-")  # short: Ray's socket paths under it must stay under 107 characters
    model_dir = os.path.join(tmp, "model")
    build(args.shape, "tiny", model_dir)  # the byte-level tokenizer, as this benchmark has always used
    load = workload(args.clients, args.requests_per_client, args.median_chars, args.prompt_chars)
    warmup = workload(args.clients, 1, args.median_chars, args.prompt_chars, seed=1)
    n_comp = sum(len(b["query"]) for r in load for b in r)
    print(f"{machine()}; load average {os.getloadavg()[0]:.1f}; {args.shape}; {args.clients} clients x {args.requests_per_client} requests, "
          f"{n_comp} completions", flush=True)  # fmt: skip
    servers = {}
    try:
        for name, start in (("baseline", start_baseline), ("goalrm", start_goalrm)):
            proc, url, log = start(model_dir, tmp, args)
            servers[name] = (proc, url)
            _wait_ready(url, proc, log)
            asyncio.run(run_load(url + "/get_reward", warmup))
        results = {"baseline": [], "goalrm": []}
        for r in range(args.rounds):
            for name in ("baseline", "goalrm") if r % 2 == 0 else ("goalrm", "baseline"):
                res = asyncio.run(run_load(servers[name][1] + "/get_reward", load))
                results[name].append(res)
                print(f"round {r + 1} {name:8s}: {res['requests_per_s']:7.2f} req/s  {res['completions_per_s']:8.2f} completions/s  "
                      f"p50 {res['p50_s'] * 1000:8.0f} ms  p99 {res['p99_s'] * 1000:8.0f} ms  ({res['seconds']:.1f} s)", flush=True)  # fmt: skip
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=120)
    shutil.rmtree(tmp)  # kept, with the servers' logs, when a run fails
    base, ours = results["baseline"][-1]["answers"], results["goalrm"][-1]["answers"]
    diff = max(abs(a - b) for k in base for a, b in zip(base[k], ours[k]))
    ratio = [g["completions_per_s"] / b["completions_per_s"] for g, b in zip(results["goalrm"], results["baseline"])]
    p99 = [g["p99_s"] / b["p99_s"] for g, b in zip(results["goalrm"], results["baseline"])]
    print(f"completions/s goalrm / baseline per round: {', '.join(f'{x:.2f}' for x in ratio)} (median {statistics.median(ratio):.2f}); "
          f"p99 goalrm / baseline: {', '.join(f'{x:.2f}' for x in p99)}; max |reward difference| {diff:.1e}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    if args.output:
        summary = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "args": vars(args),
            "completions": n_comp,
            "rounds": {k: [{m: v for m, v in res.items() if m != "answers"} for res in rs] for k, rs in results.items()},
            "completions_ratio": ratio,
            "p99_ratio": p99,
            "max_reward_difference": diff,
        }
        with open(args.output, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
