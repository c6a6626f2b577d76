"""Rank functions of the data-parallel actor tests (run by `launch_local` in spawned processes, so they
live in an importable module). Each rank builds the one-process trainer on the whole batch (4 envs)
*and* the data-parallel trainer on its shard (4 / W envs) from the same seed, so it can compare the two
itself and return the differences."""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.logger import KVWriter, Logger

from algorithms.distributed.data_parallel import (
    DataParallelGRPO,
    DataParallelPPO,
    buffer_shard,
    load_buffer_shard,
)
from algorithms.grpo import GRPO
from algorithms.ppo import PPO

N_ENVS, N_STEPS = 4, 6


class Recorder(KVWriter):
    """Keeps every dumped metric."""

    def __init__(self):
        self.values: dict[str, float] = {}

    def write(self, key_values, key_excluded, step=0):
        self.values.update({k: float(v) for k, v in key_values.items() if isinstance(v, (int, float))})

    def close(self):
        pass


def _recorded(model) -> Recorder:
    rec = Recorder()
    model.set_logger(Logger(None, [rec]))
    return rec


def _collect(model, n_steps: int) -> None:
    """One rollout of `n_steps` into the model's buffer (with SB3's setup of the first observation)."""
    _, callback = model._setup_learn(n_steps * model.n_envs)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_steps)


def _max_diff(a: dict[str, th.Tensor], b: dict[str, th.Tensor]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _toy_pair(rank: int, world_size: int, strategy: str, algo: str, **kw):
    from tests.algorithms.conftest import TinyTokenPolicy, make_toy_vec_env

    common = dict(n_steps=N_STEPS, batch_size=N_STEPS * N_ENVS, n_epochs=2, micro_batch_size=5, learning_rate=1e-2,
                  seed=0, device="cpu", **kw)
    if algo == "grpo":
        common.update(group_size=2, group_seed=0)
    ref_cls, dp_cls = (GRPO, DataParallelGRPO) if algo == "grpo" else (PPO, DataParallelPPO)
    th.manual_seed(0)
    ref = ref_cls(TinyTokenPolicy, make_toy_vec_env(N_ENVS), **common)
    th.manual_seed(0)
    dp = dp_cls(TinyTokenPolicy, make_toy_vec_env(N_ENVS // world_size), strategy=strategy, **common)
    # a rollout of the whole batch, with some samples masked out, shared out by env columns
    _collect(ref, N_STEPS)
    rng = np.random.default_rng(1)
    ref.rollout_buffer.masks *= (rng.random(ref.rollout_buffer.masks.shape) > 0.2).astype(np.float32)
    load_buffer_shard(dp.rollout_buffer, buffer_shard(ref.rollout_buffer, rank, world_size))
    return ref, dp


def toy_gradients_and_update(rank: int, world_size: int, strategy: str, algo: str = "ppo") -> dict[str, float]:
    """Gradients of one minibatch and the parameters after a 2-epoch update: data-parallel vs one process."""
    ref, dp = _toy_pair(rank, world_size, strategy, algo)
    n_ref = ref.rollout_buffer.buffer_size * ref.rollout_buffer.n_envs
    n_dp = dp.rollout_buffer.buffer_size * dp.rollout_buffer.n_envs
    ref.policy.set_training_mode(True)
    ref_stats = ref._backward_minibatch(ref.rollout_buffer._get_samples(np.arange(n_ref)), 0.2, 0.28, 0.2)
    ref_grads = {n: p.grad.clone() for n, p in ref.policy.named_parameters() if p.grad is not None}
    dp_stats = dp._backward_minibatch(dp.rollout_buffer._get_samples(np.arange(n_dp)), 0.2, 0.28, 0.2)
    dp_grads = dp.gradients()
    out = {"grad_diff": _max_diff(ref_grads, dp_grads),
           "grad_scale": max(float(g.abs().max()) for g in ref_grads.values()),
           "loss_diff": abs(ref_stats["loss"] - dp_stats["loss"]), "n_grads": len(dp_grads)}

    rec_ref, rec_dp = _recorded(ref), _recorded(dp)
    before = {n: p.detach().clone() for n, p in ref.policy.named_parameters()}
    ref.train()
    dp.train()
    ref_params = dict(ref.policy.named_parameters())
    dp_params = dict(dp.policy.named_parameters())  # the acting copy (FSDP: gathered after the update)
    out["param_diff"] = _max_diff({k: v.detach() for k, v in ref_params.items()},
                                  {k: v.detach() for k, v in dp_params.items()})
    out["param_change"] = max(float((ref_params[k].detach() - before[k]).abs().max()) for k in before)
    out["metric_diff"] = max(abs(rec_ref.values[k] - rec_dp.values[k])
                             for k in ("actor/loss", "actor/approx_kl", "actor/grad_norm", "actor/entropy"))
    out["n_updates"] = (ref._n_updates, dp._n_updates)
    return out


def toy_desired_kl_update(rank: int, world_size: int, strategy: str) -> dict[str, float]:
    """desired_kl adapts the lr from the global minibatch's KL: every rank lowers it as one process does,
    and the 2-rank update equals the 1-rank one."""
    ref, dp = _toy_pair(rank, world_size, strategy, "ppo", desired_kl=1e-7)
    _recorded(ref), _recorded(dp)
    ref.train()
    dp.train()
    return {"param_diff": _max_diff({k: v.detach() for k, v in ref.policy.named_parameters()},
                                    {k: v.detach() for k, v in dp.policy.named_parameters()}),
            "factors": (ref._kl_lr_factor, dp._kl_lr_factor)}


def toy_recomputed_update(rank: int, world_size: int, strategy: str) -> dict[str, float]:
    """recompute_log_probs on rollout log-probs off by a known amount: the 2-rank update and its gap metric
    equal the one-process ones (the recomputation runs through the wrapped module, as the loss)."""
    ref, dp = _toy_pair(rank, world_size, strategy, "ppo", recompute_log_probs=True)
    buf = ref.rollout_buffer
    buf.log_probs += np.random.default_rng(2).uniform(-0.2, 0.2, size=buf.log_probs.shape).astype(np.float32)
    load_buffer_shard(dp.rollout_buffer, buffer_shard(buf, rank, world_size))
    rec_ref, rec_dp = _recorded(ref), _recorded(dp)
    ref.train()
    dp.train()
    out = {"param_diff": _max_diff({k: v.detach() for k, v in ref.policy.named_parameters()},
                                   {k: v.detach() for k, v in dp.policy.named_parameters()})}
    out["gap"], out["gap_dp"] = rec_ref.values["rollout/log_prob_gap"], rec_dp.values["rollout/log_prob_gap"]
    return out


def vla_gradients(rank: int, world_size: int, strategy: str) -> dict[str, float]:
    """Gradients of the tiny OpenVLA-OFT (small images, LoRA) on one batch: data-parallel vs one process."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from tests.vla_policies.vla_helpers import TinyBehaviorEnv
    from vla_policies import OpenVLAOFTPolicy

    kwargs = dict(preset="tiny", lora_rank=4, config_overrides={"image_sizes": [28, 28], "num_images_in_input": 1,
                                                               "num_action_chunks": 1})
    common = dict(n_steps=2, batch_size=8, n_epochs=1, micro_batch_size=2, seed=0, device="cpu",
                  policy_kwargs=kwargs, ratio_level="token")
    make = lambda n: DummyVecEnv([lambda: TinyBehaviorEnv(chunk=1, image_size=28) for _ in range(n)])
    th.manual_seed(0)
    ref = PPO(OpenVLAOFTPolicy, make(4), **common)
    th.manual_seed(0)
    dp = DataParallelPPO(OpenVLAOFTPolicy, make(4 // world_size), strategy=strategy, **common)
    _collect(ref, 2)
    load_buffer_shard(dp.rollout_buffer, buffer_shard(ref.rollout_buffer, rank, world_size))
    ref.policy.set_training_mode(True)
    ref._backward_minibatch(ref.rollout_buffer._get_samples(np.arange(8)), 0.2, 0.28, 0.2)
    ref_grads = {n: p.grad.clone() for n, p in ref.policy.named_parameters() if p.grad is not None}
    dp._backward_minibatch(dp.rollout_buffer._get_samples(np.arange(8 // world_size)), 0.2, 0.28, 0.2)
    dp_grads = dp.gradients()
    return {"grad_diff": _max_diff(ref_grads, dp_grads),
            "grad_scale": max(float(g.abs().max()) for g in ref_grads.values()), "n_grads": len(dp_grads),
            "n_trainable": sum(p.requires_grad for p in ref.policy.parameters())}
