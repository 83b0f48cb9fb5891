"""Ray Jobs entrypoint for `goalrm score`, with the same flags (see `goalrm score --help`)."""

import sys

from goalrm.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("score"))
