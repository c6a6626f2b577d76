"""Where the task's objects are, in the robot's frame: privileged labels for auxiliary losses.

A policy that sees only images has to learn where things are from its action labels alone, which
name a position only through the motion it leads to. Demonstrations record, beside each frame, the
positions that the task turns on (the object a skill moves and where it goes, the drawer handle, the
thing to switch on), so that SFT can also train the model to say where they are
(`SFTConfig.aux_position_weight`). The policy never gets them as input.
"""

from __future__ import annotations

import numpy as np

from behavior_gym.experts.base import robot_frame

MAX_POINTS = 2  # points per frame; tasks with fewer are padded and masked


def task_point_names(task_name: str, backend) -> list[tuple[str, str]]:
    """(kind, name) of the points `TaskPoints` reads: ("body", object name) for an object's
    bounding-box centre, ("geom", geom name) for a part such as a drawer handle."""
    from behavior_gym.wrappers.shaping import moved_and_target, supports

    task = backend.task
    if supports(task_name):
        return [("body", n) for n in moved_and_target(task)]
    cab = next((o for o in task.scene.objects.values() if o.openables), None)
    if cab is not None:  # the top drawer's handle (the one the drawer expert pulls)
        return [("geom", f"{cab.name}/drawer{len(cab.openables) - 1}/handle")]
    named = []
    for lit in _literals(task.conds.parsed_goal_conditions):
        for arg in lit[1:]:
            name = str(arg).lstrip("?")
            obj = task.scene.objects.get(name)
            if obj is not None and obj.role == "free" and name not in named:
                named.append(name)
    return [("body", n) for n in named[:MAX_POINTS]]


def _literals(cond) -> list[list]:
    """Every literal ([predicate, args...]) inside a parsed BDDL condition."""
    if isinstance(cond, (list, tuple)) and cond and isinstance(cond[0], str) and not cond[0].startswith("?") \
            and all(isinstance(a, str) for a in cond[1:]):
        return [list(cond)]
    out = []
    if isinstance(cond, (list, tuple)):
        for c in cond:
            out += _literals(c)
    return out


class TaskPoints:
    """Reads the task's points from an embedded-backend env's MuJoCo state, in the robot's frame
    (x forward, y left; z is the world height), padded to `MAX_POINTS`.

    Build it after a reset (the scene's objects change with the instance); calling it returns
    (points [MAX_POINTS, 3] float32, mask [MAX_POINTS] bool)."""

    def __init__(self, env):
        env = env.unwrapped
        self.backend = env.backend
        self.names = task_point_names(env.task, self.backend)[:MAX_POINTS]
        self.mask = np.zeros(MAX_POINTS, bool)
        self.mask[: len(self.names)] = True

    def world(self) -> np.ndarray:
        b = self.backend
        st = b.task.state
        st.update(b.data)
        out = np.zeros((MAX_POINTS, 3))
        for k, (kind, name) in enumerate(self.names):
            if kind == "geom":
                out[k] = b.data.geom_xpos[b.model.geom(name).id]
            else:
                lo, hi = st.aabb(st.index[name])
                out[k] = (np.asarray(lo) + np.asarray(hi)) / 2
        return out

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        b = self.backend
        rel = robot_frame(self.world(), b.data.qpos[b.idx.base_qpos][:3])
        rel[~self.mask] = 0.0
        return rel.astype(np.float32), self.mask.copy()
