"""The env runs in Gymnasium's AsyncVectorEnv and SB3's SubprocVecEnv (one simulator per process)."""

import gymnasium as gym
import numpy as np

import behavior_gym  # noqa: F401
from behavior_gym.backends.mujoco.robot import reset_action


def _make():
    def thunk():
        # The module prefix makes the id resolvable in fresh (forkserver/spawn) worker processes.
        return gym.make("behavior_gym:Behavior-R1Pro-v0", task="pick_and_place", image_size=32)
    return thunk


def test_async_vector_env():
    # forkserver: a forked child would inherit the parent's OpenGL (EGL) state and can deadlock.
    venv = gym.vector.AsyncVectorEnv([_make(), _make()], context="forkserver")
    obs, infos = venv.reset(seed=[1, 1])
    assert obs["head_rgb"].shape == (2, 3, 32, 32) and obs["wrist_rgb"].shape == (2, 2, 3, 32, 32)
    np.testing.assert_array_equal(obs["head_rgb"][0], obs["head_rgb"][1])  # same seed, same scene
    assert list(obs["instruction"]) == [obs["instruction"][0]] * 2
    actions = np.stack([reset_action()] * 2)
    for _ in range(3):
        obs, rew, term, trunc, infos = venv.step(actions)
    assert infos["episode_len"].tolist() == [3, 3]
    venv.close()


def test_sb3_subproc_vec_env():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = SubprocVecEnv([_make(), _make()])
    venv.seed(5)
    obs = venv.reset()
    assert obs["head_rgb"].shape == (2, 3, 32, 32) and obs["proprio"].shape == (2, 61)
    obs, rew, done, infos = venv.step(np.stack([reset_action()] * 2))
    assert rew.shape == (2,) and infos[0]["episode_len"] == 1 and "q_score" in infos[1]
    venv.close()
