"""Write a randomly initialised Llama of a bench shape, with the tiny preset's byte tokenizer, as a
local HF folder that `model.name_or_path` (or `goalrm train --model`) loads like any checkpoint.

    python bench/random_backbone.py --shape tiny-4x256 --output runs/backbones/tiny-4x256
"""

import argparse
import os
import sys

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from shapes import SHAPES  # noqa: E402

from goalrm.tiny import tiny_config, tiny_tokenizer  # noqa: E402


def write_backbone(shape: str, output: str, seed: int = 0) -> str:
    torch.manual_seed(seed)  # the backbone's initial weights; train.seed draws only the heads and the order
    model = AutoModelForCausalLM.from_config(tiny_config(**SHAPES[shape]), dtype=torch.float32)
    model.save_pretrained(output)  # safetensors
    tiny_tokenizer().save_pretrained(output)
    return output


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny-4x256")
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(write_backbone(args.shape, args.output, args.seed))


if __name__ == "__main__":
    main()
