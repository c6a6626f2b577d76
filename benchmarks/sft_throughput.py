"""SFT throughput: behaviour-cloning samples per second of an OpenVLA-OFT preset, per batch size.

The learning runs get minutes of GPU time, so SFT's samples per second decide how many epochs fit.
This times `algorithms.sft.sft_loss` + backward + AdamW step (as `train_sft` runs them: float32
master weights, bf16 autocast on CUDA, random-shift augmentation) on synthetic demonstrations
(random 224x224 images from all three cameras, 8 x 23 action chunks), so it needs no data:

    python benchmarks/sft_throughput.py --preset small-p28 --batch-sizes 64 128 256   # on a GPU
    python benchmarks/sft_throughput.py --preset tiny --image-size 64 --batch-sizes 4 8 --steps 3   # CPU check

Prints one line per batch size: ms per step, samples/s, peak GPU memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from algorithms.sft import DemoSet, SFTConfig, _Batches, _random_shift, sft_loss, sft_policy  # noqa: E402


def synthetic_demos(n: int, image_size: int, chunk: int = 8, seed: int = 0) -> DemoSet:
    """`n` frames of random images and actions in the action space (statistics need a spread)."""
    from behavior_gym.spaces import ACTION_HIGH, ACTION_LOW

    rng = np.random.default_rng(seed)
    actions = rng.uniform(ACTION_LOW, ACTION_HIGH, (n + chunk, len(ACTION_LOW))).astype(np.float32)
    return DemoSet(head=rng.integers(0, 256, (n, 3, image_size, image_size), dtype=np.uint8),
                   wrist=rng.integers(0, 256, (n, 2, 3, image_size, image_size), dtype=np.uint8),
                   proprio=rng.normal(size=(n, 61)).astype(np.float32),
                   chunks=np.stack([actions[i:i + chunk] for i in range(n)]),
                   instruction=np.zeros(n, np.int32), instructions=["Pick up the apple and put it in the bowl."],
                   task=np.zeros(n, np.int32), tasks=["pick_and_place"], episodes=1, actions=actions)


def time_batch(policy, demos: DemoSet, batch: int, steps: int, warmup: int, label_sigma: float) -> dict:
    device = policy.device
    bf16 = device.type == "cuda"
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4,
                            fused=device.type == "cuda")
    batches = _Batches(demos, device, seed=0)
    gen = torch.Generator().manual_seed(0)
    policy.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        obs, chunks = batches.sample(batch)
        obs["images"] = _random_shift(obs["images"], SFTConfig.random_shift, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = sft_loss(policy, obs, chunks, label_sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())  # wait for the step
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    ms = 1000 * float(np.median(times))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"batch": batch, "ms_per_step": ms, "samples_per_s": 1000 * batch / ms, "peak_gb": peak}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small-p28")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--label-sigma", type=float, default=0.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    demos = synthetic_demos(max(a.batch_sizes) * 2, a.image_size)
    policy = sft_policy(demos, preset=a.preset, device=a.device, image_size=a.image_size)
    n = sum(p.numel() for p in policy.parameters()) / 1e6
    name = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else "CPU"
    print(f"SFT throughput: {a.preset} ({n:.1f}M parameters), {a.image_size}px x 3 cameras, on {name}")
    for b in a.batch_sizes:
        r = time_batch(policy, demos, b, a.steps, a.warmup, a.label_sigma)
        print(f"batch {r['batch']:4d}: {r['ms_per_step']:8.1f} ms/step  {r['samples_per_s']:8.1f} samples/s  "
              f"peak {r['peak_gb']:.1f} GB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
