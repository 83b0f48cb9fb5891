"""The --device flag of the commands that run a model in one process (eval, report, steer), and what a
device can do fast."""

import torch

from goalrm.config import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """auto: the GPU when torch sees one, else the CPU."""
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no GPU on this machine (torch.cuda.is_available() is False)")
    return torch.device(name)


def slow_bf16(device: torch.device) -> bool:
    """True on a CPU whose bf16 matmuls torch cannot hand to oneDNN (no AVX-512: e.g. AVX2-only x86).
    There torch multiplies bf16 in plain loops: measured 92x slower than fp32 for one matmul, and a
    SmolLM2-shape forward and backward 25x slower (bench/RESULTS.md, "bf16 on a CPU")."""
    if device.type != "cpu":
        return False
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a torch without oneDNN: no fast bf16 either
        return True


def bf16_warning(precision: str, device: torch.device) -> str | None:
    """The line to print before running in `precision` on `device`, if it will be slow there."""
    if precision == "bf16" and slow_bf16(device):
        return ("goalrm: warning: bf16 on this CPU is emulated (no AVX-512 for oneDNN's bf16 kernels) and runs "
                "many times slower than fp32; use fp32 here (train.precision: fp32, or --precision fp32)")
    return None
