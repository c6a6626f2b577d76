"""Simulator backends behind the one Behavior-R1Pro-v0 contract."""

from __future__ import annotations

from behavior_gym.backends.base import Backend

BACKENDS = ("mujoco", "omnigibson", "auto")

__all__ = ["BACKENDS", "Backend"]


def omnigibson_available() -> tuple[bool, str]:
    """Whether the OmniGibson backend can run here, and if not, why (every blocking problem)."""
    from behavior_gym.backends.omnigibson.environment import run_checks

    problems = [c.message for c in run_checks() if c.fatal and not c.ok]
    return (not problems), "; ".join(problems)
