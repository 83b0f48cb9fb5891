"""What a trial's TorchTrainer tells Tune."""

from ray.tune.integration.ray_train import TuneReportCallback


class EvalReportCallback(TuneReportCallback):
    """Forwards the eval reports to Tune, with the checkpoint saved at the same step when there is one.

    Tune rejects a result without the sweep's metric, and the training loop's in-between reports carry
    only losses and throughput; a checkpoint saved between evals (train.checkpoint_every) stays with
    the trial's own run.
    """

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def after_report(self, run_context, metrics, checkpoint):
        if "eval_accuracy" not in metrics[0]:
            return
        if self.metric not in metrics[0]:
            known = ", ".join(sorted(k for k in metrics[0] if isinstance(metrics[0][k], (int, float))))
            raise ValueError(f"tune.metric {self.metric!r} is not in the eval report; it has: {known}")
        super().after_report(run_context, metrics, checkpoint)
