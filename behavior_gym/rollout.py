"""Roll out a policy in Behavior-R1Pro-v0 and write an mp4 of the tiled cameras.

    python -m behavior_gym.rollout --task pick_and_place --episodes 1 --video runs/rollout.mp4

The default policy is random exploration around the robot's resting pose (small joint noise,
slow base motion), which shows the env end to end on any machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def random_policy(rng: np.random.Generator):
    from behavior_gym.backends.mujoco.robot import reset_action

    rest = reset_action()
    state = {"a": rest.copy()}

    def act(_obs):
        a = state["a"]
        a[3:] += rng.normal(0, 0.02, 20).astype(np.float32)
        a[3:] = 0.97 * a[3:] + 0.03 * rest[3:]  # drift back towards rest: stays near the table
        a[:3] = 0.9 * a[:3] + rng.normal(0, 0.03, 3)
        a[[14, 22]] = np.sign(rng.normal(0.5, 1.0, 2))
        return a.copy()

    return act


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="pick_and_place")
    p.add_argument("--backend", default="mujoco")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=150, help="control steps per episode (30 Hz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--video", default="runs/rollout.mp4")
    args = p.parse_args(argv)

    import imageio.v2 as imageio

    from behavior_gym.env import BehaviorR1ProEnv

    env = BehaviorR1ProEnv(task=args.task, backend=args.backend, image_size=args.image_size,
                           max_episode_steps=args.max_steps)
    rng = np.random.default_rng(args.seed)
    Path(args.video).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{args.video}.tmp.mp4"
    writer = imageio.get_writer(tmp, fps=30, codec="libx264", quality=7, macro_block_size=8)
    print(f"task {env.task!r}: {env.task_info.instruction!r} (backend {env.backend.name})")
    t0, steps, successes = time.perf_counter(), 0, 0
    for ep in range(args.episodes):
        obs, info = env.reset(seed=args.seed + ep)
        policy = random_policy(rng)
        ret, done = 0.0, False
        writer.append_data(env.render())
        while not done:
            obs, r, term, trunc, info = env.step(policy(obs))
            ret += r
            steps += 1
            done = term or trunc
            writer.append_data(env.render())
        successes += info["success_once"]
        print(f"episode {ep}: return {ret:.3f}, success {info['success_once']}, q_score {info['q_score']:.2f}, "
              f"length {info['episode_len']}")
    writer.close()
    os.replace(tmp, args.video)
    env.close()
    dt = time.perf_counter() - t0
    print(f"{steps} steps in {dt:.1f} s ({steps / dt:.0f} steps/s incl. video); video: {args.video}")
    return {"steps": steps, "successes": successes, "video": args.video}


if __name__ == "__main__":
    main()
