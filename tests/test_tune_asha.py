"""ASHA's rung scores outlive a restore: the copy of the scheduler that `Tuner.restore` unpickles (as it was
when the sweep started) reads them back, and stops a trial that the uninterrupted sweep would stop."""

import pickle
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from goalrm.tune.asha import ResumableASHA


def _asha(state_file):
    return ResumableASHA(str(state_file), time_attr="step", metric="loss", mode="min", max_t=20, grace_period=10,
                         reduction_factor=2, stop_last_trials=False)


def _report(asha, trial, step, loss):
    return asha.on_trial_result(None, trial, {"step": step, "loss": loss})


def test_rungs_come_back_after_a_restore(tmp_path):
    state = tmp_path / "asha_rungs.json"
    asha = _asha(state)
    pickled = pickle.dumps(asha)  # what tuner.pkl holds: the scheduler before any trial
    good, bad = SimpleNamespace(trial_id="t0"), SimpleNamespace(trial_id="t1")
    asha.on_trial_add(None, good)
    assert _report(asha, good, 10, 0.7) == TrialScheduler.CONTINUE
    asha.on_trial_complete(None, good, {"step": 20, "loss": 0.6})

    restored = pickle.loads(pickled)  # the sweep was interrupted here and resumed
    restored.on_trial_add(None, bad)
    assert _report(restored, bad, 10, 2.0) == TrialScheduler.STOP  # t0's 0.7 at the rung still counts
    assert restored._num_stopped == 1

    fresh = _asha(tmp_path / "none.json")  # without the saved rungs, the same result passes the rung
    fresh.on_trial_add(None, bad)
    assert _report(fresh, bad, 10, 2.0) == TrialScheduler.CONTINUE
