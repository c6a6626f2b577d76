"""A hand-written table-top task for the env tests: put a small object onto a plate.

It exercises the env contract independently of the BDDL task suite (tests pass it to
`gym.make(..., task=TableTask())`) and exposes its internals to the tests.
"""

from __future__ import annotations

import mujoco
import numpy as np

from behavior_gym.backends.mujoco.robot import COLLIDE_OBJECT, COLLIDE_STATIC
from behavior_gym.tasks.base import EmbeddedTask, GoalStatus, RobotStart, TaskInfo

TABLE_TOP = 0.72
TABLE_CENTER = (0.74, 0.0)
TABLE_HALF = (0.36, 0.6)
COLORS = {"red": (0.85, 0.15, 0.12, 1), "green": (0.2, 0.7, 0.25, 1), "blue": (0.15, 0.3, 0.85, 1),
          "yellow": (0.9, 0.8, 0.1, 1)}
SHAPES = ("cube", "can")


class TableTask(EmbeddedTask):
    """Variants by `instance_id`: object colour and shape; object and plate positions by seed."""

    def __init__(self, instance_id: int = 0):
        self.color = list(COLORS)[instance_id % len(COLORS)]
        self.shape = SHAPES[(instance_id // len(COLORS)) % len(SHAPES)]
        self.info = TaskInfo(
            name="table_pick_place",
            source="skill",
            instruction=f"pick up the {self.color} {self.shape} and put it on the plate",
            max_steps=300,
            description="table-top pick and place onto a plate",
        )

    def build(self, world: mujoco.MjSpec, instance_id: int) -> None:
        wb = world.worldbody
        table = wb.add_body(name="table", pos=[*TABLE_CENTER, 0])
        sc, sa = COLLIDE_STATIC
        table.add_geom(name="table_top", type=mujoco.mjtGeom.mjGEOM_BOX,
                       size=[TABLE_HALF[0], TABLE_HALF[1], 0.02], pos=[0, 0, TABLE_TOP - 0.02],
                       rgba=[0.55, 0.38, 0.22, 1], contype=sc, conaffinity=sa)
        for sx in (-1, 1):
            for sy in (-1, 1):
                table.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.025, 0.025, (TABLE_TOP - 0.04) / 2],
                               pos=[sx * (TABLE_HALF[0] - 0.04), sy * (TABLE_HALF[1] - 0.04), (TABLE_TOP - 0.04) / 2],
                               rgba=[0.4, 0.27, 0.15, 1], contype=0, conaffinity=0)
        oc, oa = COLLIDE_OBJECT
        plate = wb.add_body(name="plate", pos=[0.6, -0.2, TABLE_TOP + 0.01])
        plate.add_freejoint(name="plate_joint")
        plate.add_geom(name="plate", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.09, 0.008, 0],
                       rgba=[0.95, 0.95, 0.95, 1], mass=0.3, contype=oc, conaffinity=oa)
        obj = wb.add_body(name="object", pos=[0.55, 0.15, TABLE_TOP + 0.03])
        obj.add_freejoint(name="object_joint")
        if self.shape == "cube":
            obj.add_geom(name="object", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.025, 0.025, 0.025],
                         rgba=COLORS[self.color], mass=0.1, contype=oc, conaffinity=oa, condim=4)
        else:
            obj.add_geom(name="object", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.028, 0.045, 0],
                         rgba=COLORS[self.color], mass=0.15, contype=oc, conaffinity=oa, condim=4)

    def robot_start(self, instance_id: int, rng: np.random.Generator) -> RobotStart:
        return RobotStart(0.0, 0.0, 0.0)

    def _ids(self, model):
        if not hasattr(self, "_obj_q"):
            jnt = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)  # noqa: E731
            self._obj_q = model.jnt_qposadr[jnt("object_joint")]
            self._plate_q = model.jnt_qposadr[jnt("plate_joint")]
            self._obj_geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "object")
            self._obj_half_h = model.geom_size[self._obj_geom][2 if self.shape == "cube" else 1]
        return self._obj_q, self._plate_q

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        oq, pq = self._ids(model)
        while True:
            obj_xy = rng.uniform((0.46, -0.25), (0.58, 0.25))
            plate_xy = rng.uniform((0.47, -0.28), (0.62, 0.28))
            if np.linalg.norm(obj_xy - plate_xy) > 0.2:
                break
        data.qpos[pq:pq + 7] = (*plate_xy, TABLE_TOP + 0.008, 1, 0, 0, 0)
        yaw = rng.uniform(-np.pi, np.pi)
        data.qpos[oq:oq + 7] = (*obj_xy, TABLE_TOP + self._obj_half_h + 0.002,
                                np.cos(yaw / 2), 0, 0, np.sin(yaw / 2))

    def _on_plate(self, data) -> bool:
        oq, pq = self._obj_q, self._plate_q
        obj, plate = data.qpos[oq:oq + 3], data.qpos[pq:pq + 3]
        horizontal = np.linalg.norm(obj[:2] - plate[:2]) < 0.09
        resting = 0.0 < obj[2] - self._obj_half_h - plate[2] < 0.03
        return bool(horizontal and resting)

    def check_initial(self, model, data) -> list[str]:
        oq, _ = self._ids(model)
        problems = []
        if abs(data.qpos[oq + 2] - self._obj_half_h - TABLE_TOP) > 0.01:
            problems.append("(ontop object table)")
        if self._on_plate(data):
            problems.append("(not (ontop object plate))")
        return problems

    def goal_status(self, model, data) -> GoalStatus:
        self._ids(model)
        name = f"(ontop {self.color}_{self.shape} plate)"
        return GoalStatus(satisfied=[name], unsatisfied=[]) if self._on_plate(data) else \
            GoalStatus(satisfied=[], unsatisfied=[name])
