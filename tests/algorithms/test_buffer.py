"""The lean rollout buffer: uint8 storage, no float32 copies, per-token log-probs, bytes per step."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from algorithms.buffers import LeanRolloutBuffer
from behavior_gym import spaces as S
from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper

K = 8


def contract_spaces(toys, image_size: int):
    env = SB3ObservationWrapper(ActionChunkWrapper(toys.ToyBehaviorEnv(image_size=image_size), chunk=K))
    return env, env.observation_space, env.action_space


def expected_bytes_per_step(image_size: int, tokens: int) -> int:
    images = 3 * image_size**2 + 2 * 3 * image_size**2  # uint8 head + two wrists
    return (images + 4 * S.PROPRIO_DIM + 512 + 8  # proprio float32, instruction codes, task_id int64
            + 4 * K * S.ACTION_DIM + 4 * tokens  # actions, per-token log-probs (float32)
            + 6 * 4 + 8)  # rewards, returns, starts, values, advantages, masks; trajectory id


def fill(buffer, env, n_envs, tokens, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(buffer.buffer_size):
        obs = [env.reset(seed=int(rng.integers(1000)))[0] for _ in range(n_envs)]
        batch = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        actions = np.stack([env.action_space.sample() for _ in range(n_envs)])
        buffer.add(batch, actions, rng.normal(size=n_envs), np.zeros(n_envs), th.randn(n_envs),
                   th.randn(n_envs, tokens))


def test_stores_uint8_and_per_token_log_probs(toys):
    env, obs_space, act_space = contract_spaces(toys, 32)
    tokens = K * S.ACTION_DIM
    buf = LeanRolloutBuffer(4, obs_space, act_space, device="cpu", n_envs=2)
    fill(buf, env, 2, tokens)
    assert buf.observations["head_rgb"].dtype == np.uint8
    assert buf.observations["wrist_rgb"].dtype == np.uint8
    assert buf.observations["instruction"].dtype == np.uint8
    assert buf.log_probs.shape == (4, 2, tokens)
    assert buf.bytes_per_step == expected_bytes_per_step(32, tokens)

    buf.compute_returns_and_advantage(th.zeros(2), np.zeros(2))
    stored = buf.observations["head_rgb"]
    batches = list(buf.get(batch_size=3))
    assert [b.actions.shape[0] for b in batches] == [3, 3, 2]
    b = batches[0]
    assert b.observations["head_rgb"].dtype == th.uint8 and b.observations["head_rgb"].shape == (3, 3, 32, 32)
    assert b.old_log_prob.shape == (3, tokens) and b.masks.shape == (3,)
    # the buffer was not copied or converted to serve the minibatches
    assert buf.observations["head_rgb"] is stored and stored.dtype == np.uint8
    all_heads = th.cat([x.observations["head_rgb"] for x in batches]).numpy()
    assert sorted(map(bytes, all_heads.reshape(8, -1))) == sorted(map(bytes, stored.reshape(8, -1)))


def test_bytes_per_step_at_224(toys):
    """The figure for the real camera size: about 0.45 MB per chunk step, ~1% over the raw uint8 pixels."""
    env, obs_space, act_space = contract_spaces(toys, 224)
    buf = LeanRolloutBuffer(1, obs_space, act_space, device="cpu", n_envs=1)
    fill(buf, env, 1, K * S.ACTION_DIM)
    pixels = 3 * 3 * 224 * 224
    assert buf.bytes_per_step == expected_bytes_per_step(224, K * S.ACTION_DIM)
    assert buf.bytes_per_step < 1.01 * pixels  # float32 images would be 4x
    print(f"bytes per step at 224x224 x 3 cameras: {buf.bytes_per_step:.0f} ({buf.storage()})")


def test_log_prob_width_adapts_and_chunk_level(toys):
    env, obs_space, act_space = contract_spaces(toys, 16)
    buf = LeanRolloutBuffer(2, obs_space, act_space, device="cpu", n_envs=1)
    fill(buf, env, 1, 1)
    assert buf.log_probs.shape == (2, 1, 1)
    buf.reset()
    obs = {k: np.asarray(v)[None] for k, v in env.reset(seed=0)[0].items()}
    a = act_space.sample()[None]
    with pytest.raises(ValueError, match="changed within a rollout"):
        buf.add(obs, a, np.zeros(1), np.zeros(1), th.zeros(1), th.zeros(1, 1))
        buf.add(obs, a, np.zeros(1), np.zeros(1), th.zeros(1), th.zeros(1, 5))


def test_box_observations_and_text_refused(toys):
    buf = LeanRolloutBuffer(2, spaces.Box(0, 255, (3, 8, 8), np.uint8), spaces.Box(-1, 1, (2,)), device="cpu")
    for _ in range(2):
        buf.add(np.ones((1, 3, 8, 8), np.uint8), np.zeros((1, 2)), np.zeros(1), np.zeros(1), th.zeros(1), th.zeros(1))
    buf.compute_returns_and_advantage(th.zeros(1), np.zeros(1))
    sample = next(buf.get())
    assert sample.observations.dtype == th.uint8 and sample.observations.shape == (2, 3, 8, 8)
    with pytest.raises(TypeError, match="SB3ObservationWrapper"):
        LeanRolloutBuffer(2, toys.ToyBehaviorEnv().observation_space, spaces.Box(-1, 1, (2,)))
