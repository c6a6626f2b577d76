"""Success rate and mean episode length of each scripted expert, over many seeds.

    python benchmarks/expert_success.py                 # all experts, 50 seeds each
    python benchmarks/expert_success.py --seeds 10 --tasks pick_and_place stacking
    python benchmarks/expert_success.py --servo --tasks pick_and_place stacking   # the closed-loop experts

Each episode uses instance_id = seed (so skill variants cycle through objects, colours and sizes)
and the task's own step limit. Observations are not rendered (`obs_every` is huge): the numbers
measure the controllers, not the renderer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("MUJOCO_GL", "egl")


def run(task: str, seeds: int, servo: bool = False) -> dict:
    import gymnasium as gym

    import behavior_gym  # noqa: F401
    from behavior_gym.experts import make_expert

    succ, lens, fails = 0, [], {}
    t0 = time.perf_counter()
    steps = 0
    if servo:
        from behavior_gym.experts.servo import SERVO_EXPERTS

        make = SERVO_EXPERTS[task]
    else:
        make = make_expert
    for seed in range(seeds):
        env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, obs_every=10**9, image_size=32)
        obs, info = env.reset(seed=seed)
        expert = make(env)
        expert.reset()
        for _ in range(env.unwrapped.max_episode_steps):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                break
        steps += info["episode_len"]
        succ += bool(info["success_once"])
        lens.append(info["episode_len"])
        if not info["success_once"]:
            reason = (expert.failed or "timeout")[:60]
            fails[reason] = fails.get(reason, 0) + 1
        env.close()
    dt = time.perf_counter() - t0
    return {"task": task, "seeds": seeds, "success": succ / seeds, "mean_len": sum(lens) / len(lens),
            "steps_per_s": steps / dt, "failures": fails}


def main(argv=None) -> int:
    from behavior_gym.experts import EXPERTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--tasks", nargs="*", default=list(EXPERTS))
    p.add_argument("--servo", action="store_true", help="the closed-loop experts of behavior_gym.experts.servo "
                   "(pick_and_place, stacking)")
    a = p.parse_args(argv)
    rows = [run(t, a.seeds, a.servo) for t in a.tasks]
    print(f"\n{'task':<42} {'seeds':>5} {'success':>8} {'mean len':>9} {'steps/s':>8}")
    for r in rows:
        print(f"{r['task']:<42} {r['seeds']:>5} {r['success']:>8.0%} {r['mean_len']:>9.1f} {r['steps_per_s']:>8.0f}")
        for reason, n in sorted(r["failures"].items(), key=lambda kv: -kv[1]):
            print(f"    {n:>3} x {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
