"""Throughput of the data-parallel actor: PPO updates/s and samples/s for world sizes 1, 2, 4.

Each world size runs in fresh processes (`algorithms.distributed.data_parallel.launch_local`): on GPUs
(when there are as many as the world size) NCCL with rank r on GPU r, otherwise CPU processes on gloo
with `--threads` torch threads each. Every rank holds `--samples-per-rank` samples of a synthetic
rollout (random uint8 images, the contract's observation; per-token log-probs) and runs `--updates`
PPO updates of one epoch; one optimizer step per update (the global batch = every rank's samples), in
micro-batches of `--micro-batch`. Weak scaling: the work per rank is fixed, so ideal samples/s grows
W-fold. World size 1 is the plain one-process `algorithms.PPO` (no process group, no wrapper).

    python benchmarks/actor_scaling.py                                   # CPU: tiny OpenVLA-OFT, 56 px
    python benchmarks/actor_scaling.py --preset small --image-size 224 --chunks 8 --images 3 \\
        --samples-per-rank 32 --micro-batch 8 --strategy fsdp                # GPUs (nccl), ...
    python benchmarks/actor_scaling.py --preset 7.5b --lora-rank 32 --strategy fsdp --image-size 224 ...
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _observation_space(image_size: int):
    import numpy as np
    from gymnasium import spaces

    from behavior_gym import spaces as S

    return spaces.Dict({
        "head_rgb": spaces.Box(0, 255, (3, image_size, image_size), np.uint8),
        "wrist_rgb": spaces.Box(0, 255, (2, 3, image_size, image_size), np.uint8),
        "proprio": spaces.Box(-np.inf, np.inf, (S.PROPRIO_DIM,), np.float32),
        "instruction": spaces.Box(0, 255, (len(S.encode_instruction("x")),), np.uint8),
        "task_id": spaces.Discrete(1),
    })


def run_rank(rank: int, world_size: int, args: argparse.Namespace) -> dict[str, float]:
    import numpy as np
    import torch as th
    from gymnasium import spaces
    from stable_baselines3.common.logger import Logger

    from algorithms import PPO
    from algorithms.distributed.data_parallel import DataParallelPPO, SpacesOnlyVecEnv
    from behavior_gym import spaces as S
    from vla_policies import OpenVLAOFTPolicy

    if not th.cuda.is_available():
        th.set_num_threads(args.threads)
    obs_space = _observation_space(args.image_size)
    act_space = spaces.Box(np.tile(S.ACTION_LOW, args.chunks), np.tile(S.ACTION_HIGH, args.chunks),
                           dtype=np.float32)
    n_envs, n_steps = 1, args.samples_per_rank  # one env column per rank: n_steps samples
    overrides = {"image_sizes": [args.image_size] * 2, "num_images_in_input": args.images,
                 "num_action_chunks": args.chunks}
    kwargs = dict(n_steps=n_steps, batch_size=args.samples_per_rank * world_size, n_epochs=1,
                  micro_batch_size=args.micro_batch, learning_rate=1e-5, seed=0, ratio_level="token",
                  policy_kwargs={"preset": args.preset, "lora_rank": args.lora_rank, "config_overrides": overrides})
    env = SpacesOnlyVecEnv(n_envs, obs_space, act_space)
    model = (PPO(OpenVLAOFTPolicy, env, **kwargs) if world_size == 1
             else DataParallelPPO(OpenVLAOFTPolicy, env, strategy=args.strategy, **kwargs))
    model.set_logger(Logger(None, []))
    buf = model.rollout_buffer
    rng = np.random.default_rng(rank)
    for key, space in obs_space.spaces.items():
        store = buf.observations[key]
        if key == "instruction":
            store[:] = S.encode_instruction("pick up the apple and put it in the basket")
        elif isinstance(space, spaces.Box) and space.dtype == np.uint8:
            store[:] = rng.integers(0, 256, store.shape, dtype=np.uint8)
    buf.actions[:] = rng.uniform(act_space.low, act_space.high, buf.actions.shape).astype(np.float32)
    buf.log_probs = np.full((n_steps, n_envs, args.chunks * S.ACTION_DIM), -5.0, np.float32)
    buf.log_prob_dim = buf.log_probs.shape[-1]
    buf.advantages = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    buf.returns = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    buf.pos, buf.full = n_steps, True
    model._current_progress_remaining = 1.0
    sync = th.cuda.synchronize if th.cuda.is_available() else (lambda: None)
    for _ in range(args.warmup):
        model.train()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.updates):
        model.train()
    sync()
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model.policy.parameters())
    trainable = sum(p.numel() for p in model.policy.parameters() if p.requires_grad)
    return {"seconds": seconds, "params": params, "trainable": trainable,
            "peak_mem_gb": th.cuda.max_memory_allocated() / 2**30 if th.cuda.is_available() else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=56)
    parser.add_argument("--images", type=int, default=1, help="images in the model's input (1-3)")
    parser.add_argument("--chunks", type=int, default=1, help="actions per chunk")
    parser.add_argument("--samples-per-rank", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (CPU)")
    args = parser.parse_args()

    import torch as th

    from algorithms.distributed.data_parallel import launch_local

    gpus = th.cuda.device_count()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpus} GPU(s), torch "
          f"{th.__version__}; OpenVLA-OFT {args.preset} (LoRA rank {args.lora_rank}), {args.image_size}px x "
          f"{args.images} image(s), chunk {args.chunks}; {args.samples_per_rank} samples/rank, micro-batch "
          f"{args.micro_batch}, strategy {args.strategy}")
    print(f"{'world':>5} {'backend':>7} {'updates/s':>10} {'samples/s':>10} {'speed-up':>8} {'efficiency':>10}"
          f" {'peak GB':>8}")
    base = None
    for w in args.world_sizes:
        backend = "nccl" if gpus >= w else "gloo"
        results = launch_local(run_rank, w, args, backend=backend, timeout_s=3600)
        seconds = max(r["seconds"] for r in results)
        updates = args.updates / seconds
        samples = updates * args.samples_per_rank * w
        base = base or samples
        print(f"{w:>5} {backend:>7} {updates:>10.3f} {samples:>10.2f} {samples / base:>8.2f} "
              f"{samples / base / w:>10.0%} {results[0]['peak_mem_gb']:>8.2f}", flush=True)
    print(f"# {results[0]['params'] / 1e6:,.1f}M parameters, {results[0]['trainable'] / 1e6:,.2f}M trainable")


if __name__ == "__main__":
    main()
