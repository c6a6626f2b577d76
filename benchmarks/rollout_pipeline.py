"""Env steps per second of a rollout with and without pipelining (`rollout.pipeline_stage_num`).

A rollout of `PipelinedPPO` (the trainer of run_embodiment.sh) with the tiny OpenVLA-OFT policy on
Ray env workers, on this machine's CPUs. With S = 1 the policy computes every env's actions, then the
workers step them; with S = 2 the envs are split into two stages and the policy computes one stage's
actions while the workers step the other. Only rollouts are timed (no update). The defaults balance
the two costs on a CPU (cameras rendered every step at 224 px; policy input 112 px), where
pipelining gains most; each setting is measured `--repeats` times, alternating, and the median is
printed.

    python benchmarks/rollout_pipeline.py                       # 4 envs in 1 worker, S = 1 and 2
    python benchmarks/rollout_pipeline.py --workers 2 --stages 1 2 4 --envs 8
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> dict[int, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--workers", type=int, default=1, help="env worker processes")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=12, help="chunk steps per env per rollout")
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224, help="camera resolution of the env")
    p.add_argument("--obs-every", type=int, default=1, help="render cameras every N control steps")
    p.add_argument("--model-image-size", type=int, default=112, help="input resolution of the tiny policy")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the policy")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--task", default="pick_and_place")
    args = p.parse_args(argv)

    import ray
    import torch
    from stable_baselines3.common.callbacks import CallbackList

    from algorithms import metrics as M
    from algorithms.distributed.env_worker import EnvSpec
    from algorithms.distributed.pipeline import PipelinedPPO
    from algorithms.distributed.vec_env import RayVecEnv
    from vla_policies import OpenVLAOFTPolicy

    torch.set_num_threads(args.threads)
    ray.init(num_cpus=max(2, args.workers), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    spec = EnvSpec(task=args.task, chunk=args.chunk, image_size=args.image_size, obs_every=args.obs_every)
    policy = {"preset": "tiny", "torch_dtype": "float32",
              "config_overrides": {"image_sizes": [args.model_image_size] * 2, "num_action_chunks": args.chunk}}
    print(f"rollout pipeline: {args.envs} envs in {args.workers} env worker(s), task {args.task}, cameras "
          f"{args.image_size} px every {args.obs_every} step(s), chunks of {args.chunk}; tiny OpenVLA-OFT "
          f"({args.model_image_size} px input, {args.threads} torch thread(s)) in the trainer; "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    trainers = {}
    for s in args.stages:
        venv = RayVecEnv(spec, args.envs, [{"num_cpus": 0}] * args.workers, num_stages=s)
        model = PipelinedPPO(OpenVLAOFTPolicy, venv, n_steps=args.steps, batch_size=args.steps * args.envs,
                             seed=0, policy_kwargs=policy)
        _, callback = model._setup_learn(args.steps * args.envs, CallbackList([]))  # resets the envs
        model.collect_rollouts(venv, callback, model.rollout_buffer, args.steps)  # warm-up
        trainers[s] = (model, venv, callback)

    rates: dict[int, list[float]] = {s: [] for s in args.stages}
    split: dict[int, tuple[float, float]] = {}
    for _ in range(args.repeats):
        for s, (model, venv, callback) in trainers.items():
            t0 = time.perf_counter()
            model.collect_rollouts(venv, callback, model.rollout_buffer, args.steps)
            dt = time.perf_counter() - t0
            rates[s].append(args.steps * args.envs * args.chunk / dt)
            split[s] = (model._times[M.TIME_INFERENCE], model._times[M.TIME_ENV])
    base = statistics.median(rates[args.stages[0]])
    result = {}
    for s in args.stages:
        rate = statistics.median(rates[s])
        result[s] = rate
        inference, env = split[s]
        print(f"  pipeline_stage_num={s}: {rate:7.1f} env steps/s ({rate / args.chunk:6.1f} chunks/s)  "
              f"x{rate / base:.2f}   [last rollout: inference {inference:.2f} s, env not hidden by it {env:.2f} s; "
              f"runs {', '.join(f'{r:.0f}' for r in rates[s])}]")
    for _, venv, _ in trainers.values():
        venv.close()
    ray.shutdown()
    return result


if __name__ == "__main__":
    main()
