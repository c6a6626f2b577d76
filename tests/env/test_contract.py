"""Behavior-R1Pro-v0 keeps SPEC §2's contract: spaces, registration, info, seeding, rendering."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import behavior_gym
from behavior_gym import spaces as S
from behavior_gym.backends.mujoco.robot import reset_action

from .table_task import TableTask

SPEC_ACTION_LOW = [-0.75, -0.75, -1.0, -1.1345, -2.7925, -1.8326, -3.0543,
                   -4.4506, -0.1745, -2.3562, -2.0944, -2.3562, -1.0472, -1.5708, -1.0,
                   -4.4506, -3.1416, -2.3562, -2.0944, -2.3562, -1.0472, -1.5708, -1.0]
SPEC_ACTION_HIGH = [0.75, 0.75, 1.0, 1.8326, 2.5307, 1.5708, 3.0543,
                    1.3090, 3.1416, 2.3562, 0.3491, 2.3562, 1.0472, 1.5708, 1.0,
                    1.3090, 0.1745, 2.3562, 0.3491, 2.3562, 1.0472, 1.5708, 1.0]


@pytest.fixture(scope="module")
def env():
    e = gym.make("Behavior-R1Pro-v0", task="pick_and_place")
    yield e
    e.close()


def test_make_without_import_in_fresh_interpreter():
    code = ("import gymnasium as gym; e = gym.make('behavior_gym:Behavior-R1Pro-v0'); "
            "o, _ = e.reset(seed=0); print(o['head_rgb'].shape); e.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(3, 224, 224)" in out.stdout


def test_spaces_match_spec(env):
    a = env.action_space
    assert a.shape == (23,) and a.dtype == np.float32
    np.testing.assert_allclose(a.low, SPEC_ACTION_LOW, atol=1e-6)
    np.testing.assert_allclose(a.high, SPEC_ACTION_HIGH, atol=1e-6)
    o = env.observation_space
    assert set(o.spaces) == {"head_rgb", "wrist_rgb", "proprio", "instruction", "task_id"}
    assert o["head_rgb"].shape == (3, 224, 224) and o["head_rgb"].dtype == np.uint8
    assert o["wrist_rgb"].shape == (2, 3, 224, 224) and o["wrist_rgb"].dtype == np.uint8
    assert o["proprio"].shape == (61,) and o["proprio"].dtype == np.float32
    assert isinstance(o["instruction"], gym.spaces.Text) and o["instruction"].max_length == 512
    assert isinstance(o["task_id"], gym.spaces.Discrete)
    assert o["task_id"].n == len(behavior_gym.list_tasks())
    # Interleaved OmniGibson order, not arms-then-grippers.
    assert [(p.name, p.start, p.stop) for p in S.ACTION_PARTS] == [
        ("base", 0, 3), ("torso", 3, 7), ("left_arm", 7, 14), ("left_gripper", 14, 15),
        ("right_arm", 15, 22), ("right_gripper", 22, 23)]


def test_proprio_layout_is_behavior_2026():
    names = [n for n, _ in S.PROPRIO_FIELDS]
    assert names[0] == "base_qvel" and names[-2:] == ["trunk_qpos", "trunk_qvel"]
    assert S.PROPRIO_SLICES["left_eef_quat"] == slice(20, 24)
    assert S.PROPRIO_SLICES["right_joint_qpos"] == slice(28, 35)
    assert S.PROPRIO_SLICES["trunk_qvel"] == slice(57, 61)


def test_gymnasium_check_env_passes():
    e = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=64)
    check_env(e.unwrapped, skip_render_check=False)
    e.close()


def test_reset_and_info_keys(env):
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["instruction"] == env.unwrapped.task_info.instruction and len(obs["instruction"]) > 10
    for key in ("success", "success_once", "q_score", "goal_status", "task", "episode_len"):
        assert key in info
    assert info["episode_len"] == 0 and info["success"] is False and info["q_score"] == 0.0
    obs, r, term, trunc, info = env.step(reset_action())
    assert info["episode_len"] == 1 and not term and not trunc and r == 0.0


def test_seeded_reset_gives_identical_episodes(env):
    def episode(seed):
        obs, _ = env.reset(seed=seed)
        frames = [obs["head_rgb"].tobytes() + obs["wrist_rgb"].tobytes() + obs["proprio"].tobytes()]
        rng = np.random.default_rng(0)
        for _ in range(5):
            a = reset_action() + rng.normal(0, 0.05, 23).astype(np.float32)
            obs, *_ = env.step(a)
            frames.append(obs["head_rgb"].tobytes() + obs["proprio"].tobytes())
        return frames

    a, b, c = episode(11), episode(11), episode(12)
    assert a == b
    assert a[0] != c[0]


def test_render_tiles_three_cameras(env):
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (448, 672, 3) and frame.dtype == np.uint8
    obs, *_ = env.step(reset_action())
    frame = env.render()
    # Right column holds the two wrist cameras, left the head camera at double size.
    np.testing.assert_array_equal(frame[:224, 448:], obs["wrist_rgb"][0].transpose(1, 2, 0))
    np.testing.assert_array_equal(frame[224:, 448:], obs["wrist_rgb"][1].transpose(1, 2, 0))
    np.testing.assert_array_equal(frame[::2, :448:2], obs["head_rgb"].transpose(1, 2, 0))


def test_obs_every_reuses_frames_and_marks_them():
    e = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=64, obs_every=4)
    obs0, info = e.reset(seed=0)
    assert info["obs_fresh"]
    last = obs0
    a = reset_action()
    a[0] = 0.5  # drive forward: the view changes every step
    fresh = []
    for _ in range(8):
        obs, _, _, _, info = e.step(a)
        fresh.append(info["obs_fresh"])
        if not info["obs_fresh"]:
            np.testing.assert_array_equal(obs["head_rgb"], last["head_rgb"])
        else:
            assert not np.array_equal(obs["head_rgb"], obs0["head_rgb"])
        last = obs
    assert fresh == [False, False, False, True] * 2
    e.close()


def test_potential_reward_success_and_termination():
    e = gym.make("Behavior-R1Pro-v0", task=TableTask(), image_size=32, success_bonus=2.0).unwrapped
    e.reset(seed=0)
    task, d = e.backend.task, e.backend.data
    # Put the object on the plate by hand: the goal's only predicate becomes true.
    pq, oq = task._plate_q, task._obj_q
    d.qpos[oq:oq + 2] = d.qpos[pq:pq + 2]
    d.qpos[oq + 2] = d.qpos[pq + 2] + task._obj_half_h + 0.012
    d.qvel[:] = 0
    _, r, term, trunc, info = e.step(reset_action())
    assert term and not trunc
    assert r == pytest.approx(1.0 + 2.0)
    assert info["success"] and info["success_once"] and info["q_score"] == 1.0
    assert info["goal_status"]["unsatisfied"] == []
    e.close()


def test_truncation_at_max_episode_steps_and_true_length():
    from behavior_gym.env import BehaviorR1ProEnv

    # The env's own limit renders a fresh final frame even between obs_every renders.
    e = BehaviorR1ProEnv(task="pick_and_place", image_size=32, max_episode_steps=5, obs_every=8)
    e.reset(seed=0)
    for _ in range(5):
        _, _, term, trunc, info = e.step(reset_action())
    assert trunc and not term and info["episode_len"] == 5 and info["obs_fresh"]
    e.close()
    # Through gym.make, max_episode_steps becomes Gymnasium's TimeLimit.
    e = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=32, max_episode_steps=3)
    e.reset(seed=0)
    for _ in range(3):
        _, _, term, trunc, info = e.step(reset_action())
    assert trunc and info["episode_len"] == 3
    e.close()


def test_list_tasks():
    tasks = behavior_gym.list_tasks()
    assert "pick_and_place" in [t.name for t in tasks]
    for t in tasks:
        assert t.instruction and t.max_steps > 0 and t.source in ("behavior", "skill")


def test_close_frees_gl_context_repeatedly():
    for _ in range(12):
        e = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=32)
        e.reset(seed=0)
        e.close()
        assert e.unwrapped.backend._renderer is None


def test_closing_one_env_leaves_another_rendering():
    """Each env has its own GL context; freeing one's GL objects must not delete the other's (same GL
    names in both contexts), whichever context happens to be current."""
    a = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=32)
    b = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=32)
    try:
        a.reset(seed=0)
        obs_b, _ = b.reset(seed=0)  # b's context is current now
        a.close()
        obs_b2, _ = b.reset(seed=0)
        np.testing.assert_array_equal(obs_b2["head_rgb"], obs_b["head_rgb"])
    finally:
        a.close()
        b.close()


def test_renderers_left_open_are_closed_before_the_egl_display_is_terminated():
    """At exit, our close hook must run before mujoco.egl's eglTerminate (atexit is last-in first-out)."""
    code = ("import gymnasium as gym, behavior_gym, mujoco.egl\n"
            "from behavior_gym.backends.mujoco import rendering\n"
            "terminate, close = mujoco.egl.EGL.eglTerminate, rendering.MultiCameraRenderer.close\n"
            "mujoco.egl.EGL.eglTerminate = lambda *a: (print('terminate', flush=True), terminate(*a))[1]\n"
            "rendering.MultiCameraRenderer.close = lambda self: (print('close', flush=True), close(self))[1]\n"
            "env = gym.make('Behavior-R1Pro-v0', task='open_drawer', image_size=32)\n"
            "env.reset(seed=0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MUJOCO_GL": "egl"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert "terminate" in lines and "close" in lines, out.stdout
    assert lines.index("close") < lines.index("terminate"), out.stdout


def test_process_exits_cleanly_with_envs_left_open():
    """Renderers nobody closed are freed before EGL's display is terminated at exit (no segfault)."""
    code = ("import gymnasium as gym, behavior_gym\n"
            "envs = [gym.make('Behavior-R1Pro-v0', task='open_drawer', image_size=32) for _ in range(3)]\n"
            "[e.reset(seed=0) for e in envs]\n"
            "envs[1].close()\n")
    for _ in range(3):
        out = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
