"""`goalrm serve`: the application on an embedded Ray (or a joined one) until SIGINT or SIGTERM."""

import logging
import signal
import sys
import threading
from dataclasses import asdict

from goalrm.serve.config import ServeConfig
from goalrm.serve.model import goal_source

APP_NAME = "goalrm"
# Serve's INFO lines (deployments starting, one access line per request) are not for the console
QUIET = {"log_level": "WARNING", "enable_access_log": False}
STOP_TIMEOUT_S = 30


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_until_stopped(cfg: ServeConfig, host: str, port: int, address: str | None = None) -> None:
    import ray
    from ray import serve

    from goalrm.serve.app import build_app
    from goalrm.train.trainer import init_ray

    app = build_app(asdict(cfg))  # a bad model folder or config fails here, before Ray starts
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    init_ray(address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port}, logging_config=QUIET)
        serve.run(app, name=APP_NAME, route_prefix="/", logging_config=QUIET)
        q = "with" if goal_source(cfg.model, cfg.goal) is not None else "without"
        print(f"goalrm serve: {url(host, port)} ({cfg.model}, {q} Q-values); Ctrl-C stops it", flush=True)
        stop.wait()
    finally:
        # its replicas finish the requests they hold, then stop; bounded, for a Ray that died first
        deleting = threading.Thread(target=serve.delete, args=(APP_NAME,), daemon=True)
        deleting.start()
        deleting.join(STOP_TIMEOUT_S)
        if deleting.is_alive():
            print(f"goalrm serve: warning: the application did not stop within {STOP_TIMEOUT_S} s", file=sys.stderr, flush=True)
        if not address:  # an embedded Ray ends with us; a joined cluster may serve other applications
            ray.shutdown()
    print("goalrm serve: stopped", flush=True)

