"""Ray Jobs entrypoint for `goalrm serve`, with the same flags (see `goalrm serve --help`).

    ray job submit -- python ray_jobs/serve.py --model /shared/rm/model --host 0.0.0.0 --api-key-file /shared/key
"""

import sys

from goalrm.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("serve"))
