"""Control steps per second of Behavior-R1Pro-v0 on the embedded backend.

Prints, for one process, steps/s with `obs_every=1`, `obs_every=8` and without cameras (the CPU
proxy's setting), the bare engine cost of a step (4 physics substeps + 3 camera renders of the same
model with `mujoco.Renderer`) and the ratio of an env step to it; then aggregate steps/s for N
processes (one env each). `--shaping 1` wraps the env in the skills configs' `ManipulationShaping`
(pick-style tasks), as RL trains it.

    MUJOCO_GL=egl python benchmarks/env_throughput.py --processes 1 2 --seconds 10
    python benchmarks/env_throughput.py --task picking_up_trash   # any task of list_tasks()
    python benchmarks/env_throughput.py --processes --shaping 1    # one process, shaped as in RL
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")


def _policy(rng, base_action):
    import numpy as np

    a = base_action + rng.normal(0, 0.05, base_action.shape).astype(np.float32)
    a[:3] = rng.uniform(-0.2, 0.2, 3)
    return a


def run_env(task: str, obs_every: int, seconds: float, image_size: int, seed: int = 0, shaping: float = 0.0) -> float:
    """Steps/s of one env over `seconds` of stepping (resets included, construction excluded)."""
    import gymnasium as gym
    import numpy as np

    import behavior_gym  # noqa: F401
    from behavior_gym.backends.mujoco.robot import reset_action

    env = gym.make("Behavior-R1Pro-v0", task=task, obs_every=obs_every, image_size=image_size)
    if shaping > 0:
        from behavior_gym.wrappers.shaping import ManipulationShaping

        env = ManipulationShaping(env, shaping)
    rng = np.random.default_rng(seed)
    base = reset_action()
    env.reset(seed=seed)
    for _ in range(10):  # warm up (GL context, caches)
        env.step(_policy(rng, base))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(_policy(rng, base))
        steps += 1
        if term or trunc:
            env.reset()
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def bare_engine_ms(task: str, image_size: int, reps: int = 200) -> tuple[float, float]:
    """Milliseconds for 4 physics substeps and for 3 renders with MuJoCo's stock Renderer."""
    import gymnasium as gym
    import mujoco

    import behavior_gym  # noqa: F401

    env = gym.make("Behavior-R1Pro-v0", task=task, image_size=image_size)
    env.reset(seed=0)
    model, data = env.unwrapped.backend.model, env.unwrapped.backend.data
    renderer = mujoco.Renderer(model, image_size, image_size)
    cams = ("zed_link", "left_realsense_link", "right_realsense_link")
    for cam in cams:
        renderer.update_scene(data, cam)
        renderer.render()
    t0 = time.perf_counter()
    for _ in range(reps):
        mujoco.mj_step(model, data, nstep=4)
    physics = (time.perf_counter() - t0) / reps * 1e3
    t0 = time.perf_counter()
    for _ in range(reps):
        for cam in cams:
            renderer.update_scene(data, cam)
            renderer.render()
    render = (time.perf_counter() - t0) / reps * 1e3
    renderer.close()
    env.close()
    return physics, render


def _worker(args):
    return run_env(*args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="pick_and_place")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--processes", type=int, nargs="*", default=[1, os.cpu_count() or 1])
    p.add_argument("--multi-obs-every", type=int, default=8)
    p.add_argument("--shaping", type=float, default=0.0, help="ManipulationShaping coefficient (0: none)")
    args = p.parse_args()

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}, task={args.task}, {args.image_size}x{args.image_size}, "
          f"shaping={args.shaping}")
    one = run_env(args.task, 1, args.seconds, args.image_size, shaping=args.shaping)
    eight = run_env(args.task, 8, args.seconds, args.image_size, shaping=args.shaping)
    blind = run_env(args.task, 10**9, args.seconds, args.image_size, shaping=args.shaping)
    physics, render = bare_engine_ms(args.task, args.image_size)
    bare = physics + render
    print(f"{'setting':<34}{'steps/s':>10}{'ms/step':>10}")
    print(f"{'1 process, obs_every=1':<34}{one:>10.1f}{1e3 / one:>10.2f}")
    print(f"{'1 process, obs_every=8':<34}{eight:>10.1f}{1e3 / eight:>10.2f}")
    print(f"{'1 process, no cameras':<34}{blind:>10.1f}{1e3 / blind:>10.2f}")
    print(f"{'bare engine (4 substeps + 3 renders)':<34}{1e3 / bare:>10.1f}{bare:>10.2f}"
          f"   (physics {physics:.2f} ms, renders {render:.2f} ms)")
    print(f"env step / bare engine = {(1e3 / one) / bare:.2f}x")
    ctx = mp.get_context("spawn")
    for n in args.processes:
        if n <= 1:
            continue
        with ctx.Pool(n) as pool:
            rates = pool.map(_worker, [(args.task, args.multi_obs_every, args.seconds, args.image_size, i,
                                        args.shaping) for i in range(n)])
        print(f"{f'{n} processes, obs_every={args.multi_obs_every}':<34}{sum(rates):>10.1f}"
              f"   aggregate ({min(rates):.0f}-{max(rates):.0f} per process)")


if __name__ == "__main__":
    main()
