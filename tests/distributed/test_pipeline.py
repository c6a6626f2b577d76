"""Pipelined PPO/GRPO on Ray env workers: every prefetched action is used, training goes on after an
env worker is killed mid-rollout (its episodes kept out of the update), rollout workers get the weights."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from algorithms.distributed.pipeline import PipelinedGRPO, PipelinedPPO
from algorithms.distributed.vec_env import RayVecEnv

from .conftest import small_spec

POLICY = {"preset": "tiny", "torch_dtype": "float32", "config_overrides": {"image_sizes": [28, 28]}}
TRAIN = {"n_steps": 4, "batch_size": 8, "micro_batch_size": 4, "n_epochs": 1, "seed": 0, "policy_kwargs": POLICY}


@pytest.fixture(autouse=True)
def one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def make_venv(stages, **spec):
    return RayVecEnv(small_spec(**spec), 4, [{"num_cpus": 0}] * 2, num_stages=stages, max_restarts=3)


class Record(BaseCallback):
    """Kills env worker 1 at chunk step `kill_at`; keeps the loss masks of every rollout."""

    def __init__(self, kill_at=None):
        super().__init__()
        self.kill_at, self.masks = kill_at, []

    def _on_step(self):
        if self.kill_at is not None and self.num_timesteps == self.kill_at:
            import ray

            ray.kill(self.model.ray_venv.workers[1])
        return True

    def _on_rollout_end(self):
        self.masks.append(self.model.rollout_buffer.masks.copy())


def test_pipelined_ppo_uses_every_prefetched_action(ray_cpu):
    from vla_policies import OpenVLAOFTPolicy

    venv = make_venv(stages=2)
    try:
        model = PipelinedPPO(OpenVLAOFTPolicy, venv, **TRAIN)
        calls = []
        act = model._act
        model._act = lambda obs: calls.append(len(obs["proprio"])) or act(obs)
        model.learn(2 * 4 * 4, log_interval=None)
        assert model.global_step == 2 and model.num_timesteps == 32
        # 2 stages x 4 steps x 2 rollouts, 2 envs each: the actions computed for a stage while the other
        # stepped were all used (a wasted prefetch would make more calls)
        assert calls == [2] * 16
    finally:
        venv.close()


def test_training_goes_on_after_an_env_worker_is_killed(ray_cpu, caplog):
    from vla_policies import OpenVLAOFTPolicy

    venv = make_venv(stages=2, max_episode_steps=96)  # episodes of 12 chunks: none ends in this test
    try:
        model = PipelinedPPO(OpenVLAOFTPolicy, venv, **TRAIN)
        record = Record(kill_at=4 * 6)  # after the second step of the second rollout
        with caplog.at_level("WARNING"):
            model.learn(3 * 4 * 4, callback=record, log_interval=None)
        assert model.global_step == 3 and sum(venv.restarts) == 1
        # Worker 1 (envs 2, 3) dies during the third step of rollout 2. Their episodes began in rollout 1
        # (already trained on): steps 0-2 of rollout 2 are dropped, step 3 starts new episodes.
        masks = record.masks[1]
        assert masks[:3, 2:].sum() == 0 and masks[3, 2:].all() and masks[:, :2].all()
        assert record.masks[0].all() and record.masks[2].all()
        assert model.discarded_steps == 6
        assert "env worker 1" in caplog.text and "died" in caplog.text and "training goes on" in caplog.text
    finally:
        venv.close()


def test_pipelined_grpo_drops_the_whole_group_of_a_lost_member(ray_cpu):
    from vla_policies import OpenVLAOFTPolicy

    venv = make_venv(stages=2, max_episode_steps=16)  # episodes of 2 chunks
    try:
        model = PipelinedGRPO(OpenVLAOFTPolicy, venv, group_size=2, **TRAIN)
        record = Record(kill_at=4 * 5)  # first step of rollout 2: envs 2, 3 (worker 1) lose their episode
        model.learn(2 * 4 * 4, callback=record, log_interval=None)
        assert model.global_step == 2
        assert record.masks[0].sum() > 0  # finished groups are trained on
        # Envs 2 and 3 (one group) lost their episode at step 0 of rollout 2: that group-episode is masked.
        assert record.masks[1][0, 2:].sum() == 0
    finally:
        venv.close()


def test_rollout_workers_act_with_the_trainers_weights(ray_cpu):
    import ray
    from stable_baselines3.common.utils import obs_as_tensor

    from algorithms.distributed.rollout_worker import RolloutGroup, RolloutWorker
    from vla_policies import OpenVLAOFTPolicy

    venv = make_venv(stages=1)
    try:
        model = PipelinedPPO(OpenVLAOFTPolicy, venv, **TRAIN)
        workers = [ray.remote(RolloutWorker).options(num_cpus=0).remote(
            OpenVLAOFTPolicy, model.observation_space, model.action_space, model.policy_kwargs, token_level=True,
            num_threads=1) for _ in range(2)]
        model.rollout_group = group = RolloutGroup(workers)
        model.learn(2 * 4 * 4, log_interval=None)
        assert group.version == 1  # synced before the first rollout (full) and after the first update
        venv.seed(1)
        obs = venv.reset()
        _, values, log_prob = group.act(obs)
        with th.no_grad():
            expected = model.policy.predict_values(obs_as_tensor(obs, "cpu")).reshape(-1)
        assert log_prob.shape == (4, 8 * 23)
        assert group.version != model.global_step  # trained once more since the last sync
        group.sync(model.policy, model.global_step)
        _, values, _ = group.act(obs)
        np.testing.assert_allclose(values.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
        group.close()
    finally:
        venv.close()


def test_an_unchanged_sb3_trainer_uses_the_ray_vec_env(ray_cpu):
    """algorithms.PPO as it is (SB3's loop, no pipelining) on Ray env workers, stages or not."""
    from algorithms import PPO
    from vla_policies import OpenVLAOFTPolicy

    venv = make_venv(stages=2)
    try:
        model = PPO(OpenVLAOFTPolicy, venv, **TRAIN)
        model.learn(4 * 4, log_interval=None)
        assert model.num_timesteps == 16 and venv.num_steps == 4
    finally:
        venv.close()
