"""Ray Jobs entrypoint for `goalrm train`, with the same flags.

    ray job submit --address http://127.0.0.1:8265 -- python ray_jobs/train.py --config my.yaml --output-dir runs/x
"""

import sys

from goalrm.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("train"))
