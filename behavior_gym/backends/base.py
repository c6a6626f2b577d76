"""The interface between the env (which knows the contract) and a simulator backend.

A backend simulates one robot in one task: it applies validated 23-D actions for one control
step, produces the raw observation pieces and evaluates the goal. Reward, termination,
truncation, `success_once` and the `info` dict are computed once, in `behavior_gym.env`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from behavior_gym.tasks.base import GoalStatus, TaskInfo


class Backend(ABC):
    """One simulated R1 Pro in one task."""

    name: str
    task_info: TaskInfo

    @abstractmethod
    def reset(self, rng: np.random.Generator) -> None:
        """Start a new episode; the initial state is drawn from `rng`."""

    @abstractmethod
    def step(self, action: np.ndarray) -> None:
        """Apply one control step (1/30 s) of a validated, clipped float32 action of shape (23,)."""

    @abstractmethod
    def proprio(self) -> np.ndarray:
        """The 61-D proprioception of `behavior_gym.spaces.PROPRIO_FIELDS`, float32."""

    @abstractmethod
    def render_cameras(self, out: np.ndarray) -> np.ndarray:
        """Render head, left wrist, right wrist into `out` [3, 3, H, W] uint8 and return it."""

    @abstractmethod
    def goal_status(self) -> GoalStatus:
        """The task goal's predicates, split by whether they hold now."""

    def close(self) -> None:  # noqa: B027 - optional: backends without resources need nothing
        """Free simulator resources (GL contexts, processes)."""
