"""goalrm's learning-rate schedule against transformers' get_cosine_schedule_with_warmup: the same cosine
decay, and a warmup one step ahead, so that no optimizer step runs at learning rate 0. That zero step is
why goalrm keeps its own three lines."""

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from goalrm.train.schedule import warmup_cosine


def _hf(warmup: int, total: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, warmup, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("warmup, total", [(20, 100), (0, 50), (5, 5)])
def test_cosine_as_transformers_with_the_warmup_a_step_ahead(warmup, total):
    ours = [warmup_cosine(step, warmup, total) for step in range(total)]
    theirs = _hf(warmup, total)
    assert ours[warmup:] == pytest.approx(theirs[warmup:])  # the decay: identical
    assert ours[: max(warmup - 1, 0)] == pytest.approx(theirs[1:warmup])  # the warmup: one step ahead
    if warmup:
        assert theirs[0] == 0 and ours[0] == pytest.approx(1 / warmup)  # transformers' first step learns nothing
