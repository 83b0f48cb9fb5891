"""ASHA whose rung results survive `goalrm tune --resume`.

Ray Tune does not save the scheduler with the experiment: `Tuner.restore` rebuilds it from the copy
pickled when the sweep started (ray-project/ray#30838), so every score recorded at the rungs is lost
and a resumed sweep stops fewer trials than an uninterrupted one. This one writes its rungs to a JSON
file beside the sweep after each result, and reads them back on its first use after a restore.
"""

import json
import os

from ray.tune.schedulers import ASHAScheduler

from goalrm.atomic import write_json


class ResumableASHA(ASHAScheduler):
    def __init__(self, state_file: str, **kwargs):
        super().__init__(**kwargs)
        self.state_file = state_file
        self._loaded = False  # False again in the copy that Tuner.restore unpickles

    def on_trial_add(self, tune_controller, trial):
        self._load()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def _save(self) -> None:
        # each bracket's rungs as [milestone, {trial id: score}]
        rungs = [[[milestone, {t: float(v) for t, v in recorded.items()}] for milestone, recorded in b._rungs] for b in self._brackets]
        write_json(self.state_file, {"rungs": rungs, "num_stopped": self._num_stopped})

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not os.path.exists(self.state_file):
            return
        with open(self.state_file) as f:
            state = json.load(f)
        if len(state["rungs"]) != len(self._brackets):
            raise ValueError(f"{self.state_file}: {len(state['rungs'])} brackets saved, the sweep has {len(self._brackets)}")
        for bracket, rungs in zip(self._brackets, state["rungs"]):
            bracket._rungs = [(milestone, dict(recorded)) for milestone, recorded in rungs]
        self._num_stopped = state["num_stopped"]
