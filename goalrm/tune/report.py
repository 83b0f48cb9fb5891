"""What a trial's TorchTrainer tells Tune."""

from ray.tune.integration.ray_train import TuneReportCallback


class EvalReportCallback(TuneReportCallback):
    """Forwards only the eval reports, the ones with a checkpoint, to Tune.

    Tune rejects a result without the sweep's metric, and the training loop's in-between reports
    carry only losses and throughput.
    """

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def after_report(self, run_context, metrics, checkpoint):
        if checkpoint is None:
            return
        if self.metric not in metrics[0]:
            known = ", ".join(sorted(k for k in metrics[0] if isinstance(metrics[0][k], (int, float))))
            raise ValueError(f"tune.metric {self.metric!r} is not in the eval report; it has: {known}")
        super().after_report(run_context, metrics, checkpoint)
