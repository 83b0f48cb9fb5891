"""Ray Tune sweeps over any config key: `goalrm tune` and `run_sweep` / `resume_sweep`.

The sweep functions are imported on first use, so that `goalrm.tune.space` (checking a sweep file)
does not import Ray."""

__all__ = ["resume_sweep", "run_sweep"]


def __getattr__(name: str):
    if name in __all__:
        from goalrm.tune import sweep

        return getattr(sweep, name)
    raise AttributeError(f"module 'goalrm.tune' has no attribute {name!r}")
