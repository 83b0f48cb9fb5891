"""bf16 against fp32 on this CPU, side by side in one process: one matmul of SmolLM2's MLP shape, and a
forward and backward of the SmolLM2 shape (randomly initialised) under bf16 autocast and in bf16
weights (DeepSpeed's bf16 mode), each against fp32. torch hands bf16 to oneDNN only on CPUs with
AVX-512 or AMX; elsewhere it is emulated (goalrm/device.py's `slow_bf16`, which warns of it).

    .venv/bin/python bench/cpu_bf16.py [--layers 30] [--batch 4] [--length 128] [--threads 2]
"""

import argparse
import copy
import time

import torch
from transformers import AutoModel

from goalrm.device import slow_bf16
from goalrm.tiny import tiny_config
from shapes import SHAPES


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def step(model, x, autocast: bool):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(inputs_embeds=x).last_hidden_state
        out.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"oneDNN bf16: {not slow_bf16(torch.device('cpu'))}, {args.threads} threads")

    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    mm = {dt: seconds(lambda: a.to(dt) @ b.to(dt), 5 * args.repeats) for dt in (torch.float32, torch.bfloat16)}
    print(f"matmul 1024x576 @ 576x1536: fp32 {mm[torch.float32] * 1e3:.1f} ms, bf16 {mm[torch.bfloat16] * 1e3:.1f} ms "
          f"({mm[torch.bfloat16] / mm[torch.float32]:.1f}x)")

    config = tiny_config(**{**SHAPES["smollm2-shape"], "num_hidden_layers": args.layers})
    fp32 = AutoModel.from_config(config, dtype=torch.float32).train()
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    x = torch.randn(args.batch, args.length, config.hidden_size)
    t = {
        "fp32": seconds(step(fp32, x, False), args.repeats),
        "bf16 autocast": seconds(step(fp32, x, True), args.repeats),
        "bf16 weights": seconds(step(bf16, x.bfloat16(), False), args.repeats),
    }
    print(f"forward + backward, SmolLM2 shape with {args.layers} layers, {args.batch} x {args.length} tokens: "
          + ", ".join(f"{k} {v:.2f} s ({v / t['fp32']:.1f}x)" for k, v in t.items()))


if __name__ == "__main__":
    main()
