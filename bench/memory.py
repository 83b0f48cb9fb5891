"""Memory per worker for DDP (ZeRO-0), ZeRO-2, ZeRO-3 and ZeRO-3 with CPU offload.

2 Ray Train CPU workers train a randomly initialised SmolLM2-135M-shaped reward model (bf16 mixed
precision, AdamW) for a few steps. Each worker records
  - state: bytes of every tensor storage it holds for the model and the optimizer (its local
    parameters or ZeRO-3 partitions, gradients, fp32 master weights, Adam moments, ZeRO's
    buffers), found by walking the module and DeepSpeed's optimizer, counted once per storage;
    the larger of after-backward and after-step;
  - peak RSS of the worker process (torch, Ray and Python included).
Target: ZeRO-3 state per worker <= 0.6 x DDP.

    python bench/memory.py [--steps 3] [--variants ddp,zero2,zero3,zero3_offload]
"""

import argparse
import json
import os
import resource
import sys
import tempfile

import torch
from shapes import SHAPES  # bench/, on the path when a bench script runs

from goalrm.tiny import tiny_config

VARIANTS = {
    "ddp": {"zero_stage": 0},
    "zero2": {"zero_stage": 2},
    "zero3": {"zero_stage": 3},
    "zero3_offload": {"zero_stage": 3, "offload_optimizer": True, "offload_params": True},
}
TARGET = 0.6
# DeepSpeed's default 5e8-element gradient buckets are larger than this model; every variant gets the same
BUCKETS = {"reduce_bucket_size": 10**7, "allgather_bucket_size": 10**7}


def smollm2_135m_config():
    # SHAPES is a dict, so Ray pickles it with this function: workers need not import bench/
    return tiny_config(num_labels=1, max_position_embeddings=2048, **SHAPES["smollm2-shape"])


def _storages(obj, seen_objs, out, depth=0):
    """Every tensor storage reachable from `obj` through attributes, lists, tuples and dicts."""
    if depth > 12 or id(obj) in seen_objs:
        return
    seen_objs.add(id(obj))
    if isinstance(obj, torch.Tensor):
        for t in (obj, getattr(obj, "ds_tensor", None), obj.grad if obj.is_leaf else None):
            if isinstance(t, torch.Tensor) and t.numel():
                s = t.untyped_storage()
                out[s.data_ptr()] = s.nbytes()
        return
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        items = obj
    elif isinstance(obj, (torch.optim.Optimizer, torch.nn.Module)) or type(obj).__module__.startswith("deepspeed"):
        items = vars(obj).values() if hasattr(obj, "__dict__") else ()
    else:
        return
    for item in items:
        _storages(item, seen_objs, out, depth + 1)


def state_bytes(engine) -> int:
    found = {}
    _storages([list(engine.module.parameters()), engine.optimizer], set(), found)
    return sum(found.values())


def worker(loop_config: dict) -> None:
    import ray.train
    from transformers import AutoModelForSequenceClassification
    from transformers.integrations import HfDeepSpeedConfig

    from goalrm.config import load_config
    from goalrm.losses import reward_model_loss
    from goalrm.model import RewardModel
    from goalrm.train.deepspeed_config import deepspeed_config
    from goalrm.train.deepspeed_init import init_distributed

    rank = ray.train.get_context().get_world_rank()
    cfg = load_config(None, {"train": {**loop_config["train"], "precision": "bf16", "micro_batch_size": 2}})
    deepspeed = init_distributed(use_gpu=False)
    ds_config = deepspeed_config(cfg.train, 2)
    ds_config["zero_optimization"].update(BUCKETS)
    hf_ds = HfDeepSpeedConfig(ds_config) if cfg.train.zero_stage == 3 else None  # noqa: F841 (must stay alive)
    torch.manual_seed(0)
    model = RewardModel(AutoModelForSequenceClassification.from_config(smollm2_135m_config()))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=ds_config, dist_init_required=None)

    gen = torch.Generator(device=engine.device).manual_seed(rank)  # on the step's device, as the loop's
    seq = loop_config["seq_len"]
    peak_state = 0
    for _ in range(loop_config["steps"]):
        ids = torch.randint(3, 49152, (4, seq), generator=gen)  # 2 pairs: chosen rows then rejected rows
        mask = torch.ones_like(ids)
        out = engine(ids, mask, with_reps=True)
        start, end = torch.full((4,), seq // 2), torch.full((4,), seq)
        loss, _ = reward_model_loss(out.rewards, out.reps, start, end, cfg.loss, gen, start[2:])  # random ids: nothing shared
        engine.backward(loss)
        peak_state = max(peak_state, state_bytes(engine))
        engine.step()
        peak_state = max(peak_state, state_bytes(engine))
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    result = {"state_bytes": peak_state, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "params": n_params}
    with open(os.path.join(loop_config["out_dir"], f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def run_variant(name: str, steps: int, seq_len: int) -> list[dict]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with tempfile.TemporaryDirectory() as out_dir:
        trainer = TorchTrainer(
            worker,
            train_loop_config={"train": VARIANTS[name], "steps": steps, "seq_len": seq_len, "out_dir": out_dir},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(name=f"memory_{name}", storage_path=os.path.join(out_dir, "ray")),
        )
        result = trainer.fit()
        if result.error:
            raise result.error
        return [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(2)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from goalrm.train.trainer import init_ray

    init_ray(num_cpus=2)
    gib = 2**30
    rows = {}
    for name in args.variants.split(","):
        ranks = run_variant(name, args.steps, args.seq_len)
        rows[name] = {k: max(r[k] for r in ranks) for k in ("state_bytes", "peak_rss_bytes")} | {"params": ranks[0]["params"]}
    print(f"\nSmolLM2-135M shape, {rows[next(iter(rows))]['params'] / 1e6:.1f}M params, bf16 + AdamW, 2 CPU workers, {args.steps} steps")
    print(f"{'variant':<15} {'state GiB/worker':>17} {'vs DDP':>7} {'peak RSS GiB/worker':>20} {'vs DDP':>7}")
    ddp = rows.get("ddp")
    for name, r in rows.items():
        s_ratio = f"{r['state_bytes'] / ddp['state_bytes']:.2f}" if ddp else "-"
        m_ratio = f"{r['peak_rss_bytes'] / ddp['peak_rss_bytes']:.2f}" if ddp else "-"
        print(f"{name:<15} {r['state_bytes'] / gib:>17.2f} {s_ratio:>7} {r['peak_rss_bytes'] / gib:>20.2f} {m_ratio:>7}")
    if ddp and "zero3" in rows:
        ratio = rows["zero3"]["state_bytes"] / ddp["state_bytes"]
        print(f"ZeRO-3 state / DDP state = {ratio:.2f} (target <= {TARGET}): {'met' if ratio <= TARGET else 'NOT met'}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
