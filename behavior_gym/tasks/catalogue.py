"""The tasks the embedded backend can run, by name."""

from __future__ import annotations

import difflib

from behavior_gym.tasks.base import EmbeddedTask, TaskInfo
from behavior_gym.tasks.pick_place import PickPlaceTask

_TASKS = {"pick_and_place": PickPlaceTask}


def list_embedded_tasks() -> list[TaskInfo]:
    return [cls().info for cls in _TASKS.values()]


def make_task(name: str, instance_id: int = 0, **kw) -> EmbeddedTask:
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=5, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown task {name!r}.{hint} behavior_gym.list_tasks() lists all tasks.")
    return _TASKS[name](instance_id=instance_id, **kw)
