"""Driver-side reporting: metrics.jsonl and TensorBoard (the driver prints from metrics.jsonl: goalrm/console.py)."""

import json
import os

import ray.train

METRICS_FILE = "metrics.jsonl"
NONFINITE = "nonfinite_loss"  # a report key: the run stopped on a NaN or infinite loss
NODE = "node"  # a report key: the Ray node id of the reporting rank
NODES = "nodes"  # in metrics.jsonl: every rank's node, by rank, on the first report and after a restart that moved one


class MetricsLogger(ray.train.UserCallback):
    """Runs in Ray Train's controller, so workers never write the run's logs themselves."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self._tb = None
        self._nodes = None

    def after_report(self, run_context, metrics, checkpoint):
        m = {k: v for k, v in metrics[0].items() if k != NODE}
        nodes = [w.get(NODE) for w in metrics]
        if NODE in metrics[0] and nodes != self._nodes:
            m[NODES] = self._nodes = nodes
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, METRICS_FILE), "a") as f:
            f.write(json.dumps(m) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if NONFINITE in m:
            return  # the driver raises it (`raise_if_stopped`)
        self._tensorboard(m)

    def _tensorboard(self, m: dict):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.output_dir, "tensorboard"))
        for k, v in m.items():
            if k != "step" and isinstance(v, (int, float)):
                self._tb.add_scalar(k, v, m["step"])
        self._tb.flush()


def raise_if_stopped(output_dir: str) -> None:
    """Raise the reason a run stopped before its last step (a non-finite loss), as its last report says.
    The controller that wrote the report is another process; metrics.jsonl is what it leaves."""
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    if NONFINITE in last:
        raise FloatingPointError(last[NONFINITE])
