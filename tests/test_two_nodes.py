"""Two nodes on one machine: training and scoring that assume nothing about sharing one node.

`ray.cluster_utils.Cluster` starts a head node with no CPUs (the driver, and Ray Train's controller,
which writes metrics.jsonl) and worker nodes with 1 CPU each, so two workers or scorers of more than
half a CPU each can only run one per node. Their only common ground is what a real cluster shares:
the filesystem paths given in the config.

It proves that
- the two training ranks run on different nodes, as the node ids they report show;
- checkpoints go to `train.storage_path`, a folder apart from OUTPUT_DIR, and hold both ranks' files
  (each rank's RNG state, rank 0's config and HF files);
- after the node of rank 1 is removed mid-run, the run places its workers again, one of them on a
  node that held no rank before (the spare: a third worker node), continues from its last complete
  checkpoint with the losses it had before, and rank 0 exports OUTPUT_DIR/model;
- two scorers run on different nodes (the node ids in the blocks' done markers), and every input
  row is scored exactly once.
"""

import glob
import json
import os
import threading
import time

import pyarrow.parquet as pq
import pytest
import torch

from goalrm.config import ScoreConfig, load_config
from goalrm.train.checkpoint import COMPLETE, CONFIG_FILE, HF_DIR, RUN_NAME

pytestmark = pytest.mark.slow

STEPS = 4
FAULT_STEP = 3  # rank 1 stops after step 3; the last complete checkpoint is step 2's


@pytest.fixture(scope="module")
def cluster():
    """Its own Ray for this module: other modules' `ray_session` has shut its Ray down by now, and
    this one is shut down at the end."""
    import ray
    from ray._common.utils import get_default_ray_temp_dir
    from ray.cluster_utils import Cluster

    from goalrm.env import setup_environment

    ray.shutdown()
    setup_environment()  # before the raylets start: workers inherit their environment (DeepSpeed's op cache)
    # Cluster records the head's address in Ray's default temp dir, which a fresh machine lacks
    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    c = Cluster(initialize_head=True, head_node_args={**_node_args(), "num_cpus": 0, "include_dashboard": False})
    # two nodes for the two ranks and a spare to replace the one removed: Ray adds a node only from the
    # main thread (it installs signal handlers), which is busy with the run by then
    for _ in range(3):
        c.add_node(**_node_args())
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def _node_args() -> dict:
    from goalrm.env import ray_temp_dir

    return {"num_cpus": 1, "temp_dir": ray_temp_dir()}  # a short path: Ray's socket names must fit


def _worker_node_ids(cluster) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


def _metrics(run_dir) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def _remove_node_when_stopped(cluster, run_dir, fault_file) -> tuple[threading.Thread, dict]:
    """Once rank 1 has stopped at the fault and the controller has its step's report: remove rank 1's
    node; every process on it dies with it."""
    seen = {}

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline:
            steps = [m["step"] for m in _metrics(run_dir)]
            if os.path.exists(fault_file) and steps and steps[-1] >= FAULT_STEP:
                with open(fault_file) as f:
                    seen["stopped"] = json.load(f)
                (node,) = [n for n in cluster.worker_nodes if n.node_id == seen["stopped"]["node_id"]]
                cluster.remove_node(node)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, seen


@pytest.mark.timeout(420)
def test_training_spans_two_nodes_and_survives_losing_one(cluster, tmp_path, monkeypatch):
    from goalrm.train.trainer import train

    run_dir, storage = str(tmp_path / "run"), str(tmp_path / "shared")
    cfg = load_config(None, {
        "data": {"synthetic_train_size": 128, "synthetic_eval_size": 32, "goal_state_pairs": 64},
        "train": {"zero_stage": 3, "max_steps": STEPS, "warmup_steps": 1, "eval_every": 2, "log_every": 1,
                  "micro_batch_size": 8, "max_failures": 1, "storage_path": storage},
    })
    fault_file = str(tmp_path / "stopped.json")
    monkeypatch.setenv("GOALRM_FAULT", json.dumps({"at": "step", "step": FAULT_STEP, "rank": 1, "pid_file": fault_file}))
    first_nodes = _worker_node_ids(cluster)
    watcher, seen = _remove_node_when_stopped(cluster, run_dir, fault_file)
    train(cfg, run_dir, ray_address=cluster.address)
    watcher.join(timeout=60)
    stopped = seen["stopped"]  # rank 1's node was removed mid-run

    metrics = _metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 3, 4]  # restarted at the step-2 checkpoint, not at 0
    placed = [m["nodes"] for m in metrics if "nodes" in m]
    assert len(placed) == 2 and "nodes" in metrics[0] and "nodes" in metrics[3]
    before, after = placed
    assert len(set(before)) == 2 and set(before) <= first_nodes
    assert before[1] == stopped["node_id"]  # the node removed is the one rank 1 ran on
    assert stopped["node_id"] not in _worker_node_ids(cluster)
    (spare,) = first_nodes - set(before)
    assert set(after) == {before[0], spare}
    for k in ("loss", "bt_loss", "contrastive_loss"):  # the same step 3 as before the failure
        assert metrics[3][k] == pytest.approx(metrics[2][k], rel=1e-5), k

    assert not os.path.exists(os.path.join(run_dir, RUN_NAME))  # checkpoints only in the storage path
    complete = {json.load(open(p))["step"]: os.path.dirname(p) for p in glob.glob(os.path.join(storage, RUN_NAME, "checkpoint_*", COMPLETE))}
    assert sorted(complete) == [2, 4]
    last = complete[4]
    assert {os.path.basename(p) for p in glob.glob(os.path.join(last, "rng_rank*.pt"))} == {"rng_rank0.pt", "rng_rank1.pt"}
    assert os.path.exists(os.path.join(last, CONFIG_FILE)) and os.path.isdir(os.path.join(last, HF_DIR))
    assert os.path.exists(os.path.join(run_dir, "model", "model.safetensors"))


@pytest.mark.timeout(240)
def test_two_scorers_on_two_nodes_score_every_row_once(cluster, tmp_path):
    import ray.data

    from goalrm.export import save_reward_model
    from goalrm.model import build_model
    from goalrm.score.run import score
    from goalrm.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    model = str(tmp_path / "model")
    save_reward_model(build_model("tiny", tokenizer=tok), tok, model, goal_state=torch.randn(128))
    rows = [{"id": i, "prompt": f"Q{i}: 2+{i}=? ", "completion": "so " + "x" * (3 + i % 7)} for i in range(24)]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"

    ctx = ray.data.DataContext.get_current()
    waited = ctx.wait_for_min_actors_s
    # blocks are dealt only once both scorers are up
    ctx.wait_for_min_actors_s = 120
    try:
        # 0.75 CPU each: two cannot share a 1-CPU node, whatever Ray Data's placement prefers
        cfg = ScoreConfig(model=model, input=str(data), output=str(out), num_scorers=2, cpus_per_scorer=0.75,
                          block_rows=4, batch_size=8)
        s = score(cfg, address=cluster.address, print_summary=False)
    finally:
        ctx.wait_for_min_actors_s = waited

    markers = [json.load(open(p)) for p in glob.glob(str(out / "done" / "*.json"))]
    assert s["blocks"] == s["blocks_this_run"] == len(markers) == 6
    # the forwards ran on the worker nodes. Which scorer ran each is the pipeline's choice: it deals a
    # prepared block to an idle scorer, preferring the one on the block's node, so tiny blocks that
    # arrive one at a time may all go to one of the two
    nodes = {m["node"] for m in markers}
    assert 1 <= len(nodes) <= 2 and nodes <= _worker_node_ids(cluster)
    ids = pq.read_table(out / "scored")["id"].to_pylist()
    assert sorted(ids) == list(range(24))  # every row once, written by tasks on any node
