"""Ray Jobs entrypoint for `goalrm tune`, with the same flags (see `goalrm tune --help`)."""

import sys

from goalrm.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("tune"))
