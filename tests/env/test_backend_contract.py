"""One contract, every backend: the same checks on the MuJoCo backend, on the OmniGibson backend
over OmniGibson-shaped data, and on the real OmniGibson wherever it is installed and configured
(skipped with the reason elsewhere)."""

import gymnasium as gym
import numpy as np
import pytest

from behavior_gym.backends import omnigibson_available
from behavior_gym.backends.mujoco.robot import reset_action

from . import fake_omnigibson

BACKENDS = {"mujoco": "pick_and_place", "omnigibson-shaped": "turning_on_radio", "omnigibson": "turning_on_radio"}


@pytest.fixture(params=list(BACKENDS))
def env(request, monkeypatch):
    backend = request.param
    if backend == "omnigibson-shaped":
        fake_omnigibson.install(monkeypatch)
        backend = "omnigibson"
    elif backend == "omnigibson":
        ok, why = omnigibson_available()
        if not ok:
            pytest.skip(f"real OmniGibson not usable here: {why}")
    e = gym.make("Behavior-R1Pro-v0", task=BACKENDS[request.param], backend=backend, image_size=32)
    yield e
    e.close()


def test_reset_observation_in_space(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert set(info) >= {"success", "success_once", "q_score", "goal_status", "task", "episode_len"}
    assert set(info["goal_status"]) == {"satisfied", "unsatisfied"}
    assert info["success"] is False and info["episode_len"] == 0


def test_step_semantics(env):
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(reset_action())
    assert env.observation_space.contains(obs)
    assert isinstance(r, float) and isinstance(term, bool) and isinstance(trunc, bool)
    assert info["episode_len"] == 1 and 0.0 <= info["q_score"] <= 1.0


def test_bad_actions_rejected_before_the_simulator(env):
    env.reset(seed=0)
    a = reset_action()
    a[16] = np.nan
    with pytest.raises(ValueError, match=r"right_arm\[1\]"):
        env.step(a)
    with pytest.raises(ValueError, match=r"shape \(23,\)"):
        env.step(np.zeros(21, np.float32))
    assert env.step(reset_action())[4]["episode_len"] == 1


def test_render_tiles(env):
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
