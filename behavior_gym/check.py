"""Which backends work on this machine, and why not: `python -m behavior_gym.check`."""

from __future__ import annotations

import sys


def check_mujoco() -> tuple[bool, str]:
    try:
        import gymnasium as gym

        import behavior_gym  # noqa: F401

        env = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=64)
        obs, _ = env.reset(seed=0)
        platform = env.unwrapped.backend._renderer.platform
        env.close()
        if obs["head_rgb"].max() == 0:
            return False, "rendered a black image"
        return True, f"renders with MUJOCO_GL={platform}"
    except Exception as exc:  # report, do not crash: this is a diagnostic
        return False, f"{type(exc).__name__}: {exc}"


def main() -> int:
    from behavior_gym.backends.omnigibson.environment import run_checks

    ok, msg = check_mujoco()
    print(f"mujoco (embedded)   {'OK ' if ok else 'NO '} {msg}")
    checks = run_checks()
    usable = all(c.ok or not c.fatal for c in checks)
    print(f"omnigibson (real)   {'OK ' if usable else 'NO '}")
    for c in checks:
        mark = "ok " if c.ok else ("!! " if c.fatal else "warn")
        print(f"  {mark:<4} {c.name:<22} {c.message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
