"""Checkpoints: resuming continues with the same state; a crash while saving keeps the old checkpoint."""

import copy
import multiprocessing
import os

import numpy as np
import pytest
import torch as th
from stable_baselines3.common import save_util
from stable_baselines3.common.logger import Logger

from algorithms import GRPO, PPO
from algorithms.ppo import capture_rng_state, restore_rng_state


def quiet(model):
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def make_ppo(toys):
    return quiet(PPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(4), n_steps=8, batch_size=16, n_epochs=2, seed=0,
                     learning_rate=1e-2, clip_ratio_high=0.28, value_lr=3e-2, micro_batch_size=4))


def params(model):
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def assert_same(p, q):
    assert p.keys() == q.keys()
    for k in p:
        assert th.equal(p[k], q[k]), k


def assert_same_optimizer(a, b):
    sa, sb = a.policy.optimizer.state_dict(), b.policy.optimizer.state_dict()
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for key in sa["state"][i]:
            assert th.equal(sa["state"][i][key], sb["state"][i][key])


def test_resume_continues_with_the_same_state(toys, tmp_path):
    a = make_ppo(toys)
    a.learn(2 * 32)
    a.save(tmp_path / "ckpt")  # SB3 adds .zip
    saved_rng = capture_rng_state()
    b = quiet(PPO.load(tmp_path / "ckpt.zip", env=toys.make_toy_vec_env(4)))

    assert_same(params(a), params(b))
    assert_same_optimizer(a, b)
    assert (b.num_timesteps, b._n_updates) == (a.num_timesteps, a._n_updates)
    assert b.clip_ratio_high(1.0) == 0.28 and b.value_lr == 3e-2 and b.micro_batch_size == 4
    assert np.array_equal(np.random.get_state()[1], saved_rng["numpy"][1])  # RNG as it was at save time
    assert th.equal(th.get_rng_state(), saved_rng["torch"])

    # the same rollout gives the same update in both (optimizer moments, schedules and RNG all restored)
    b.rollout_buffer = copy.deepcopy(a.rollout_buffer)
    a.train()
    restore_rng_state(saved_rng)
    b.train()
    assert_same(params(a), params(b))

    b.learn(32, reset_num_timesteps=False)
    assert b.num_timesteps == a.num_timesteps + 32


def test_grpo_resume_keeps_the_group_seed_sequence(toys, tmp_path):
    a = quiet(GRPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(4), group_size=2, n_steps=6, batch_size=12, seed=0))
    a.learn(48)
    a.save(tmp_path / "grpo.zip")
    b = quiet(GRPO.load(tmp_path / "grpo.zip", env=toys.make_toy_vec_env(4)))
    assert b.group_size == 2
    assert a.env._seed_rng.integers(1 << 30) == b.env._seed_rng.integers(1 << 30)


def _die_while_saving(model, path):
    def dying_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        os._exit(3)

    save_util.th.save = dying_save
    model.save(path)


def test_crash_while_saving_leaves_the_old_checkpoint_loadable(toys, tmp_path, monkeypatch):
    model = make_ppo(toys)
    model.learn(32)
    path = tmp_path / "ckpt.zip"
    model.save(path)
    old = params(model)
    model.learn(32)
    assert any(not th.equal(v, old[k]) for k, v in params(model).items())

    # an error in the middle of writing (disk full, ...)
    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(save_util.th, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        model.save(path)
    monkeypatch.undo()
    assert_same(params(quiet(PPO.load(path))), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.zip"]  # the temporary file is cleaned up

    # the process dies in the middle of writing (no cleanup runs at all)
    proc = multiprocessing.get_context("fork").Process(target=_die_while_saving, args=(model, path))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 3
    assert_same(params(quiet(PPO.load(path))), old)

    # and a completed save replaces it
    model.save(path)
    assert_same(params(quiet(PPO.load(path))), params(model))


def _frozen_body_policy(toys):
    class FrozenBodyPolicy(toys.TinyTokenPolicy):
        """The tiny policy with a frozen, deterministically initialised body (a stand-in for a base model
        loaded from `model_path`): only the action head and the value head train, as with LoRA."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            gen = th.Generator().manual_seed(123)
            with th.no_grad():
                for p in self.body.parameters():
                    p.copy_(th.randn(p.shape, generator=gen) * 0.3)
            self.body.requires_grad_(False)

    return FrozenBodyPolicy


def test_trainable_only_checkpoint(toys, tmp_path):
    policy_class = _frozen_body_policy(toys)
    a = quiet(PPO(policy_class, toys.make_toy_vec_env(4), n_steps=8, batch_size=16, n_epochs=2, seed=0,
                  learning_rate=1e-2, value_lr=3e-2))
    a.learn(2 * 32)
    trainable = a.trainable_parameter_names()
    assert trainable and not any(n.startswith("body.") for n in trainable)
    assert any(n.startswith("value_head.") for n in trainable)
    a.save(tmp_path / "full")
    a.save(tmp_path / "lora", trainable_only=True)
    _, saved, _ = save_util.load_from_zip_file(tmp_path / "lora.zip")
    assert set(saved["policy"]) == trainable  # no frozen weights, no buffers
    _, full, _ = save_util.load_from_zip_file(tmp_path / "full.zip")
    assert set(full["policy"]) > trainable
    assert not hasattr(a, "_trainable_only_checkpoint")

    b = quiet(PPO.load(tmp_path / "lora.zip", env=toys.make_toy_vec_env(4)))
    assert_same(params(a), params(b))  # trainable from the checkpoint, frozen body rebuilt alike
    assert_same_optimizer(a, b)
    assert not hasattr(b, "_trainable_only_checkpoint")
    b.save(tmp_path / "again")  # a later plain save is a full one
    _, again, _ = save_util.load_from_zip_file(tmp_path / "again.zip")
    assert set(again["policy"]) == set(full["policy"])

    c = quiet(PPO(policy_class, toys.make_toy_vec_env(4), n_steps=8, batch_size=16, seed=1))
    c.set_parameters(str(tmp_path / "lora.zip"))  # from a path, too
    assert_same(params(a), params(c))

    d = quiet(PPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(4), n_steps=8, batch_size=16, seed=1))
    with pytest.raises(ValueError, match="trainable parameters missing"):
        d.set_parameters(str(tmp_path / "lora.zip"))  # body trainable here, but not in the checkpoint
