"""A sweep on the console: one line per trial that starts, finishes or fails, under a progress bar of
trials; Tune's own status tables come back with --verbose."""

from ray.tune import Callback

from goalrm.console import Bar


class TrialLines(Callback):
    def __init__(self, keys: list[str], metric: str):
        self.keys, self.metric = keys, metric
        self.bar, self.done = None, 0

    def setup(self, **info):
        self.bar = Bar(None, "trial")

    def _name(self, trial) -> str:
        values = "  ".join(f"{k}={trial.config.get(k)}" for k in self.keys)
        return f"trial {trial.trial_id}  {values}"

    def on_trial_start(self, iteration, trials, trial, **info):
        self.bar.write(f"{self._name(trial)}: started")

    def on_trial_complete(self, iteration, trials, trial, **info):
        value = (trial.last_result or {}).get(self.metric)
        shown = "n/a" if value is None else f"{value:.4f}"
        step = (trial.last_result or {}).get("step", "?")
        self._finished(f"{self._name(trial)}: done at step {step}, {self.metric} {shown}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(f"{self._name(trial)}: failed (see the error column of results.csv)")

    def _finished(self, line: str) -> None:
        self.done += 1
        self.bar.update_to(self.done)
        self.bar.write(line)

    def on_experiment_end(self, trials, **info):
        self.bar.close()
