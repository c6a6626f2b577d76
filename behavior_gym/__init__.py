"""behavior_gym: BEHAVIOR household tasks for the Galaxea R1 Pro as a Gymnasium environment.

    import gymnasium as gym
    import behavior_gym  # registers Behavior-R1Pro-v0 (or use "behavior_gym:Behavior-R1Pro-v0")
    env = gym.make("Behavior-R1Pro-v0", task="pick_and_place")
"""

from __future__ import annotations

import gymnasium as gym

from behavior_gym._gl import import_mujoco

import_mujoco()  # before anything else imports mujoco: picks a headless GL platform

from behavior_gym.tasks.base import TaskInfo  # noqa: E402

ENV_ID = "Behavior-R1Pro-v0"
__version__ = "0.1.0"


def list_tasks(backend: str = "mujoco") -> list[TaskInfo]:
    """Every task the chosen backend can run, with its source, instruction and step limit."""
    if backend not in ("mujoco", "omnigibson", "auto"):
        raise ValueError(f"unknown backend {backend!r}; choose 'mujoco', 'omnigibson' or 'auto'")
    if backend == "auto":
        from behavior_gym.backends import omnigibson_available

        backend = "omnigibson" if omnigibson_available()[0] else "mujoco"
    if backend == "omnigibson":
        from behavior_gym.backends.omnigibson.tasks import list_omnigibson_tasks

        return list_omnigibson_tasks()
    from behavior_gym.tasks.catalogue import list_embedded_tasks

    return list_embedded_tasks()


def task_names() -> list[str]:
    """Task names in the order that defines the `task_id` observation."""
    return [t.name for t in list_tasks()]


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="behavior_gym.env:BehaviorR1ProEnv", disable_env_checker=False)

__all__ = ["ENV_ID", "TaskInfo", "list_tasks", "task_names"]
