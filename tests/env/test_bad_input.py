"""Bad input gets a clear error that names the problem, and the env stays usable (SPEC §2)."""

import ctypes.util
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from behavior_gym.backends.mujoco.robot import reset_action


@pytest.fixture(scope="module")
def env():
    e = gym.make("Behavior-R1Pro-v0", task="pick_and_place", image_size=32)
    e.reset(seed=0)
    yield e
    e.close()


def _still_usable(env):
    _, _, _, _, info = env.step(reset_action())
    return info["episode_len"]


@pytest.mark.parametrize("bad", [np.zeros(22, np.float32), np.zeros((8, 23), np.float32), np.zeros(24)])
def test_wrong_shape(env, bad):
    n = _still_usable(env)
    with pytest.raises(ValueError, match=r"shape \(23,\)"):
        env.step(bad)
    assert _still_usable(env) == n + 1


def test_wrong_dtype(env):
    with pytest.raises(ValueError, match="numeric"):
        env.step(np.array(["a"] * 23))
    _still_usable(env)


@pytest.mark.parametrize("index,part", [(1, "base"), (5, "torso"), (9, "left_arm"), (14, "left_gripper"),
                                        (20, "right_arm"), (22, "right_gripper")])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_inf_names_the_slice(env, index, part, value):
    a = reset_action()
    a[index] = value
    with pytest.raises(ValueError, match=rf"NaN or inf in {part}\["):
        env.step(a)
    _still_usable(env)


def test_out_of_bounds_is_clipped(env):
    env.reset(seed=0)
    a = reset_action()
    a[14] = 7.0  # left gripper far beyond +1 (open)
    a[7] = -100.0  # left arm joint 1 far below its limit
    obs, *_ = env.step(a)
    assert np.isfinite(obs["proprio"]).all()


def test_unknown_task_lists_close_names():
    with pytest.raises(ValueError, match="pick_and_place"):
        gym.make("Behavior-R1Pro-v0", task="pick_and_plac")


def test_unknown_backend_says_what_to_choose():
    with pytest.raises(ValueError, match="mujoco.*omnigibson"):
        gym.make("Behavior-R1Pro-v0", task="pick_and_place", backend="isaaclab")


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_missing_renderer_says_what_to_install():
    # OSMesa is a valid MUJOCO_GL choice whose library is absent on this machine.
    code = ("import gymnasium as gym; e = gym.make('behavior_gym:Behavior-R1Pro-v0', image_size=32); "
            "e.reset(seed=0)")
    env = dict(os.environ, MUJOCO_GL="osmesa", PYOPENGL_PLATFORM="osmesa")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0
    assert "MUJOCO_GL='osmesa'" in out.stderr and "apt-get install libosmesa6" in out.stderr


def test_headless_platform_is_chosen_when_unset():
    code = ("import gymnasium as gym, os; e = gym.make('behavior_gym:Behavior-R1Pro-v0', image_size=32); "
            "o, _ = e.reset(seed=0); print(os.environ['MUJOCO_GL'], o['head_rgb'].mean() > 0)")
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["egl", "True"]
