"""Assisted grasping (BEHAVIOR's `grasping_mode="assisted"`) on the embedded backend."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from behavior_gym.backends.mujoco.grasping import MASS_LIMIT, AssistedGrasp
from behavior_gym.backends.mujoco.robot import reset_action
from behavior_gym.spaces import ACTION_PART

from .table_task import TableTask
from .test_robot import _Pick


def _env(mode="assisted", seed=0):
    env = gym.make("Behavior-R1Pro-v0", task=TableTask(), image_size=32, obs_every=30, grasping_mode=mode)
    env.reset(seed=seed)
    return env


def _object_body(backend):
    return mujoco.mj_name2id(backend.model, mujoco.mjtObj.mjOBJ_BODY, "object")


def _in_hand_pose(backend, arm, body):
    d = backend.data
    hand = backend.grasp.hand[arm]
    rot = d.xmat[hand].reshape(3, 3)
    return rot.T @ (d.xpos[body] - d.xpos[hand]), rot.T @ d.xmat[body].reshape(3, 3)


def test_closing_on_an_object_attaches_it_and_opening_releases_it():
    env = _env()
    b = env.unwrapped.backend
    pick, body = _Pick(env), _object_body(b)
    pick.move(pick.a[pick.arm_sl].copy(), pick.q_pre, 1.0, 30)
    pick.move(pick.q_pre, pick.q_grasp, 1.0, 25)
    assert b.grasp.held[pick.arm] is None  # open fingers around the object hold nothing
    pick.move(pick.q_grasp, pick.q_grasp, -1.0, 15)
    assert b.grasp.held[pick.arm] == body
    eq = b.grasp.welds[pick.arm][body]
    assert b.data.eq_active[eq] == 1
    # Welded at the pose it had: carried through a fast lift, it keeps its place in the hand.
    pos0, rot0 = _in_hand_pose(b, pick.arm, body)
    pick.move(pick.q_grasp, pick.q_lift, -1.0, 8)
    pick.move(pick.q_lift, pick.q_lift, -1.0, 10)
    pos1, rot1 = _in_hand_pose(b, pick.arm, body)
    assert np.linalg.norm(pos1 - pos0) < 0.005
    assert np.abs(rot1 - rot0).max() < 0.02
    assert pick.lifted() > 0.15
    # Opening the gripper releases it at once: it falls back onto the table.
    pick.move(pick.q_lift, pick.q_lift, 1.0, 1)
    assert b.grasp.held[pick.arm] is None and b.data.eq_active[eq] == 0
    pick.move(pick.q_lift, pick.q_lift, 1.0, 30)
    assert pick.lifted() < 0.03
    env.close()


def test_closing_in_the_air_or_beside_an_object_attaches_nothing():
    env = _env()
    b = env.unwrapped.backend
    a = reset_action()
    a[ACTION_PART["left_gripper"].slice] = -1.0
    a[ACTION_PART["right_gripper"].slice] = -1.0
    for _ in range(20):
        env.step(a)
    assert b.grasp.held == {"left": None, "right": None}
    # Fingers closed before reaching the object: they land on top of it, touching it, but it is
    # not between them, so it is not attached (OmniGibson's ray test).
    pick = _Pick(env)
    pick.move(pick.a[pick.arm_sl].copy(), pick.q_pre, -1.0, 30)
    pick.move(pick.q_pre, pick.q_grasp, -1.0, 25)
    assert b.grasp.held[pick.arm] is None
    env.close()


def test_reset_lets_go():
    env = _env()
    b = env.unwrapped.backend
    pick = _Pick(env)
    pick.grasp_and_lift()
    assert b.grasp.held[pick.arm] is not None
    env.reset(seed=1)
    assert b.grasp.held == {"left": None, "right": None}
    assert not b.data.eq_active.any()
    env.close()


def test_physical_mode_has_no_welds_and_heavy_objects_are_never_assisted():
    env = _env("physical")
    b = env.unwrapped.backend
    assert b.grasp is None and b.model.neq == 0
    env.close()
    env = _env()
    m = env.unwrapped.backend.model
    assert m.neq == 4  # two hands x two free bodies (object, plate)
    body = _object_body(env.unwrapped.backend)
    m.body_subtreemass[body] = MASS_LIMIT + 1
    assert body not in AssistedGrasp(m).welds["left"]
    env.close()


def test_unknown_grasping_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="grasping_mode 'sticky' is not supported.*assisted"):
        gym.make("Behavior-R1Pro-v0", task=TableTask(), image_size=32, grasping_mode="sticky")
