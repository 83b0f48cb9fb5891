"""Ray Jobs end to end: a real local head (`ray start --head`), a train job sent with `ray job submit` and a
broken-config job sent with the Python client. (`ray_jobs/score.py` and `serve.py` share the train job's
entry, `goalrm.cli.job_main`; goalrm score on a cluster it joins is in tests/test_two_nodes.py.)"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
JOB_TIMEOUT_S = 420


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A head on free ports in its own process group; the whole group is killed at the end, pass or fail."""
    gcs, dash, client, nm, om, agent, agent_grpc, metrics, rt_env = _free_ports(9)
    temp_dir = f"/tmp/gr-job-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    cmd = [
        os.path.join(BIN, "ray"), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
        "--dashboard-host", "127.0.0.1", "--port", str(gcs), "--dashboard-port", str(dash),
        "--ray-client-server-port", str(client), "--node-manager-port", str(nm), "--object-manager-port", str(om),
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(rt_env),
        "--temp-dir", temp_dir, "--include-dashboard", "true",
    ]  # fmt: skip
    log = open(tmp_path_factory.mktemp("head") / "ray_start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        client = None
        deadline = time.time() + 120
        while client is None:
            assert proc.poll() is None, f"ray start exited with {proc.returncode}; see {log.name}"
            try:
                client = JobSubmissionClient(address)
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield address, client, env, gcs
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the group that outlived its parent
        except ProcessLookupError:
            pass
        leftovers = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout.split()
        for pid in leftovers:
            os.kill(int(pid), signal.SIGKILL)
        log.close()
        assert not leftovers, f"processes outlived the head: {leftovers}"


def joined_the_head(logs: str, ray_head) -> bool:
    """goalrm's line on joining a cluster names the head's GCS port: the job never started a Ray of its own."""
    return re.search(rf"joined the Ray cluster at [\w.-]+:{ray_head[3]}: ", logs) is not None


def _write_config(path, **train) -> str:
    cfg = {
        "data": {"synthetic_train_size": 512, "synthetic_eval_size": 64, "goal_state_pairs": 64, "max_length": 128},
        "loss": {"contrastive_weight": 0.5},
        "train": {"num_workers": 1, "max_steps": 4, "log_every": 2, "eval_every": 4, "lr": 1e-3, **train},
    }
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def _submit(address: str, env: dict, job_id: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        os.path.join(BIN, "ray"), "job", "submit", "--address", address, "--submission-id", job_id,
        "--", sys.executable, *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)


def _wait(client, job_id: str):
    from ray.job_submission import JobStatus

    deadline = time.time() + JOB_TIMEOUT_S
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, f"job {job_id} still {status}"
        time.sleep(1)
    return status


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs")


def test_train_job_submitted_with_ray_job_submit(ray_head, job_dir):
    from ray.job_submission import JobStatus

    address, client, env, _ = ray_head
    out = job_dir / "run"
    config = _write_config(job_dir / "job.yaml")
    proc = _submit(address, env, "goalrm-train", os.path.join(ROOT, "ray_jobs", "train.py"), "--config", config, "--output-dir", str(out))
    assert _wait(client, "goalrm-train") == JobStatus.SUCCEEDED, client.get_job_logs("goalrm-train")

    logs = client.get_job_logs("goalrm-train")
    assert "goalrm train: model=tiny" in logs
    assert "step     4" in logs and "eval acc" in logs  # progress reaches the job log
    assert "succeeded" in proc.stdout.lower()
    assert os.path.exists(out / "model" / "model.safetensors")
    assert os.path.exists(out / "model" / "goal_state.safetensors")
    assert joined_the_head(logs, ray_head), logs


def test_broken_config_job_fails_with_a_clear_message(ray_head, tmp_path):
    """Sent with the Python client, the other way users submit jobs."""
    from ray.job_submission import JobStatus

    address, client, env, _ = ray_head
    config = tmp_path / "broken.yaml"
    config.write_text("train:\n  max_stepz: 10\n")
    entry = f"{sys.executable} {os.path.join(ROOT, 'ray_jobs', 'train.py')} --config {config} --output-dir {tmp_path / 'x'}"
    assert client.submit_job(entrypoint=entry, submission_id="goalrm-broken") == "goalrm-broken"
    assert _wait(client, "goalrm-broken") == JobStatus.FAILED
    logs = client.get_job_logs("goalrm-broken")
    assert "goalrm: error:" in logs and "max_stepz" in logs, logs
    assert "Traceback" not in logs
