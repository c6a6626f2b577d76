"""What a task is to the embedded backend: a scene to add to the world, an initial-state sampler
and a goal check.

The backend owns the robot, the physics loop and rendering; a task owns its objects and its
meaning of success. BDDL activities (BEHAVIOR-1K) and project skill tasks both implement
`EmbeddedTask`; the env only ever sees `TaskInfo` and `GoalStatus`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import mujoco
import numpy as np


@dataclass(frozen=True)
class TaskInfo:
    """A row of `behavior_gym.list_tasks()`."""

    name: str
    source: str  # "behavior" (a BEHAVIOR-1K activity) or "skill" (a project-authored problem)
    instruction: str
    max_steps: int
    backends: tuple[str, ...] = ("mujoco",)
    description: str = ""


@dataclass
class GoalStatus:
    """The goal's top-level predicates split by whether they hold now (BEHAVIOR's `goal_status`)."""

    satisfied: list[str] = field(default_factory=list)
    unsatisfied: list[str] = field(default_factory=list)
    # Finer partial credit for BDDL tasks: the best fraction of *ground* literals satisfied over
    # bddl's ground goal options (`bddl.activity.get_reward`), e.g. 2/3 when two of three cans are
    # in the bin although the single top-level `forall` is still false. None for other tasks.
    ground_fraction: float | None = None

    @property
    def success(self) -> bool:
        return not self.unsatisfied

    @property
    def fraction(self) -> float:
        """Fraction of goal predicates that hold: BEHAVIOR's potential (negated) and partial score."""
        n = len(self.satisfied) + len(self.unsatisfied)
        return len(self.satisfied) / n if n else 0.0


@dataclass(frozen=True)
class RobotStart:
    """Where the robot's base stands at reset, in the world frame."""

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0


class EmbeddedTask(ABC):
    """A task the MuJoCo backend can run.

    Lifecycle: `build(world, instance_id)` once per model (adds fixtures and free objects to the
    world spec; the backend adds the robot and compiles), then per episode `reset(model, data, rng)`
    samples and places objects (the backend settles physics afterwards and calls `check_initial`),
    then `goal_status(model, data)` after every control step.
    """

    info: TaskInfo

    @abstractmethod
    def build(self, world: mujoco.MjSpec, instance_id: int) -> None:
        """Add this task's fixtures and objects to `world` (a spec with floor and lights)."""

    def robot_start(self, instance_id: int, rng: np.random.Generator) -> RobotStart:
        return RobotStart()

    @abstractmethod
    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Sample an initial state: write object poses into `data.qpos` (no stepping needed)."""

    def check_initial(self, model: mujoco.MjModel, data: mujoco.MjData) -> list[str]:
        """Initial conditions that do not hold after settling (empty list = valid episode)."""
        return []

    @abstractmethod
    def goal_status(self, model: mujoco.MjModel, data: mujoco.MjData) -> GoalStatus:
        """Evaluate the goal on the current state."""
