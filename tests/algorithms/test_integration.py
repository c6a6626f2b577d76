"""The trainers with the real pieces: OpenVLA-OFT (tiny preset) as the policy, and Behavior-R1Pro-v0 as the env."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from algorithms import GRPO, PPO, GroupResetVecEnv
from algorithms import metrics as M
from algorithms.callbacks import tile_observation
from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper
from tests.algorithms.recording import recorded


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory: keep them out of the checkout
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("algo", [PPO, GRPO])
def test_one_update_with_openvla_oft(toys, algo):
    """One rollout and one update with the OpenVLA-OFT policy (tiny preset): token-level log-probs,
    micro-batches, the value head in its own optimizer group."""
    vla = pytest.importorskip("vla_policies")
    kwargs = {"group_size": 2} if algo is GRPO else {"clip_range_vf": 0.2}
    model = algo(vla.OpenVLAOFTPolicy, toys.make_toy_vec_env(2, image_size=32), n_steps=3, batch_size=6,
                 micro_batch_size=2, n_epochs=1, seed=0, learning_rate=1e-3, value_lr=1e-2, clip_ratio_high=0.28,
                 policy_kwargs={"preset": "tiny"}, **kwargs)
    rec = recorded(model)
    groups = {g["name"]: g for g in model.policy.optimizer.param_groups}
    assert groups["value_head"]["lr"] == 1e-2 and len(groups["value_head"]["params"]) > 0
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(6)
    assert model._token_level and model.rollout_buffer.log_probs.shape == (3, 2, 8 * 23)
    assert model.rollout_buffer.observations["head_rgb"].dtype == np.uint8
    assert np.isfinite(rec.values[M.ACTOR_LOSS]).all() and rec.values[M.ACTOR_GRAD_NORM][-1] > 0
    changed = [k for k, v in model.policy.state_dict().items() if not th.equal(v, before[k])]
    assert any("language_model" in k for k in changed)
    if algo is GRPO:
        assert not any("value_head" in k for k in changed)
    else:
        assert any("value_head" in k for k in changed)


def make_behavior_env(**kwargs):
    pytest.importorskip("mujoco")
    import behavior_gym  # noqa: F401 - registers the id

    kwargs = {"task": "pick_and_place", "image_size": 48, "max_episode_steps": 16, **kwargs}
    return Monitor(SB3ObservationWrapper(ActionChunkWrapper(gym.make("Behavior-R1Pro-v0", **kwargs), chunk=8)))


def test_behavior_env_ppo_and_metrics(toys):
    venv = DummyVecEnv([make_behavior_env for _ in range(2)])
    model = PPO(toys.TinyTokenPolicy, venv, n_steps=4, batch_size=8, n_epochs=1, seed=0)
    rec = recorded(model)
    model.learn(8)
    assert rec.values[M.ENV_EPISODE_LEN] == [16.0]  # true length in env steps (2 chunks of 8)
    assert M.ENV_Q_SCORE in rec.values and M.ENV_SUCCESS_ONCE in rec.values
    assert np.isfinite(rec.values[M.ACTOR_LOSS]).all()


def test_behavior_env_group_reset_and_render_layout():
    venv = GroupResetVecEnv(DummyVecEnv([make_behavior_env for _ in range(4)]), group_size=2, seed=3)
    obs = venv.reset()
    for key in ("head_rgb", "wrist_rgb", "proprio"):
        np.testing.assert_array_equal(obs[key][0], obs[key][1])  # same seed, same initial state
        np.testing.assert_array_equal(obs[key][2], obs[key][3])
    # the video callback tiles terminal observations like the env's own render()
    frame = venv.env_method("render", indices=[0])[0]
    np.testing.assert_array_equal(frame, tile_observation({k: v[0] for k, v in obs.items()}))


@pytest.mark.parametrize("algo", [PPO, GRPO])
def test_end_to_end_openvla_oft_on_behavior(tmp_path, algo):
    """OpenVLA-OFT (tiny) on Behavior-R1Pro-v0 at 224 px: two iterations with TensorBoard logging, a video and a
    checkpoint that loads back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from algorithms import VideoRecorderCallback, make_logger

    vla = pytest.importorskip("vla_policies")
    venv = DummyVecEnv([lambda: make_behavior_env(image_size=224, max_episode_steps=32, obs_every=8)
                        for _ in range(2)])
    kwargs = {"group_size": 2} if algo is GRPO else {"clip_range_vf": 0.2, "value_lr": 1e-3}
    model = algo(vla.OpenVLAOFTPolicy, venv, n_steps=4, batch_size=8, micro_batch_size=2, n_epochs=1, seed=0,
                 learning_rate=1e-4, clip_ratio_high=0.28, policy_kwargs={"preset": "tiny"}, **kwargs)
    model.set_logger(make_logger(str(tmp_path)))
    video = VideoRecorderCallback(info_on_video=True)
    model.learn(16, callback=video)
    model.logger.close()
    tags = set(EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"])
    expected = set(M.SPEC_METRICS)
    if algo is GRPO:
        expected -= {M.ACTOR_VALUE_LOSS, M.ACTOR_VALUE_CLIP_RATIO}
    assert expected <= tags
    assert video.paths and all(os.path.getsize(p) > 0 for p in video.paths)
    model.save(tmp_path / "ckpt")
    loaded = algo.load(tmp_path / "ckpt.zip", env=venv)
    for k, v in model.policy.state_dict().items():
        assert th.equal(v, loaded.policy.state_dict()[k])
