"""Simulator backends behind the one Behavior-R1Pro-v0 contract."""

from __future__ import annotations

from behavior_gym.backends.base import Backend

BACKENDS = ("mujoco", "omnigibson", "auto")

__all__ = ["BACKENDS", "Backend"]


def omnigibson_available() -> tuple[bool, str]:
    """Whether the OmniGibson backend can run here, and if not, why."""
    import importlib.util

    if importlib.util.find_spec("omnigibson") is None:
        return False, "the omnigibson package is not installed (install BEHAVIOR-1K from its repository)"
    return True, ""
