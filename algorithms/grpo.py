"""GRPO for VLA policies: group-relative advantages over trajectories that share an initial state.

Envs run in groups of G (`GroupResetVecEnv`): every member of a group starts each episode from the
same seeded initial state. A trajectory's advantage is its return (the undiscounted sum of its chunk
rewards) minus its group's mean return, divided by the group's std when `normalize_std` (the
advantage is shared by every step and token of the trajectory). There is no critic: the policy's
values are neither stored nor trained. Optionally, groups whose members all succeeded or all failed
are dropped (`filter_groups`, SimpleVLA-RL's accuracy filter). The policy loss is PPO's clipped loss
(asymmetric clip, token-level ratios, micro-batches, bf16, ... — everything of `algorithms.PPO`).

Trajectories may span rollouts. A step enters the loss of the rollout in which its group-episode
finishes (all G members done); steps of group-episodes still running when a rollout ends are masked
out of that update (their later steps are trained once the group finishes), as are the steps members
spend waiting for their group. Choose `n_steps` of at least one episode (in chunks), ideally several,
so that most steps are used; `rollout/valid_fraction` reports the fraction that was.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from algorithms import metrics as M
from algorithms.buffers import LeanRolloutBuffer
from algorithms.group_reset import GroupResetVecEnv, GroupResult
from algorithms.objectives import group_filter_mask, grpo_advantages
from algorithms.ppo import PPO


class GRPO(PPO):
    """Group Relative Policy Optimization on SB3 (SPEC §6).

    Takes `algorithms.PPO`'s arguments (the value-function ones are unused) and:

    Args:
        group_size: G, envs per group; `n_envs` must be a multiple of it. The env is wrapped in
            `GroupResetVecEnv` unless it already is one.
        normalize_std: divide by the group's std (RLinf and SimpleVLA-RL do; Dr. GRPO does not).
        filter_groups: drop groups that all succeeded or all failed (success from the final info's
            `success_once`, `success` or `is_success`).
        group_seed: seeds the per-group reset seeds (default: `seed`).
        normalize_advantage: additionally normalise advantages over the rollout (default False: the
            group normalisation already scales them).
    """

    _use_value_loss = False

    def __init__(
        self,
        policy: str | type,
        env: Any,
        group_size: int = 8,
        *,
        normalize_std: bool = True,
        filter_groups: bool = False,
        group_seed: int | None = None,
        normalize_advantage: bool = False,
        vf_coef: float = 0.0,
        **kwargs: Any,
    ):
        if int(group_size) < 2:
            raise ValueError(f"GRPO needs groups of at least 2 envs (group_size={group_size}): the baseline of a "
                             "trajectory is the mean return of the others started from the same state")
        self.group_size = int(group_size)
        self.normalize_std = normalize_std
        self.filter_groups = filter_groups
        self.group_seed = group_seed
        self._warned_empty = self._warned_no_success = False
        super().__init__(policy, env, normalize_advantage=normalize_advantage, vf_coef=vf_coef, **kwargs)

    def _setup_model(self) -> None:
        if self.env is not None and not isinstance(self.env, GroupResetVecEnv):
            seed = self.group_seed if self.group_seed is not None else self.seed
            self.env = GroupResetVecEnv(self.env, self.group_size, seed=seed)
        super()._setup_model()
        if self.env is not None and self.group_seed is not None:
            self.env.seed(self.group_seed)  # set_random_seed(seed) above reseeded it with `seed`

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: LeanRolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """Step the grouped envs, recording which group-episode each step belongs to; at the end, give
        the steps of every finished group-episode their group-relative advantage."""
        if not isinstance(env, GroupResetVecEnv):
            raise TypeError("GRPO collects from a GroupResetVecEnv (GRPO wraps its env in one on construction)")
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        self._begin_rollout()
        callback.on_rollout_start()
        n_steps = 0
        while n_steps < n_rollout_steps:
            active, trajectory = env.active.copy(), env.trajectory_ids()
            actions, _values, log_probs, (new_obs, rewards, dones, infos) = self._timed_step(env, self._last_obs)
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            self._episode_stats.add_step(infos, dones)
            self._reward_sum += float(np.sum(rewards))
            n_steps += 1
            rollout_buffer.add(self._last_obs, actions, rewards, self._last_episode_starts,
                               th.zeros(env.num_envs), log_probs, mask=active, trajectory_id=trajectory)
            self._last_obs = new_obs
            self._last_episode_starts = dones | np.array([bool(info.get("group_reset")) for info in infos])

        self._assign_advantages(rollout_buffer, env.pop_completed())
        self._end_rollout(rollout_buffer)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _assign_advantages(self, buffer: LeanRolloutBuffer, completed: dict[int, GroupResult]) -> None:
        """Broadcast each finished trajectory's advantage (and return) onto its steps; mask the rest."""
        buffer.advantages = np.zeros_like(buffer.rewards)
        buffer.returns = np.zeros_like(buffer.rewards)
        ids = np.array(sorted(completed), dtype=np.int64)
        if ids.size == 0:
            buffer.masks[:] = 0.0
            self._group_stats = {M.ROLLOUT_FILTERED_GROUPS: 0.0}
            return
        returns = np.stack([completed[i].returns for i in ids])  # [n_groups, G]
        success = np.stack([completed[i].success for i in ids])
        advantages = grpo_advantages(returns, self.normalize_std)
        keep = np.ones(len(ids), dtype=bool)
        if self.filter_groups:
            if isinstance(self.env, GroupResetVecEnv) and not self.env.saw_success_info:
                if not self._warned_no_success:
                    self._warned_no_success = True
                    warnings.warn("filter_groups is on but the env's final infos carry no success flag "
                                  "(success_once / success / is_success); not filtering", stacklevel=2)
            else:
                keep = group_filter_mask(success)

        traj = buffer.trajectory_ids
        row = np.clip(np.searchsorted(ids, traj), 0, len(ids) - 1)
        member = np.broadcast_to(np.arange(buffer.n_envs) % self.group_size, traj.shape)
        valid = (ids[row] == traj) & keep[row] & (buffer.masks > 0)
        buffer.masks = valid.astype(np.float32)
        buffer.advantages = np.where(valid, advantages[row, member], 0.0).astype(np.float32)
        buffer.returns = np.where(valid, returns[row, member], 0.0).astype(np.float32)
        self._group_stats = {M.ROLLOUT_FILTERED_GROUPS: float(1.0 - keep.mean())}
        if keep.any():
            self._group_stats[M.ROLLOUT_RETURNS_MEAN] = float(returns[keep].mean())

    def _end_rollout(self, buffer: LeanRolloutBuffer) -> None:
        super()._end_rollout(buffer)
        for name, value in self._group_stats.items():
            self.logger.record(name, value)  # returns_mean: per trajectory rather than per step
        if buffer.masks.sum() == 0 and not self._warned_empty:
            self._warned_empty = True
            warnings.warn("no group finished its episodes within this rollout, so nothing can be trained on it; "
                          f"use n_steps (now {self.n_steps}) of at least the episode length in chunks",
                          stacklevel=2)

    # -- checkpoints: keep the group seed sequence going across a resume ---------------------------
    def save(self, path, exclude=None, include=None, trainable_only: bool = False) -> None:
        if isinstance(self.env, GroupResetVecEnv):
            self._group_rng_state = self.env._seed_rng.bit_generator.state
        try:
            super().save(path, exclude, include, trainable_only=trainable_only)
        finally:
            self.__dict__.pop("_group_rng_state", None)

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, print_system_info=False, force_reset=True,
             **kwargs):
        model = super().load(path, env=env, device=device, custom_objects=custom_objects,
                             print_system_info=print_system_info, force_reset=force_reset, **kwargs)
        state = model.__dict__.pop("_group_rng_state", None)
        if state is not None and isinstance(model.env, GroupResetVecEnv):
            model.env._seed_rng.bit_generator.state = state
        return model
