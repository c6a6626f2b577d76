"""Rollout (inference) workers: copies of the policy on the rollout devices that compute actions.

When `cluster.component_placement` gives rollout other devices than the actor, each rollout device
gets a `RolloutWorker` (a Ray actor) holding its own copy of the policy. The trainer sends it a batch
of observations and gets back what SB3's rollout loop needs: actions, values and log-probs (per
token for token-level PPO). After every update the trainer pushes its weights (`RolloutGroup.sync`):
the trainable tensors (with LoRA: the adapters and the value head), plus, the first time, the frozen
ones too unless both sides loaded them from the same checkpoint; through Ray's object store, once
for all workers.

With `fast_inference` (`rollout.fast_inference`) a worker runs its copy through
`enable_fast_inference`: compiled layer regions, CUDA graphs, fused q/k/v and gate/up projections,
optionally FP8 GEMMs. Weight syncs need nothing more: `load_state_dict` copies into the existing
tensors, so the fused copies see the new version counters and are refreshed before the next pass,
FP8 layers quantize the incoming weights into their buffers, and captured graphs read the parameters
where they are. LoRA-wrapped layers are neither fused nor quantized; their adapters load as they do
into an eager copy. The actions' log-probs then come from a forward pass that differs slightly from
the trainer's eager one: PPO's `recompute_log_probs` replaces them before the update.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th

from algorithms.distributed.cluster import kill_actors


class RolloutWorker:
    """One copy of the policy for inference.

    Args:
        policy_class, observation_space, action_space, policy_kwargs: how the trainer built its policy.
        token_level: ask the policy for per-token log-probs (`forward(obs, per_token=True)`).
        bf16: bfloat16 autocast of the forward pass.
        num_threads: torch CPU threads (None: torch's default).
        fast_inference: arguments of the policy's `enable_fast_inference` (None: eager).
    """

    def __init__(self, policy_class: type, observation_space, action_space, policy_kwargs: dict[str, Any],
                 token_level: bool = False, bf16: bool = False, num_threads: int | None = None,
                 fast_inference: dict[str, Any] | None = None):
        if num_threads:
            th.set_num_threads(num_threads)
        self.device = th.device("cuda" if th.cuda.is_available() else "cpu")
        self.policy = policy_class(observation_space, action_space, lambda _: 0.0, **policy_kwargs).to(self.device)
        self.policy.set_training_mode(False)
        if fast_inference is not None:
            self.policy.enable_fast_inference(**fast_inference)
        self.token_level = token_level
        self.bf16 = bf16
        self.version = -1

    def ping(self) -> tuple[int, str, str]:
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", ""), str(self.device)

    def load_weights(self, state: dict[str, th.Tensor], version: int) -> int:
        # in place (no assign=True): what fast inference keeps (fused copies, FP8 buffers, graphs) stays valid
        missing, unexpected = self.policy.load_state_dict(state, strict=False)
        if unexpected:
            raise RuntimeError(f"weights the rollout policy does not have: {unexpected[:5]}")
        self.version = version
        return version

    @th.no_grad()
    def act(self, obs: dict[str, np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        from stable_baselines3.common.utils import obs_as_tensor

        with th.autocast(device_type=self.device.type, dtype=th.bfloat16, enabled=self.bf16):
            obs_tensor = obs_as_tensor(obs, self.device)
            if self.token_level:
                actions, values, log_prob = self.policy(obs_tensor, per_token=True)
            else:
                actions, values, log_prob = self.policy(obs_tensor)
        log_prob = log_prob.float()
        log_prob = log_prob if log_prob.dim() == 2 else log_prob[:, None]
        return (actions.float().cpu().numpy(), values.float().reshape(-1).cpu().numpy(), log_prob.cpu().numpy(),
                self.version)


class RolloutGroup:
    """The trainer's handle on its rollout workers: splits a batch across them and syncs weights.

    Args:
        workers: Ray handles of `RolloutWorker` actors.
        full_first_sync: push every tensor the first time (the policies were initialised at random);
            False when trainer and workers loaded the same checkpoint, so the frozen weights already agree.
    """

    def __init__(self, workers: Sequence[Any], full_first_sync: bool = True):
        self.workers = list(workers)
        self.version = -1
        self._synced_once = not full_first_sync

    def sync(self, policy: th.nn.Module, version: int) -> None:
        """Push the trainer's weights (the trainable ones; all of them on a full first sync)."""
        import ray  # here, not at the top: the worker class itself needs no Ray (tests, benchmarks)

        if self._synced_once:
            trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
            state = {k: v.detach().cpu() for k, v in policy.state_dict().items() if k in trainable}
        else:
            state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        ref = ray.put(state)
        ray.get([w.load_weights.remote(ref, version) for w in self.workers])
        self._synced_once = True
        self.version = version

    def act(self, obs: dict[str, np.ndarray] | np.ndarray) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, values [n] and log-probs [n, T] for a batch, computed by the workers in parallel."""
        import ray

        n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
        chunks = [c for c in np.array_split(np.arange(n), len(self.workers)) if len(c)]
        refs = [w.act.remote({k: v[c] for k, v in obs.items()} if isinstance(obs, dict) else obs[c])
                for w, c in zip(self.workers, chunks)]
        parts = ray.get(refs)
        stale = [v for *_, v in parts if v != self.version]
        if stale:
            raise RuntimeError(f"a rollout worker acted with weights version {stale[0]}, the trainer is at "
                               f"{self.version}")
        actions, values, log_prob = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return th.from_numpy(actions), th.from_numpy(values), th.from_numpy(log_prob)

    def close(self) -> None:
        kill_actors(self.workers)
        self.workers = []
