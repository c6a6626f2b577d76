"""Lean rollout storage for VLA policies: uint8 images, instruction codes, per-token log-probs.

SB3's `DictRolloutBuffer` already allocates each observation key with its space's dtype, but it copies
every array once more at the first `get()` (`swap_and_flatten`) and keeps one log-prob per sample. This
buffer keeps the [n_steps, n_envs, ...] arrays and hands out flat *views* of them (no copy; sampling is
random, so the step-major order does not matter), stores one log-prob per action token when the policy
gives them, and keeps a loss mask and a trajectory id per sample for GRPO. Images stay uint8 all the
way to the policy: a minibatch is a uint8 tensor, and the policy converts it on its device.

Observations must be numeric: wrap `Behavior-R1Pro-v0` in `behavior_gym.wrappers.SB3ObservationWrapper`
(its `instruction` Text becomes uint8 ASCII codes).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer

from algorithms.objectives import compute_gae


class LeanRolloutBufferSamples(NamedTuple):
    observations: dict[str, th.Tensor] | th.Tensor  # images as uint8
    actions: th.Tensor  # [B, action_dim] float32
    old_values: th.Tensor  # [B]
    old_log_prob: th.Tensor  # [B, T]: T tokens per action (1 at chunk level)
    advantages: th.Tensor  # [B]
    returns: th.Tensor  # [B]
    masks: th.Tensor  # [B], 1 = the sample enters the loss


_SINGLE_KEY = "obs"


class LeanRolloutBuffer(DictRolloutBuffer):
    """Rollout buffer keeping observations in their own dtypes and log-probs per token.

    Args:
        buffer_size: steps per env in one rollout (SB3's `n_steps`; one step = one action chunk).
        observation_space: a Dict of Box / Discrete / MultiDiscrete / MultiBinary spaces, or one such space.
        action_space: the (chunked) action space.
        device: where minibatches go.
        gae_lambda, gamma: GAE parameters.
        n_envs: parallel envs.
        log_prob_dim: log-probs per sample (T). It adapts on the first `add` of a rollout to the width of
            the log-probs given, so trainers need not know it in advance.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        log_prob_dim: int = 1,
    ):
        self._single = not isinstance(observation_space, spaces.Dict)
        if self._single:
            observation_space = spaces.Dict({_SINGLE_KEY: observation_space})
        bad = [k for k, s in observation_space.spaces.items()
               if not isinstance(s, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary))]
        if bad:
            kinds = [type(observation_space[k]).__name__ for k in bad]
            raise TypeError(
                f"observation keys {bad} have spaces SB3 cannot store ({kinds}); "
                "wrap the env in behavior_gym.wrappers.SB3ObservationWrapper (instruction Text -> uint8 codes)"
            )
        self.log_prob_dim = int(log_prob_dim)
        super().__init__(buffer_size, observation_space, action_space, device=device, gae_lambda=gae_lambda,
                         gamma=gamma, n_envs=n_envs)

    def reset(self) -> None:
        super().reset()
        shape = (self.buffer_size, self.n_envs)
        self.actions = np.zeros((*shape, self.action_dim), dtype=np.float32)
        self.log_probs = np.zeros((*shape, self.log_prob_dim), dtype=np.float32)
        self.masks = np.ones(shape, dtype=np.float32)
        self.trajectory_ids = np.full(shape, -1, dtype=np.int64)

    # -- filling ----------------------------------------------------------------------------------
    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray] | np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
        mask: np.ndarray | None = None,
        trajectory_id: np.ndarray | None = None,
    ) -> None:
        """Store one step of all envs. `log_prob` is [n_envs] or [n_envs, T]; `mask` and `trajectory_id`
        are per env (default: 1 and -1)."""
        if self.full:
            raise RuntimeError("the rollout buffer is full; call reset() before adding")
        if self._single:
            obs = {_SINGLE_KEY: obs}
        lp = log_prob.detach().float().reshape(self.n_envs, -1).cpu().numpy()
        if lp.shape[1] != self.log_probs.shape[-1]:
            if self.pos != 0:
                raise ValueError(f"log-prob width changed within a rollout: {lp.shape[1]} vs "
                                 f"{self.log_probs.shape[-1]}")
            self.log_prob_dim = lp.shape[1]
            self.log_probs = np.zeros((self.buffer_size, self.n_envs, self.log_prob_dim), dtype=np.float32)
        for key, store in self.observations.items():
            store[self.pos] = np.asarray(obs[key]).reshape(store.shape[1:])
        self.actions[self.pos] = np.asarray(action).reshape(self.n_envs, self.action_dim)
        self.rewards[self.pos] = np.asarray(reward)
        self.episode_starts[self.pos] = np.asarray(episode_start)
        self.values[self.pos] = value.detach().float().reshape(-1).cpu().numpy()
        self.log_probs[self.pos] = lp
        self.masks[self.pos] = 1.0 if mask is None else np.asarray(mask, dtype=np.float32)
        self.trajectory_ids[self.pos] = -1 if trajectory_id is None else np.asarray(trajectory_id)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """Chunk-level GAE (see `algorithms.objectives.compute_gae`)."""
        last = last_values.detach().float().reshape(-1).cpu().numpy()
        self.advantages, self.returns = compute_gae(self.rewards, self.values, self.episode_starts, last, dones,
                                                    self.gamma, self.gae_lambda)

    # -- reading ----------------------------------------------------------------------------------
    def _flat(self, arr: np.ndarray) -> np.ndarray:
        """[n_steps, n_envs, ...] -> [n_steps * n_envs, ...] as a view (the arrays are contiguous)."""
        return arr.reshape(self.buffer_size * self.n_envs, *arr.shape[2:])

    def get(self, batch_size: int | None = None) -> Generator[LeanRolloutBufferSamples, None, None]:  # type: ignore[override]
        """Random minibatches of `batch_size` samples (all samples when None); no copy of the buffer."""
        assert self.full, "the rollout buffer is not full"
        n = self.buffer_size * self.n_envs
        indices = np.random.permutation(n)
        batch_size = n if batch_size is None else batch_size
        for start in range(0, n, batch_size):
            yield self._get_samples(indices[start : start + batch_size])

    def _to(self, array: np.ndarray) -> th.Tensor:
        # `array` is already a fresh copy (fancy indexing), so no second copy on the CPU.
        return th.as_tensor(array).to(self.device)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> LeanRolloutBufferSamples:  # type: ignore[override]
        obs = {key: self._to(self._flat(arr)[batch_inds]) for key, arr in self.observations.items()}
        return LeanRolloutBufferSamples(
            observations=obs[_SINGLE_KEY] if self._single else obs,
            actions=self._to(self._flat(self.actions)[batch_inds]),
            old_values=self._to(self._flat(self.values)[batch_inds]),
            old_log_prob=self._to(self._flat(self.log_probs)[batch_inds]),
            advantages=self._to(self._flat(self.advantages)[batch_inds]),
            returns=self._to(self._flat(self.returns)[batch_inds]),
            masks=self._to(self._flat(self.masks)[batch_inds]),
        )

    # -- accounting -------------------------------------------------------------------------------
    def storage(self) -> dict[str, int]:
        """Bytes held per array (observation keys prefixed with ``obs/``)."""
        out = {f"obs/{k}": v.nbytes for k, v in self.observations.items()}
        for name in ("actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages",
                     "masks", "trajectory_ids"):
            out[name] = getattr(self, name).nbytes
        return out

    @property
    def bytes_per_step(self) -> float:
        """Bytes stored per (step, env) sample, all arrays together."""
        return sum(self.storage().values()) / (self.buffer_size * self.n_envs)
