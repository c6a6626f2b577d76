"""ActionChunkWrapper and SB3ObservationWrapper semantics, and SB3's per-env (partial) auto-reset."""

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from behavior_gym import spaces as S
from behavior_gym.spaces import decode_instruction
from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper

GRIPPER = S.ACTION_PART["left_gripper"].start


def chunk_action(target: int, right: list[bool], k: int = 8) -> np.ndarray:
    """A chunk whose step i commands the gripper sign `target` if right[i], else the opposite."""
    a = np.tile((S.ACTION_LOW + S.ACTION_HIGH) / 2, (k, 1)).astype(np.float32)
    for i in range(k):
        a[i, GRIPPER] = 0.5 * target * (1 if right[i] else -1)
    return a.reshape(-1)


def test_chunk_space(toys):
    env = ActionChunkWrapper(toys.ToyBehaviorEnv(), chunk=8)
    assert env.action_space.shape == (8 * 23,)
    np.testing.assert_array_equal(env.action_space.low[23:46], S.ACTION_LOW)
    np.testing.assert_array_equal(env.action_space.high[-23:], S.ACTION_HIGH)


def test_chunk_sums_rewards_and_keeps_per_step_info(toys):
    env = ActionChunkWrapper(toys.ToyBehaviorEnv(max_episode_steps=24), chunk=8)
    env.reset(seed=3)
    target = env.unwrapped.target
    right = [True, True, False, True, False, False, True, False]
    _, reward, terminated, truncated, info = env.step(chunk_action(target, right))
    assert reward == pytest.approx(0.125 * 4)
    np.testing.assert_allclose(info["chunk_rewards"], 0.125 * np.array(right, dtype=float))
    assert info["chunk_steps"] == 8 and not info["chunk_dones"].any()
    assert info["episode_len"] == 8 and not (terminated or truncated)
    # the (K, 23) form is accepted too
    _, reward, *_ = env.step(chunk_action(target, [True] * 8).reshape(8, 23))
    assert reward == pytest.approx(1.0)


def test_chunk_stops_early_at_truncation(toys):
    env = ActionChunkWrapper(toys.ToyBehaviorEnv(max_episode_steps=20), chunk=8)
    env.reset(seed=0)
    a = chunk_action(env.unwrapped.target, [True] * 8)
    env.step(a)
    env.step(a)
    _, reward, terminated, truncated, info = env.step(a)  # steps 17..20, then the limit
    assert truncated and not terminated
    assert info["chunk_steps"] == 4 and info["episode_len"] == 20
    assert reward == pytest.approx(4 * 0.125)
    assert info["chunk_truncated"].tolist() == [False, False, False, True] + [False] * 4
    assert info["chunk_rewards"][4:].sum() == 0


def test_chunk_stops_early_at_termination(toys):
    env = ActionChunkWrapper(toys.ToyBehaviorEnv(terminate_on_success=True, success_steps=3), chunk=8)
    env.reset(seed=1)
    _, reward, terminated, truncated, info = env.step(chunk_action(env.unwrapped.target, [True] * 8))
    assert terminated and not truncated
    assert info["chunk_steps"] == 3 and info["episode_len"] == 3 and info["success"]
    assert info["chunk_terminated"].tolist() == [False, False, True] + [False] * 5
    assert reward == pytest.approx(3 * 0.125)


def test_chunk_rejects_wrong_shapes(toys):
    env = ActionChunkWrapper(toys.ToyBehaviorEnv(), chunk=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(92,\)"):
        env.step(np.zeros(23, dtype=np.float32))
    with pytest.raises(ValueError, match="chunk must be"):
        ActionChunkWrapper(toys.ToyBehaviorEnv(), chunk=0)


def test_sb3_observation_wrapper(toys):
    env = SB3ObservationWrapper(toys.ToyBehaviorEnv())
    space = env.observation_space["instruction"]
    assert space.shape == (512,) and space.dtype == np.uint8 and space.high.max() == 127
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert decode_instruction(obs["instruction"]).endswith("the left gripper")
    assert obs["head_rgb"].dtype == np.uint8


def test_sb3_vec_env_resets_only_the_finished_env(toys):
    """SB3's VecEnvs reset per env: a short episode ending leaves the long one running."""
    venv = DummyVecEnv([lambda n=n: toys.make_toy_env(max_episode_steps=n) for n in (8, 24)])
    venv.reset()
    action = np.zeros((2, 8 * 23), dtype=np.float32)
    lengths = []
    for _ in range(3):
        _, _, dones, infos = venv.step(np.clip(action, venv.action_space.low, venv.action_space.high))
        lengths.append([info["episode_len"] for info in infos])
        assert dones[0]  # env 0 ends every chunk
    assert [row[1] for row in lengths] == [8, 16, 24]  # env 1's episode went on
    assert "terminal_observation" in infos[0]
