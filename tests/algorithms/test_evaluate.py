"""`algorithms.evaluate`: success rate, q_score, episode length and return, per task, from final infos."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from algorithms import evaluate

GRIPPER = 14


def open_gripper(obs):
    """Always command the left gripper open: right exactly when the episode asks for open."""
    batched = np.asarray(obs["proprio"]).ndim == 2
    a = np.zeros((2, 8 * 23) if batched else (8 * 23,), dtype=np.float32)
    a[..., GRIPPER::23] = 1.0
    return a


def expected(toys, seeds):
    targets = []
    for s in seeds:
        env = toys.ToyBehaviorEnv()
        env.reset(seed=s)
        targets.append(env.target)
    return np.mean([t > 0 for t in targets])


def test_evaluate_reports_success_q_score_and_length(toys):
    env = toys.make_toy_env(monitor=False)
    stats = evaluate(open_gripper, env, episodes=12, seed=100)
    want = expected(toys, range(100, 112))
    assert 0 < want < 1  # both kinds of episode occur
    assert stats["episodes"] == 12
    assert stats["success_rate"] == pytest.approx(want)
    assert stats["q_score"] == pytest.approx(want)  # 1 when the gripper is right every step, else 0
    assert stats["episode_len"] == 24  # true length in env steps, not 3 chunks
    assert stats["return"] == pytest.approx(3.0 * want)
    assert set(stats["per_task"]) == {"toy_gripper"}
    assert stats["per_task"]["toy_gripper"]["success_rate"] == pytest.approx(want)
    assert len(stats["episode_records"]) == 12


def test_evaluate_per_task_and_vec_env(toys):
    def make(task):
        def fn():
            env = toys.make_toy_env(monitor=False)
            env.unwrapped.task = task
            return env
        return fn

    venv = DummyVecEnv([make("a"), make("b")])
    stats = evaluate(open_gripper, venv, episodes=10, seed=3)
    assert stats["episodes"] == 10
    assert set(stats["per_task"]) == {"a", "b"}
    assert sum(t["episodes"] for t in stats["per_task"].values()) == 10
    assert stats["per_task"]["a"]["episode_len"] == 24


def test_evaluate_sb3_model_and_env_without_success_info(toys):
    from algorithms import PPO

    model = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("CartPole-v1")]), n_steps=16, batch_size=16, seed=0,
                device="cpu", ratio_level="chunk")
    stats = evaluate(model, gym.make("CartPole-v1"), episodes=3, seed=0)
    assert stats["success_rate"] is None and stats["q_score"] is None
    assert stats["episode_len"] == pytest.approx(stats["return"])  # CartPole: reward 1 per step
    assert set(stats["per_task"]) == {"default"}
    with pytest.raises(ValueError):
        evaluate(model, gym.make("CartPole-v1"), episodes=0)
