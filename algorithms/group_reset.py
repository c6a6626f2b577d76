"""Grouped resets for GRPO: G envs start each episode from the same seeded initial state.

`GroupResetVecEnv` wraps an SB3 VecEnv whose envs are in groups of G consecutive indices. Each time a
group starts an episode, one seed is drawn and every member is reset with `reset(seed=that_seed)`, so
an env whose `reset(seed=...)` is deterministic (as `Behavior-R1Pro-v0`'s is) gives the G members
identical initial states; their trajectories then differ only through the policy's sampling.

Resets stay partial: a group resets as soon as *its* members have all finished, in the step where the
last one ends, while every other group carries on with its episodes. A member that finishes before the
rest of its group waits: its steps until the group resets are marked idle (reward 0, done False,
``info = {"group_idle": True}``) and the trainer keeps them out of the loss. (RLinf instead resets *all*
envs at the start of each rollout epoch, or all of them when one is done with `auto_reset`, and its
Behavior env has no group logic: same initial states only come from using one task instance.)

The wrapper also sums each member's rewards over its trajectory. When a group resets, its finished
trajectories' returns and success flags go to `completed[trajectory_id]`; `trajectory_id` numbers the
group-episodes and is shared by the G members of one group-episode.

Note: SB3's vector envs auto-reset a finished env at once, without a seed; a waiting member therefore
steps a throw-away episode (its data is masked) until its group's seeded reset. The wrapped VecEnv
must not transform observations (`env_method("reset")` returns raw observations).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

SUCCESS_KEYS = ("success_once", "success", "is_success")


def episode_success(info: Mapping[str, Any]) -> bool | None:
    """Whether a finished episode succeeded, from the first of `SUCCESS_KEYS` present in its final info
    (None when the info has none of them)."""
    for key in SUCCESS_KEYS:
        if key in info:
            return bool(info[key])
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


@dataclass
class GroupResult:
    """The G trajectories of one finished group-episode."""

    returns: np.ndarray  # [G] float64: undiscounted sums of (chunk) rewards
    success: np.ndarray  # [G] bool
    seed: int


class GroupResetVecEnv(VecEnvWrapper):
    """Reset envs in groups of `group_size` consecutive indices to identical seeded initial states.

    Args:
        venv: an SB3 VecEnv (DummyVecEnv or SubprocVecEnv) with `num_envs` a multiple of `group_size`.
        group_size: G, envs per group.
        seed: seeds the generator of the per-group-episode reset seeds.
    """

    def __init__(self, venv: VecEnv, group_size: int, seed: int | None = None):
        super().__init__(venv)
        if group_size < 1 or venv.num_envs % group_size:
            raise ValueError(f"num_envs ({venv.num_envs}) must be a multiple of group_size ({group_size}); "
                             f"use {max(1, group_size)} x n_groups envs")
        self.group_size = int(group_size)
        self.n_groups = venv.num_envs // self.group_size
        self._seed_rng = np.random.default_rng(seed)
        n = venv.num_envs
        self.active = np.zeros(n, dtype=bool)
        self.group_seeds = np.full(self.n_groups, -1, dtype=np.int64)
        self.group_trajectory_ids = np.full(self.n_groups, -1, dtype=np.int64)
        self._next_trajectory_id = 0
        self._returns = np.zeros(n, dtype=np.float64)
        self._success = np.zeros(n, dtype=bool)
        self.completed: dict[int, GroupResult] = {}
        self.saw_success_info = False
        self._warned_mismatch = False

    # -- bookkeeping visible to the trainer -------------------------------------------------------
    def members(self, group: int) -> np.ndarray:
        return np.arange(group * self.group_size, (group + 1) * self.group_size)

    def trajectory_ids(self) -> np.ndarray:
        """The group-episode id each env is in now ([num_envs]; members of a group share it)."""
        return np.repeat(self.group_trajectory_ids, self.group_size)

    def pop_completed(self) -> dict[int, GroupResult]:
        """Take the results of the group-episodes finished since the last call."""
        out, self.completed = self.completed, {}
        return out

    def seed(self, seed: int | None = None):
        """Reseed the generator of the group reset seeds (the envs get their seeds at each group reset)."""
        self._seed_rng = np.random.default_rng(seed)
        return [seed] * self.num_envs

    # -- VecEnv API -------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        obs = self._empty_obs()
        self.completed = {}
        for g in range(self.n_groups):
            self._reset_group(g, obs)
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        was_active = self.active.copy()
        rewards = np.where(was_active, rewards, 0.0).astype(np.float32)
        dones = np.asarray(dones, dtype=bool) & was_active
        infos = list(infos)
        for i in np.flatnonzero(~was_active):
            infos[i] = {"group_idle": True}
        self._returns[was_active] += rewards[was_active]
        for i in np.flatnonzero(dones):
            self.active[i] = False
            success = episode_success(infos[i])
            self.saw_success_info |= success is not None
            self._success[i] = bool(success)
        for g in np.unique(np.flatnonzero(dones) // self.group_size):
            members = self.members(g)
            if self.active[members].any():
                continue
            self.completed[int(self.group_trajectory_ids[g])] = GroupResult(
                self._returns[members].copy(), self._success[members].copy(), int(self.group_seeds[g]))
            self._reset_group(g, obs)
            for i in members:
                infos[i] = dict(infos[i], group_reset=True)
        return obs, rewards, dones, infos

    # -- helpers ----------------------------------------------------------------------------------
    def _reset_group(self, g: int, obs: VecEnvObs) -> None:
        seed = int(self._seed_rng.integers(0, 2**31 - 1))
        members = self.members(g)
        results = self.venv.env_method("reset", seed=seed, indices=members.tolist())
        for i, (o, _info) in zip(members, results):
            self._write_obs(obs, i, o)
        if not self._warned_mismatch and not all(_same(results[0][0], r[0]) for r in results[1:]):
            self._warned_mismatch = True
            warnings.warn(f"the members of group {g} were reset with the same seed ({seed}) but their initial "
                          "observations differ: GRPO's group baseline needs envs built alike (same task and "
                          "instance_id) whose reset(seed=...) is deterministic", stacklevel=2)
        self.active[members] = True
        self._returns[members] = 0.0
        self._success[members] = False
        self.group_seeds[g] = seed
        self.group_trajectory_ids[g] = self._next_trajectory_id
        self._next_trajectory_id += 1

    def _empty_obs(self) -> VecEnvObs:
        space = self.observation_space
        n = self.num_envs
        if isinstance(space, spaces.Dict):
            return {k: np.zeros((n, *s.shape), dtype=s.dtype) for k, s in space.spaces.items()}
        return np.zeros((n, *space.shape), dtype=space.dtype)

    @staticmethod
    def _write_obs(obs: VecEnvObs, i: int, single: Any) -> None:
        if isinstance(obs, dict):
            for k in obs:
                obs[k][i] = single[k]
        else:
            obs[i] = single
