"""The embedded backend: the R1 Pro model and a task's scene in MuJoCo, 120 Hz physics, 30 Hz control."""

from __future__ import annotations

import mujoco
import numpy as np

from behavior_gym.backends.base import Backend
from behavior_gym.backends.mujoco import robot as r1
from behavior_gym.backends.mujoco.grasping import AssistedGrasp, add_grasp_welds, check_grasping_mode
from behavior_gym.backends.mujoco.rendering import MultiCameraRenderer
from behavior_gym.spaces import ACTION_PART, GRIPPER_OPEN_WIDTH, PROPRIO_DIM, PROPRIO_SLICES
from behavior_gym.tasks.base import EmbeddedTask, GoalStatus

CAMERAS = ("zed_link", "left_realsense_link", "right_realsense_link")
SETTLE_STEPS = 60  # physics steps (0.5 s) after placing objects, before the episode starts
MAX_RESAMPLES = 20


class RobotIndex:
    """Addresses of the robot's joints, actuators and sites in a compiled model."""

    def __init__(self, model: mujoco.MjModel):
        def jid(name):
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

        def aid(name):
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, name)

        self.base_qpos = np.array([model.jnt_qposadr[jid(j)] for j in r1.BASE_JOINTS])
        self.base_dof = np.array([model.jnt_dofadr[jid(j)] for j in r1.BASE_JOINTS])
        self.base_act = np.array([aid(j) for j in r1.BASE_JOINTS])
        self.torso_qpos = np.array([model.jnt_qposadr[jid(j)] for j in r1.TORSO_JOINTS])
        self.torso_dof = np.array([model.jnt_dofadr[jid(j)] for j in r1.TORSO_JOINTS])
        self.torso_act = np.array([aid(j) for j in r1.TORSO_JOINTS])
        self.arm_qpos, self.arm_dof, self.arm_act = {}, {}, {}
        self.finger_qpos, self.finger_dof, self.finger_act, self.eef_site = {}, {}, {}, {}
        for arm in r1.ARMS:
            self.arm_qpos[arm] = np.array([model.jnt_qposadr[jid(j)] for j in r1.arm_joints(arm)])
            self.arm_dof[arm] = np.array([model.jnt_dofadr[jid(j)] for j in r1.arm_joints(arm)])
            self.arm_act[arm] = np.array([aid(j) for j in r1.arm_joints(arm)])
            self.finger_qpos[arm] = np.array([model.jnt_qposadr[jid(j)] for j in r1.finger_joints(arm)])
            self.finger_dof[arm] = np.array([model.jnt_dofadr[jid(j)] for j in r1.finger_joints(arm)])
            self.finger_act[arm] = np.array([aid(j) for j in r1.finger_joints(arm)])
            self.eef_site[arm] = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"{arm}_eef")
        self.base_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "base_link")
        # Action slot -> actuator ids, for writing a whole action into ctrl with one fancy index.
        self.position_act = np.concatenate(
            [self.torso_act, self.arm_act["left"], self.arm_act["right"]]
        )
        self.position_slots = np.concatenate(
            [np.arange(3, 7), np.arange(*ACTION_PART["left_arm"].slice.indices(23)),
             np.arange(*ACTION_PART["right_arm"].slice.indices(23))]
        )
        # Every position servo (torso, arms, fingers) and its speed limit per physics step.
        self.servo_act = np.concatenate([self.position_act, self.finger_act["left"], self.finger_act["right"]])
        dt = model.opt.timestep
        self.servo_step = np.concatenate([np.full(4, r1.TORSO_SPEED * dt), np.full(14, r1.ARM_SPEED * dt),
                                          np.full(4, r1.FINGER_SPEED * dt)])


def build_model(task: EmbeddedTask, instance_id: int, grasping_mode: str = "assisted") -> mujoco.MjModel:
    """Compile the world (floor, lights, robot) plus the task's scene (and the assisted-grasp welds)."""
    spec = mujoco.MjSpec.from_string(r1.world_xml())
    task.build(spec, instance_id)
    if check_grasping_mode(grasping_mode) == "assisted":
        add_grasp_welds(spec)
    return spec.compile()


class MujocoBackend(Backend):
    """R1 Pro + task scene in MuJoCo. Rendering contexts are created lazily, in the process that renders.

    `grasping_mode`: "assisted" (BEHAVIOR's: a closing gripper holds an object between its fingers
    with a fixed joint, see `grasping.py`) or "physical" (finger friction only).
    """

    name = "mujoco"

    def __init__(self, task: EmbeddedTask, image_size: int = 224, instance_id: int = 0,
                 grasping_mode: str = "assisted"):
        self.task = task
        self.task_info = task.info
        self.instance_id = instance_id
        self.image_size = image_size
        self.model = build_model(task, instance_id, grasping_mode)  # raises on an unknown grasping_mode
        self.grasping_mode = grasping_mode
        self.data = mujoco.MjData(self.model)
        self.idx = RobotIndex(self.model)
        self.grasp = AssistedGrasp(self.model) if grasping_mode == "assisted" else None
        self._renderer: MultiCameraRenderer | None = None
        self._rot = np.zeros(9)

    # -- episode ---------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator) -> None:
        m, d, idx = self.model, self.data, self.idx
        for _attempt in range(MAX_RESAMPLES):
            mujoco.mj_resetData(m, d)
            if self.grasp is not None:
                self.grasp.reset(d)
            start = self.task.robot_start(self.instance_id, rng)
            d.qpos[idx.base_qpos] = (start.x, start.y, start.yaw)
            hold = r1.reset_action()
            d.qpos[idx.torso_qpos] = hold[ACTION_PART["torso"].slice]
            for arm in r1.ARMS:
                d.qpos[idx.arm_qpos[arm]] = hold[ACTION_PART[f"{arm}_arm"].slice]
                d.qpos[idx.finger_qpos[arm]] = GRIPPER_OPEN_WIDTH
            self.task.reset(m, d, rng)
            self._write_ctrl(hold)
            self._setpoint = self._target.copy()  # the robot starts at rest on its targets
            d.ctrl[idx.servo_act] = self._setpoint
            mujoco.mj_forward(m, d)
            mujoco.mj_step(m, d, nstep=SETTLE_STEPS)
            d.time = 0.0
            if not self.task.check_initial(m, d):
                return
        raise RuntimeError(
            f"task {self.task_info.name!r} instance {self.instance_id}: could not sample an initial state "
            f"satisfying its initial conditions in {MAX_RESAMPLES} tries: {self.task.check_initial(m, d)}"
        )

    def _write_ctrl(self, action: np.ndarray) -> None:
        """Servo targets (in `servo_act` order) and the base velocity command from an action."""
        fingers_l = (action[ACTION_PART["left_gripper"].start] + 1.0) * (0.5 * GRIPPER_OPEN_WIDTH)
        fingers_r = (action[ACTION_PART["right_gripper"].start] + 1.0) * (0.5 * GRIPPER_OPEN_WIDTH)
        self._target = np.concatenate([action[self.idx.position_slots], [fingers_l] * 2, [fingers_r] * 2])
        self._base_cmd = action[:3]

    def step(self, action: np.ndarray) -> None:
        m, d, idx = self.model, self.data, self.idx
        self._write_ctrl(action)
        if self.grasp is not None:  # a command below the middle of the finger range is a closing one
            self.grasp.update(d, {"left": action[ACTION_PART["left_gripper"].start] < 0.0,
                                  "right": action[ACTION_PART["right_gripper"].start] < 0.0})
        vx, vy, wz = self._base_cmd
        yaw_adr = idx.base_qpos[2]
        ax, ay, aw = idx.base_act
        setpoint, target, max_step = self._setpoint, self._target, idx.servo_step
        for _ in range(r1.SUBSTEPS):
            # Servo setpoints approach their targets at bounded joint speed.
            setpoint += np.clip(target - setpoint, -max_step, max_step)
            d.ctrl[idx.servo_act] = setpoint
            # The base command is in the robot frame; the virtual joints are world-frame.
            c, s = np.cos(d.qpos[yaw_adr]), np.sin(d.qpos[yaw_adr])
            d.ctrl[ax] = c * vx - s * vy
            d.ctrl[ay] = s * vx + c * vy
            d.ctrl[aw] = wz
            mujoco.mj_step(m, d)

    # -- observations ------------------------------------------------------------------------
    def proprio(self) -> np.ndarray:
        d, idx = self.data, self.idx
        out = np.empty(PROPRIO_DIM, dtype=np.float32)
        yaw = d.qpos[idx.base_qpos[2]]
        c, s = np.cos(yaw), np.sin(yaw)
        vxw, vyw, wz = d.qvel[idx.base_dof]
        out[PROPRIO_SLICES["base_qvel"]] = (c * vxw + s * vyw, -s * vxw + c * vyw, wz)
        base_pos = d.xpos[idx.base_body]
        base_rot = d.xmat[idx.base_body].reshape(3, 3)
        for arm in r1.ARMS:
            out[PROPRIO_SLICES[f"{arm}_joint_qpos"]] = d.qpos[idx.arm_qpos[arm]]
            out[PROPRIO_SLICES[f"{arm}_joint_qvel"]] = d.qvel[idx.arm_dof[arm]]
            site = idx.eef_site[arm]
            out[PROPRIO_SLICES[f"{arm}_eef_pos"]] = base_rot.T @ (d.site_xpos[site] - base_pos)
            rel = base_rot.T @ d.site_xmat[site].reshape(3, 3)
            q = np.empty(4)
            mujoco.mju_mat2Quat(q, rel.ravel())
            out[PROPRIO_SLICES[f"{arm}_eef_quat"]] = (q[1], q[2], q[3], q[0])  # wxyz -> xyzw
            out[PROPRIO_SLICES[f"{arm}_gripper_qpos"]] = d.qpos[idx.finger_qpos[arm]]
            out[PROPRIO_SLICES[f"{arm}_gripper_qvel"]] = d.qvel[idx.finger_dof[arm]]
        out[PROPRIO_SLICES["trunk_qpos"]] = d.qpos[idx.torso_qpos]
        out[PROPRIO_SLICES["trunk_qvel"]] = d.qvel[idx.torso_dof]
        return out

    def render_cameras(self, out: np.ndarray) -> np.ndarray:
        if self._renderer is None:
            self._renderer = MultiCameraRenderer(self.model, CAMERAS, self.image_size)
        return self._renderer.render(self.data, out)

    def goal_status(self) -> GoalStatus:
        return self.task.goal_status(self.model, self.data)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
