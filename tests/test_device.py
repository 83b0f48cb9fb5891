import pytest
import torch

from goalrm.config import ConfigError
from goalrm.device import bf16_warning, resolve_device, slow_bf16


def test_cuda_without_a_gpu_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="sees no GPU"):
        resolve_device("cuda")


@pytest.mark.parametrize("onednn_bf16", [True, False])
def test_bf16_on_a_cpu_without_onednn_bf16_is_warned_of(monkeypatch, onednn_bf16):
    """An AVX2-only CPU multiplies bf16 in plain loops (a SmolLM2-shape step measured 25x slower than fp32):
    a CPU run in bf16 says so before it starts; fp32 and GPUs never do."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)
    cpu = torch.device("cpu")
    assert slow_bf16(cpu) is (not onednn_bf16)
    assert (bf16_warning("bf16", cpu) is None) is onednn_bf16
    assert bf16_warning("fp32", cpu) is None
    assert not slow_bf16(torch.device("cuda", 0)) and bf16_warning("bf16", torch.device("cuda", 0)) is None


def test_torch_still_has_the_switch_slow_bf16_reads():
    """The switch is private: a torch without it would make every CPU look slow to slow_bf16."""
    assert isinstance(torch.ops.mkldnn._is_mkldnn_bf16_supported(), bool)
