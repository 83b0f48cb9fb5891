"""Ray Tune sweeps over any config key: `goalrm tune` and `run_sweep` / `resume_sweep`."""

from goalrm.tune.sweep import resume_sweep, run_sweep

__all__ = ["resume_sweep", "run_sweep"]
