"""Free the workers' CPUs of a trial that Tune stopped.

Tune stops a trial (ASHA, Ctrl+C) by ending its process, which takes the trial's Train controller
down with it. Ray keeps a placement group while the job that made it lives, and Train V2's
PlacementGroupCleaner removes a dead controller's group only if the State API answers, which needs
a dashboard; goalrm's local Ray has none. The workers' CPUs would then stay reserved and the next
trials would wait for them forever. So each trial records its worker placement group, and the
sweep removes it once Tune is through with the trial.
"""

import os

import ray
from ray.train.v2._internal.execution.callback import WorkerGroupCallback  # Ray appends such callbacks for workarounds
from ray.tune import Callback

PG_FILE = "placement_groups"  # in the trial dir: hex ids of its worker placement groups, one a line


class RecordPlacementGroup(WorkerGroupCallback):
    """Runs in the trial's Train controller."""

    def __init__(self, trial_dir: str):
        self.path = os.path.join(trial_dir, PG_FILE)

    def after_worker_group_start(self, worker_group):
        pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
        with open(self.path, "a") as f:
            f.write(pg.id.hex() + "\n")


def release(trial_dir: str) -> int:
    """Remove the trial's worker placement groups that still exist; returns how many."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    try:
        with open(os.path.join(trial_dir, PG_FILE)) as f:
            ids = f.read().split()
    except FileNotFoundError:
        return 0
    removed = 0
    for pg in (PlacementGroup(PlacementGroupID.from_hex(i)) for i in ids):
        if placement_group_table(pg).get("state", "REMOVED") != "REMOVED":
            remove_placement_group(pg)
            removed += 1
    return removed


class ReleasePlacementGroups(Callback):
    """Runs in the sweep's driver; trial.path is the trial dir the trial wrote PG_FILE to."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        release(trial.path)

    def on_trial_error(self, iteration, trials, trial, **info):
        release(trial.path)


def release_all(trials_dir: str) -> None:
    """After Tune returns (finished or interrupted) no trial of the sweep runs: free every group left."""
    if ray.is_initialized() and os.path.isdir(trials_dir):
        for entry in os.scandir(trials_dir):
            if entry.is_dir():
                release(entry.path)
