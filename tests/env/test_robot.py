"""The 23-D action drives the right parts in the right direction, and the grippers really grasp."""

import gymnasium as gym
import numpy as np
import pytest

from behavior_gym.backends.mujoco.kinematics import ArmIK, finger_axis_for_yaw, quat_from_yaw_down
from behavior_gym.backends.mujoco.robot import reset_action
from behavior_gym.spaces import ACTION_PART, PROPRIO_SLICES

from .table_task import TableTask


@pytest.fixture()
def env():
    e = gym.make("Behavior-R1Pro-v0", task=TableTask(), image_size=32, obs_every=30)
    e.reset(seed=0)
    yield e
    e.close()


def _hold(env, action, n):
    for _ in range(n):
        obs, *_ = env.step(action)
    return obs["proprio"]


@pytest.mark.parametrize("axis,cmd", [(0, -0.5), (1, -0.4), (1, 0.4), (2, 0.8)])
def test_base_velocity_in_robot_frame(env, axis, cmd):
    a = reset_action()
    a[axis] = cmd
    p = _hold(env, a, 20)
    vel = p[PROPRIO_SLICES["base_qvel"]]
    assert vel[axis] == pytest.approx(cmd, abs=0.05 * abs(cmd) + 0.01)
    assert np.abs(np.delete(vel, axis)).max() < 0.05


def test_base_moves_forward_after_turning(env):
    # Turn 90 degrees left (clear of the table), then drive "forward": the robot-frame command
    # must follow the yaw.
    a = reset_action()
    a[2] = 1.0
    _hold(env, a, 47)  # ~pi/2 rad at 1 rad/s
    a[2] = 0.0
    a[0] = 0.5
    _hold(env, a, 30)
    base = env.unwrapped.backend
    x, y, yaw = base.data.qpos[base.idx.base_qpos]
    assert yaw == pytest.approx(np.pi / 2, abs=0.1)
    assert y > 0.3 and abs(x) < 0.1


@pytest.mark.parametrize("part,field,n", [("torso", "trunk_qpos", 4), ("left_arm", "left_joint_qpos", 7),
                                          ("right_arm", "right_joint_qpos", 7)])
def test_each_joint_follows_its_slot(env, part, field, n):
    start = reset_action()
    for j in range(n):
        env.reset(seed=0)
        a = start.copy()
        sl = ACTION_PART[part].slice
        lo, hi = ACTION_PART[part].low[j], ACTION_PART[part].high[j]
        target = a[sl][j] + (0.15 if a[sl][j] + 0.15 < hi else -0.15)
        assert lo <= target <= hi
        a[sl.start + j] = target
        p = _hold(env, a, 25)
        moved = p[PROPRIO_SLICES[field]] - start[sl]
        assert moved[j] == pytest.approx(target - start[sl][j], abs=0.03), f"{part} joint {j + 1}"
        others = np.delete(moved, j)
        assert np.abs(others).max() < 0.03, f"{part} joint {j + 1} moved others: {others}"


@pytest.mark.parametrize("arm", ["left", "right"])
def test_each_gripper_closes_and_opens(env, arm):
    a = reset_action()
    slot = ACTION_PART[f"{arm}_gripper"].start
    a[slot] = -1.0
    p = _hold(env, a, 20)
    assert p[PROPRIO_SLICES[f"{arm}_gripper_qpos"]].max() < 0.003
    other = "right" if arm == "left" else "left"
    assert p[PROPRIO_SLICES[f"{other}_gripper_qpos"]].min() > 0.045
    a[slot] = 0.0  # half open
    p = _hold(env, a, 20)
    np.testing.assert_allclose(p[PROPRIO_SLICES[f"{arm}_gripper_qpos"]], 0.025, atol=0.003)


def test_eef_pose_in_proprio_matches_site(env):
    base = env.unwrapped.backend
    p = base.proprio()
    site = base.data.site_xpos[base.idx.eef_site["left"]]
    bx, by, _ = base.data.qpos[base.idx.base_qpos]
    np.testing.assert_allclose(p[PROPRIO_SLICES["left_eef_pos"]][:2], site[:2] - [bx, by], atol=1e-5)
    q = p[PROPRIO_SLICES["left_eef_quat"]]
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)


class _Pick:
    """A scripted top-down pick of TableTask's object: IK to pre-grasp, grasp and lift poses."""

    def __init__(self, env):
        self.env, b = env, env.unwrapped.backend
        self.backend, d = b, b.data
        ik = ArmIK(b.model)
        self.oq = oq = b.task._obj_q
        self.obj = obj = d.qpos[oq:oq + 3].copy()
        self.arm = arm = "left" if obj[1] > 0 else "right"
        self.arm_sl, self.grip = ACTION_PART[f"{arm}_arm"].slice, ACTION_PART[f"{arm}_gripper"].start
        self.a = reset_action()
        # Fingers close on two opposite cube faces; of the face pairs, take the one the arm reaches
        # best with the gripper tilted forward (pre-grasp, grasp and lift poses all solved).
        qw, qz = d.qpos[oq + 3], d.qpos[oq + 6]
        face_yaw = (2 * np.arctan2(qz, qw) + np.pi / 4) % (np.pi / 2) - np.pi / 4
        best = None
        for yaw in (face_yaw, face_yaw - np.pi / 2, face_yaw + np.pi / 2):
            kw = dict(quat=quat_from_yaw_down(yaw, tilt=0.8), finger_axis=finger_axis_for_yaw(yaw))
            q_pre, _, r1 = ik.solve(d, arm, obj + [0, 0, 0.12], **kw)
            q_grasp, _, r2 = ik.solve(d, arm, obj + [0, 0, 0.005], q_arm=q_pre, **kw)
            q_lift, _, r3 = ik.solve(d, arm, obj + [0, 0, 0.2], q_arm=q_grasp, **kw)
            if best is None or max(r1, r2, r3) < best[0]:
                best = (max(r1, r2, r3), q_pre, q_grasp, q_lift)
        self.residual, self.q_pre, self.q_grasp, self.q_lift = best

    def move(self, q_from, q_to, grip_cmd, steps):
        for k in range(1, steps + 1):
            self.a[self.arm_sl] = q_from + (q_to - q_from) * k / steps
            self.a[self.grip] = grip_cmd
            self.env.step(self.a)

    def grasp_and_lift(self):
        self.move(self.a[self.arm_sl].copy(), self.q_pre, 1.0, 30)
        self.move(self.q_pre, self.q_grasp, 1.0, 25)
        self.move(self.q_grasp, self.q_grasp, -1.0, 15)
        self.move(self.q_grasp, self.q_lift, -1.0, 30)
        self.move(self.q_lift, self.q_lift, -1.0, 30)  # hold for a second

    def lifted(self):
        return self.backend.data.qpos[self.oq + 2] - self.obj[2]


@pytest.mark.parametrize("mode", ["physical", "assisted"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_grasp_and_lift_with_scripted_joint_targets(seed, mode):
    env = gym.make("Behavior-R1Pro-v0", task=TableTask(), image_size=32, obs_every=30, grasping_mode=mode)
    env.reset(seed=seed)
    pick = _Pick(env)
    assert pick.residual < 0.01
    pick.grasp_and_lift()
    assert pick.lifted() > 0.15, f"object rose only {pick.lifted():.3f} m"
    fingers = pick.backend.data.qpos[pick.backend.idx.finger_qpos[pick.arm]]
    assert fingers.min() > 0.015  # the object is between the fingers, not dropped
    env.close()


def test_every_robot_body_is_gravity_compensated(env):
    import mujoco

    m = env.unwrapped.backend.model
    base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "base_link")
    robot_bodies = [b for b in range(m.nbody) if m.body_rootid[b] == m.body_rootid[base]]
    assert len(robot_bodies) > 20
    assert all(m.body_gravcomp[b] == 1.0 for b in robot_bodies)


def test_arms_hold_targets_without_sag(env):
    a = reset_action()
    a[ACTION_PART["left_arm"].slice] = (-1.4, 0.3, 0.0, -0.2, 0.0, 0.0, 0.0)  # arm stretched forward
    p = _hold(env, a, 60)
    np.testing.assert_allclose(p[PROPRIO_SLICES["left_joint_qpos"]], a[ACTION_PART["left_arm"].slice], atol=0.005)


@pytest.mark.parametrize("z,use_torso", [(0.75, False), (0.6, False), (0.3, True)])
def test_reach_table_from_standing_and_floor_bin_with_torso_lean(env, z, use_torso):
    b = env.unwrapped.backend
    ik = ArmIK(b.model)
    res = min(ik.solve(b.data, "left", np.array([0.5, 0.25, z]), quat=quat_from_yaw_down(y, tilt=0.8),
                       finger_axis=finger_axis_for_yaw(y), use_torso=use_torso)[2] for y in (0.0, -0.78))
    assert res < 0.005


@pytest.mark.parametrize("task", ["pick_and_place", "open_drawer"])
def test_random_in_bounds_actions_stay_stable(task):
    """RL explores with arbitrary in-bounds actions: the physics must stay finite and joint speeds bounded."""
    import mujoco

    e = gym.make("Behavior-R1Pro-v0", task=task, image_size=32, obs_every=1000).unwrapped
    rng = np.random.default_rng(0)
    for ep in range(2):
        e.reset(seed=ep)
        d = e.backend.data
        for _ in range(150):
            obs, *_ = e.step(rng.uniform(e.action_space.low, e.action_space.high).astype(np.float32))
            assert np.isfinite(obs["proprio"]).all()
            assert np.abs(d.qvel[:25]).max() < 20.0
        assert d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number == 0
    e.close()
