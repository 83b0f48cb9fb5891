"""Linear warmup, then cosine decay to zero."""

import math


def warmup_cosine(step: int, warmup_steps: int, max_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
