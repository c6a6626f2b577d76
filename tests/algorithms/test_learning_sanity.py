"""Learning sanity (issue #5): PPO and GRPO with SB3's MlpPolicy learn CartPole-v1 and the embedded `reach`
task. The fast tests train a few thousand steps and assert improvement; the `slow` ones run
`benchmarks/learning_sanity.py`'s full configurations and assert its targets (CartPole >= 475 return,
reach >= 90% success)."""

import os
import sys

import mujoco
import numpy as np
import pytest

from algorithms import evaluate
from behavior_gym.backends.mujoco.robot import reset_action
from behavior_gym.spaces import PROPRIO_SLICES

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from benchmarks import learning_sanity as LS  # noqa: E402

os.environ.setdefault("MUJOCO_GL", "egl")


def _eval(model, task, episodes=10, deterministic=True):
    return evaluate(model, LS.make_env_fn(task)(), episodes=episodes, seed=5000, deterministic=deterministic)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_cartpole_improves(algo):
    overrides = {} if algo == "ppo" else {"n_steps": 256, "batch_size": 512, "n_envs": 8, "group_size": 4}
    model = LS.build("cartpole", algo, seed=0, **overrides)
    # sampled actions: the mode of an untrained MlpPolicy can balance the pole by luck (420 at seed 0)
    before = _eval(model, "cartpole", deterministic=False)["return"]
    model.learn(12_000 if algo == "ppo" else 24_576)
    after = _eval(model, "cartpole", deterministic=False)["return"]
    print(f"{algo} CartPole return {before:.1f} -> {after:.1f}")
    assert after > 2 * before + 20


def test_reach_task_by_name_and_goal():
    from behavior_gym.env import BehaviorR1ProEnv
    from behavior_gym.tasks.reach import ReachTask

    env = BehaviorR1ProEnv("reach", image_size=16, render_mode=None)
    task = env.backend.task
    assert isinstance(task, ReachTask)
    obs, info = env.reset(seed=3)
    assert info["task"] == "reach" and not info["success"]
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs["proprio"], again["proprio"])
    m, d = env.backend.model, env.backend.data
    assert task.distance(m, d) >= 0.08 - 1e-6
    d.mocap_pos[0] = d.site_xpos[task._site] + [0.0, 0.0, 0.07]  # 7 cm away: 2 of 3 graded predicates
    mujoco.mj_forward(m, d)
    status = task.goal_status(m, d)
    assert status.satisfied == ["within_20cm", "within_10cm"] and not status.success
    d.mocap_pos[0] = d.site_xpos[task._site]
    _, reward, terminated, _, info = env.step(reset_action())
    assert terminated and info["success_once"] and info["q_score"] == 1.0 and reward > 0


def test_reach_wrappers():
    from behavior_gym.tasks.reach import make_reach_env

    env = make_reach_env(max_steps=5)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (67,) and obs.dtype == np.float32
    eef = obs[:-6][PROPRIO_SLICES["left_eef_pos"]]
    np.testing.assert_allclose(obs[-3:], obs[-6:-3] - eef, atol=1e-6)  # [proprio, target, target - eef]
    steps = 0
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        done = terminated or truncated
        assert "distance" in info
    assert steps <= 5 and info["episode_len"] == steps


def test_reach_ppo_improves():
    model = LS.build("reach", "ppo", seed=0)
    before = _eval(model, "reach")
    model.learn(16_384)
    after = _eval(model, "reach")
    print(f"PPO reach return {before['return']:.2f} -> {after['return']:.2f}, "
          f"success {before['success_rate']:.2f} -> {after['success_rate']:.2f}")
    assert after["return"] > before["return"] + 0.5


@pytest.mark.slow
@pytest.mark.parametrize("task,algo", [("cartpole", "ppo"), ("cartpole", "grpo"), ("reach", "ppo"),
                                       ("reach", "grpo")])
def test_learning_sanity_targets(task, algo):
    result = LS.run(task, algo)
    print(result)
    assert result["ok"], result
