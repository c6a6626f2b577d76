"""Simulator backends behind the one Behavior-R1Pro-v0 contract."""

from __future__ import annotations

from behavior_gym.backends.base import Backend

BACKENDS = ("mujoco", "omnigibson", "auto")

__all__ = ["BACKENDS", "Backend"]
