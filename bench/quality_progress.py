"""A quality run's progress, saved at each point of its learning curve, so that an interrupted run (a
killed job, a machine given back) continues from its last point instead of starting over: an hour-long
run on the CPU loses at most `train.eval_every` steps. A stop asked for (SIGTERM, as `kill` or a
scheduler sends it, or Ctrl-C) saves the run at the step it is on and loses nothing.

One file per run, named by a hash of everything that defines the run (task and its size, setting,
seed, cut, held-out share and the whole config), so a changed run never continues another's progress.
The file is removed once the run's row is recorded."""

import hashlib
import json
import signal
import threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from goalrm.atomic import write_atomic


def progress_name(*defining) -> str:
    return hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:16] + ".pt"


def progress_file(folder: Path | None, task, setting: str, seed: int, cut: int, eval_fraction: float, cfg) -> Path | None:
    if folder is None:
        return None
    return Path(folder) / progress_name(task.name, len(task.pairs), setting, seed, cut, eval_fraction, asdict(cfg))


def save_progress(path: Path, step: int, model, opt, sched, gen, losses: list, curve: list, seconds: float) -> None:
    state = {"step": step, "seconds": seconds, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(), "losses": losses, "curve": curve}
    write_atomic(str(path), lambda tmp: torch.save(state, tmp))


def load_progress(path: Path | None, model, opt, sched, gen) -> tuple[int, list, list, float]:
    """Restore a saved run's weights, optimizer, schedule and sampling generator; returns
    (steps done, per-step losses, curve, seconds spent on them), or (0, [], [], 0.0) when there is
    nothing to continue."""
    if path is None or not path.exists():
        return 0, [], [], 0.0
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])  # moves the moments to the parameters' device
    sched.load_state_dict(state["sched"])
    gen.set_state(state["gen"])
    # files saved before "seconds" was kept count from 0
    return state["step"], state["losses"], [tuple(p) for p in state["curve"]], state.get("seconds", 0.0)


@contextmanager
def stop_requests():
    """While the body runs, SIGTERM and SIGINT ask it to stop instead of killing it: yields a list that
    a signal appends its number to, for the loop to save and stop at the end of its step. A second
    signal stops at once (the step, or the held-out pass, under way is lost)."""
    asked: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread can have handlers
        yield asked
        return

    def ask(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        print(f"{signal.Signals(signum).name}: stopping after this step, saved so that the same command continues "
              "(again to stop at once)", flush=True)

    previous = {s: signal.signal(s, ask) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield asked
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
