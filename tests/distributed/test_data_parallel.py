"""The data-parallel actor on CPU (gloo, 2 processes): DDP and FSDP gradients equal the one-process
gradients on the same batch, a 2-rank PPO / GRPO update equals the 1-rank update on the whole batch, and
the runner trains with the actor on 2 CPU ranks placed by Ray."""

from __future__ import annotations

import os

import numpy as np
import pytest
from gymnasium import spaces

from algorithms.buffers import LeanRolloutBuffer
from algorithms.distributed.config import ConfigError, check_run_config, to_run_config
from algorithms.distributed.data_parallel import buffer_shard, launch_local, load_buffer_shard
from algorithms.distributed.placement import Device, actor_rank_devices, parse_component_placement

from . import dp_workers

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment", "config")


def _check_toy(result: dict) -> None:
    assert result["n_grads"] > 0
    assert result["grad_diff"] <= 1e-5 * max(result["grad_scale"], 1e-3)
    assert result["loss_diff"] < 1e-6
    assert result["param_change"] > 1e-3  # the update did move the weights ...
    assert result["param_diff"] < 1e-4  # ... the same way on 2 ranks as in one process
    assert result["metric_diff"] < 1e-5  # logged metrics are global averages
    assert result["n_updates"] == (2, 2)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_ppo_gradients_and_update_equal_one_process(strategy):
    results = launch_local(dp_workers.toy_gradients_and_update, 2, strategy)
    for r in results:
        _check_toy(r)
    assert results[0]["param_diff"] == pytest.approx(results[1]["param_diff"])


def test_recomputed_log_probs_equal_one_process():
    for strategy in ("ddp", "fsdp"):
        for r in launch_local(dp_workers.toy_recomputed_update, 2, strategy):
            assert r["param_diff"] < 1e-4, strategy
            assert r["gap"] > 0.05 and r["gap_dp"] == pytest.approx(r["gap"], rel=1e-5), strategy


def test_desired_kl_adapts_the_lr_alike_on_every_rank():
    for r in launch_local(dp_workers.toy_desired_kl_update, 2, "ddp"):
        ref_factor, dp_factor = r["factors"]
        assert ref_factor < 1 and dp_factor == pytest.approx(ref_factor)
        assert r["param_diff"] < 1e-4


def test_grpo_update_with_an_unused_value_head_equals_one_process():
    for r in launch_local(dp_workers.toy_gradients_and_update, 2, "ddp", "grpo"):
        _check_toy(r)
        assert r["n_grads"] == 4  # body and action head; the value head gets no gradient


def test_openvla_oft_lora_gradients_equal_one_process():
    """The tiny OpenVLA-OFT with LoRA (unused trainable parameters: the last vision block), DDP and FSDP
    (each transformer layer its own unit)."""
    for strategy in ("ddp", "fsdp"):
        for r in launch_local(dp_workers.vla_gradients, 2, strategy):
            assert 0 < r["n_grads"] < r["n_trainable"]
            assert r["grad_diff"] <= 1e-5 * r["grad_scale"], strategy


def test_buffer_shards_are_the_env_columns():
    obs_space = spaces.Dict({"rgb": spaces.Box(0, 255, (3, 4, 4), np.uint8), "x": spaces.Box(-1, 1, (2,))})
    act_space = spaces.Box(-1, 1, (3,))
    full = LeanRolloutBuffer(5, obs_space, act_space, device="cpu", n_envs=4)
    rng = np.random.default_rng(0)
    full.observations["rgb"][:] = rng.integers(0, 255, full.observations["rgb"].shape)
    full.advantages = rng.normal(size=(5, 4)).astype(np.float32)
    full.returns = rng.normal(size=(5, 4)).astype(np.float32)
    full.pos, full.full = 5, True
    part = LeanRolloutBuffer(5, obs_space, act_space, device="cpu", n_envs=2)
    load_buffer_shard(part, buffer_shard(full, 1, 2))
    np.testing.assert_array_equal(part.observations["rgb"], full.observations["rgb"][:, 2:])
    np.testing.assert_array_equal(part.advantages, full.advantages[:, 2:])
    assert len(list(part.get(5))) == 2
    with pytest.raises(ValueError, match="cannot be shared evenly by 3 actor ranks"):
        buffer_shard(full, 0, 3)


def test_actor_ranks_of_a_placement():
    gpus = parse_component_placement({"env": "0-3", "rollout": "4-7", "actor": "0-7"}, 1, 8)
    assert actor_rank_devices(gpus) == [Device(0, g) for g in range(8)]
    cpus = parse_component_placement({"env,rollout,actor": "all"}, 2, 0)
    assert actor_rank_devices(cpus, 2) == [Device(0), Device(0), Device(1), Device(1)]


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.abspath(CONFIG_DIR), version_base="1.3"):
        return compose("behavior_ppo_openvlaoft_embedded", overrides)


def test_bad_data_parallel_configs():
    c = to_run_config(_compose(["actor.strategy=zero3", "actor.num_cpu_ranks=3", "env.train.total_num_envs=4"]))
    with pytest.raises(ConfigError) as err:
        check_run_config(c, gpus_per_node=0)
    assert set(err.value.keys) >= {"actor.strategy", "env.train.total_num_envs", "actor.global_batch_size"}
    c = to_run_config(_compose(["actor.num_cpu_ranks=2"]))
    with pytest.raises(ConfigError, match="only for clusters without GPUs"):
        check_run_config(c, gpus_per_node=2)


def test_ray_placed_run_with_the_actor_on_two_cpu_ranks(tmp_path, tmp_path_factory):
    from algorithms.distributed.runner import launch

    from .conftest import _ray

    ray = _ray(tmp_path_factory, num_cpus=2)
    try:
        c = to_run_config(_compose([
            "actor.num_cpu_ranks=2", "actor.strategy=ddp", "runner.max_epochs=2", "runner.save_interval=0",
            f"runner.logger.log_path={tmp_path}", "video_cfg.save_video=false", "env.train.total_num_envs=4",
            "env.train.max_steps_per_rollout_epoch=32", "actor.global_batch_size=16", "actor.micro_batch_size=4",
            "algorithm.update_epoch=1", "rollout.pipeline_stage_num=1"]))
        placement = check_run_config(c, gpus_per_node=0)
        summary = launch(c, placement, str(tmp_path))
        assert summary["global_step"] == 2 and summary["actor_ranks"] == 2
        assert os.path.isfile(summary["final_checkpoint"])
        log = open(os.path.join(tmp_path, "run_embodiment.log")).read()
        assert "data-parallel actor (ddp): 2 ranks" in log
    finally:
        ray.shutdown()
