"""The console is the user's: report lines and one progress line with an ETA. Libraries' chatter that is
known to be harmless is turned off where it is made, unless --verbose; warnings and errors still print."""

import json
import logging
import os
import sys
import threading
import time
import warnings
from contextlib import contextmanager

VERBOSE_ENV = "GOALRM_VERBOSE"  # set by --verbose; Ray processes get it through their config or runtime env
PROGRESS_EVERY_ENV = "GOALRM_PROGRESS_EVERY"  # seconds between progress lines in a log; 0 turns them off


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_libraries() -> None:
    """In this process: transformers' info and progress bars, DeepSpeed's info, Ray Train's per-report
    log lines and known-harmless FutureWarnings, each at its source. A no-op with --verbose."""
    if verbose():
        return
    # read when transformers and huggingface_hub are imported, here or in a process started from here
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars too
    if "transformers" in sys.modules:  # imported already, as in a Ray worker
        import transformers

        transformers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.disable_progress_bar()
    for name in ("DeepSpeed", "ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # modules that log at INFO under their file's name, outside their library's logger: Ray Train's worker
    # context (every report of every rank) and huggingface_hub's state-dict writer (every export)
    for name in ("ray.train.v2._internal.execution.context", "huggingface_hub.serialization._torch"):
        if (module := sys.modules.get(name)) is not None:
            logging.getLogger(module.__file__).setLevel(logging.WARNING)
    # torch.distributed's notices about its own API, raised inside DeepSpeed and Ray Train
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    # transformers' rename notices for attributes peft and DeepSpeed read
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6", category=FutureWarning)


# Ray Train's placement-group cleaner polls the State API every few seconds. goalrm's local Ray runs no
# dashboard, so there is none: a dashboard would let the cleaner find another Ray instance on the same
# host and act on its answer. The cleaner then warns at every poll, or, with several Ray instances on the
# host, its monitor thread ends with a ConnectionError. Either way it only watches for a dead controller.
_NO_STATE_API = "State API may be temporarily unavailable"
_CLEANER_THREAD = "PlacementGroupCleanerMonitor"
# Ray Train's controller asks the autoscaling coordinator for its workers' resources every 20 s and warns,
# with a traceback, when the answer takes over 5 s: on a busy machine. A local Ray has no autoscaler to ask.
_RESOURCE_REQUEST_LOGGER = "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client"
_RESOURCE_REQUEST_FAILED = "Failed to send resource request"


def quiet_ray_worker() -> None:
    """Ray's worker_process_setup_hook for goalrm's local Ray: every worker and actor process, Ray's own
    ones included, starts with the same quiet settings as the driver."""
    quiet_libraries()
    if verbose():
        return
    cleaner = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    cleaner.addFilter(lambda record: _NO_STATE_API not in record.getMessage())
    resource_request = logging.getLogger(_RESOURCE_REQUEST_LOGGER)
    resource_request.addFilter(lambda record: _RESOURCE_REQUEST_FAILED not in record.getMessage())
    default_hook = threading.excepthook

    def hook(args):
        if not (args.thread is not None and args.thread.name == _CLEANER_THREAD and issubclass(args.exc_type, ConnectionError)):
            default_hook(args)

    threading.excepthook = hook


def report_line(m: dict) -> str:
    """One training report as the console shows it."""
    line = (
        f"step {m['step']:>5}  loss {m['loss']:.4f}  bt {m['bt_loss']:.4f}  contrastive {m['contrastive_loss']:.4f}  "
        f"{m['pairs_per_s']:.1f} pairs/s  {m['tokens_per_s']:.0f} tok/s"
    )
    if "eval_accuracy" in m:
        line += f"  | eval acc {m['eval_accuracy']:.3f}  auroc {m['eval_auroc']:.3f}"
        if "eval_q_gap" in m:
            line += f"  q_gap {m['eval_q_gap']:+.3f}"
    return line


def progress_line(n: int, total: int | None, unit: str, elapsed: float, rate: float | None) -> str:
    """The progress line of a log: `step 120/1000 (12%), 02:21 elapsed, 1.4 s/step, ETA 20:32`.
    RATE is units per second, or None before there is one."""
    from tqdm import tqdm

    line = f"{unit} {n}/{total} ({100 * n / total:.0f}%)" if total else f"{n} {unit}s"
    line += f", {tqdm.format_interval(elapsed)} elapsed"
    if rate:
        line += f", {1 / rate:.1f} s/{unit}" if rate < 1 else f", {rate:.1f} {unit}/s"
        if total:
            line += f", ETA {tqdm.format_interval(max(0, total - n) / rate)}"
    return line


class Bar:
    """A tqdm bar on a terminal. Elsewhere (CI, `ray job logs`) a progress line on stderr at most every
    GOALRM_PROGRESS_EVERY seconds (60), between the report lines; no line for what ends sooner."""

    def __init__(self, total: int | None, unit: str, initial: int = 0):
        self.bar, self.total, self.unit = None, total, unit
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, leave=False)
        self.every = progress_every()
        self.start = self.last = time.monotonic()
        self.first = None  # (time, n) of the first update: a resumed run's rate counts only this run's steps

    def update_to(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n - self.bar.n)
            return
        now = time.monotonic()
        if self.first is None:
            self.first = (now, n)
        if self.every and now - self.last >= self.every:
            self.last = now
            t0, n0 = self.first
            rate = (n - n0) / (now - t0) if n > n0 and now > t0 else None
            print(progress_line(n, self.total, self.unit, now - self.start, rate), file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_every() -> float:
    raw = os.environ.get(PROGRESS_EVERY_ENV, "60")
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not every >= 0:
        raise ValueError(f"{PROGRESS_EVERY_ENV}={raw!r}: expected seconds between progress lines (0 turns them off)")
    return every


@contextmanager
def follow_reports(metrics_path: str, total_steps: int):
    """While the body runs, print each new line of METRICS_PATH (written by the Ray Train controller)
    as a report line, under a progress bar of steps with rate and ETA. The file may already hold a
    resumed run's reports; only new ones print."""
    offset = os.path.getsize(metrics_path) if os.path.exists(metrics_path) else 0
    bar = Bar(total_steps, "step")
    stop = threading.Event()

    def poll() -> None:
        nonlocal offset
        if not os.path.exists(metrics_path):
            return
        with open(metrics_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        offset += len(complete)
        for raw in complete.splitlines():
            m = json.loads(raw)
            bar.update_to(m.get("step", 0))
            if "loss" in m:
                bar.write(report_line(m))

    def run() -> None:
        while not stop.wait(0.5):
            poll()

    thread = threading.Thread(target=run, name="goalrm-reports", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()
        bar.close()


@contextmanager
def counting(total: int, unit: str):
    """A progress bar the caller advances (e.g. blocks scored, trials finished): yields it."""
    bar = Bar(total, unit)
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def quiet_stdout():
    """For libraries that print (DeepSpeed's "op built successfully"); the prints return with --verbose."""
    if verbose():
        yield
        return
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        yield
