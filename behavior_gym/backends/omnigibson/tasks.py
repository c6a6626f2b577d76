"""The tasks the OmniGibson backend runs: the 50 BEHAVIOR Challenge 2025 activities (any other
BEHAVIOR-1K activity with a cached instance can be made by name too)."""

from __future__ import annotations

import functools

from behavior_gym.backends.omnigibson.config import CHALLENGE_HUMAN_SECONDS, default_max_steps
from behavior_gym.tasks.base import TaskInfo


@functools.cache
def list_omnigibson_tasks() -> list[TaskInfo]:
    from behavior_gym.backends.omnigibson.backend import activity_instruction

    return [TaskInfo(name, "behavior", activity_instruction(name), default_max_steps(name),
                     backends=("omnigibson",), description=f"BEHAVIOR Challenge 2025 task {i}")
            for i, name in enumerate(CHALLENGE_HUMAN_SECONDS)]
