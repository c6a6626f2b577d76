"""Pipelined rollouts for `algorithms.PPO` / `algorithms.GRPO` on a `RayVecEnv`.

`PipelinedPPO` is `algorithms.PPO` with one method of its rollout loop replaced: `_timed_step`, which computes
the actions of every env and steps them. With `S = rollout.pipeline_stage_num` stages it goes stage
by stage — compute stage s's actions, send them (the stage starts stepping in its env workers), go
on to stage s + 1 — so the policy computes one stage's actions while the env workers step another.
While the last stage steps, the next actions of the other stages are computed already (their new
observations are back; the weights do not change within a rollout), so in the steady state env
stepping and inference overlap completely. Everything else — the buffer, GAE or group advantages,
callbacks, `train()` — is the trainer's own.

The same class also

- sends inference to rollout workers when placement gives rollout its own devices
  (`rollout_group`), pushing the weights to them after every update;
- keeps the steps of episodes that a dead env worker took with it out of the update (loss mask 0;
  for GRPO, the whole group-episode);
- counts training steps (`global_step`) for checkpoints.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from algorithms import GRPO, PPO
from algorithms import metrics as M
from algorithms.distributed.vec_env import RayVecEnv, _take

log = logging.getLogger(__name__)


def find_ray_vec_env(env: VecEnv | None) -> RayVecEnv | None:
    """The `RayVecEnv` under any VecEnv wrappers (GRPO's `GroupResetVecEnv`), if there is one."""
    while env is not None:
        if isinstance(env, RayVecEnv):
            return env
        env = env.venv if isinstance(env, VecEnvWrapper) else None
    return None


def _same_obs(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


class PipelinedRolloutMixin:
    """Mix into `algorithms.PPO` or a subclass, before it: ``class P(PipelinedRolloutMixin, PPO)``.
    Set `rollout_group` to act through rollout workers."""

    rollout_group: Any = None  # algorithms.distributed.rollout_worker.RolloutGroup
    global_step: int = 0  # completed training steps (rollout + update)
    discarded_steps: int = 0  # env steps kept out of updates because their env worker died

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "rollout_group", "_prefetch"]

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def ray_venv(self) -> RayVecEnv | None:
        return find_ray_vec_env(self.env)

    @property
    def policy_version(self) -> int:
        return self.global_step

    def _prefetched(self, stage: int, obs: Any):
        entry = getattr(self, "_prefetch", {}).pop(stage, None)
        if entry is None:
            return None
        seen, version, out = entry
        return out if version == self.policy_version and _same_obs(seen, obs) else None

    # -- acting -----------------------------------------------------------------------------------
    def _act(self, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        group = self.rollout_group
        if group is None:
            return super()._act(obs)
        if group.version != self.policy_version:
            group.sync(self.policy, self.policy_version)
        return group.act(obs)

    def _timed_step(self, env: VecEnv, obs: Any):
        venv = self.ray_venv
        if venv is None or venv.num_stages == 1:
            return super()._timed_step(env, obs)
        t_start = time.perf_counter()
        t_inference = 0.0
        n = env.num_envs
        actions = values = log_probs = None
        for s, rows in enumerate(venv.stage_indices):
            obs_s = _take(obs, rows)
            t0 = time.perf_counter()
            out = self._prefetched(s, obs_s) or self._act(obs_s)
            a, v, lp = out[0].cpu().numpy(), out[1].cpu(), out[2].cpu()
            if actions is None:
                actions = np.zeros((n, *a.shape[1:]), a.dtype)
                values, log_probs = th.zeros(n), th.zeros((n, *lp.shape[1:]))
            actions[rows], values[rows], log_probs[rows] = a, v.reshape(-1), lp
            t_inference += time.perf_counter() - t0
            venv.step_stage_async(s, self._env_actions(a))
        # While the last stage steps, act for the others on their new observations (same weights).
        self._prefetch = {}
        self._rollout_step = getattr(self, "_rollout_step", 0) + 1
        if self._rollout_step < self.n_steps:
            for s in range(venv.num_stages - 1):
                obs_next = venv.wait_stage(s)
                t0 = time.perf_counter()
                self._prefetch[s] = (obs_next, self.policy_version, self._act(obs_next))
                t_inference += time.perf_counter() - t0
        env.step_async(self._env_actions(actions))
        result = env.step_wait()
        self._times[M.TIME_INFERENCE] += t_inference
        self._times[M.TIME_ENV] += time.perf_counter() - t_start - t_inference  # env time not hidden by inference
        self.num_timesteps += n
        return actions, values, log_probs, result

    # -- rollout bookkeeping ----------------------------------------------------------------------
    def _begin_rollout(self) -> None:
        super()._begin_rollout()
        self._rollout_step = 0
        venv = self.ray_venv
        self._rollout_first_step = venv.num_steps if venv is not None else 0

    def _discard_mask(self, buffer) -> np.ndarray | None:
        """[n_steps, n_envs] True where a step belongs to an episode a dead env worker took with it."""
        venv = self.ray_venv
        if venv is None or not venv.discards:
            return None
        mask = np.zeros((buffer.buffer_size, buffer.n_envs), dtype=bool)
        start = self._rollout_first_step
        for d in venv.pop_discards():
            lo, hi = max(d.first_step, start) - start, min(d.last_step - start, buffer.buffer_size - 1)
            if hi >= lo:
                mask[lo:hi + 1, d.env] = True
        return mask

    def _apply_discards(self, buffer) -> None:
        mask = self._discard_mask(buffer)
        if mask is None:
            return
        if getattr(buffer, "trajectory_ids", None) is not None and hasattr(self, "group_size"):
            # GRPO: the group-episode of a lost member has no fair baseline; drop all of it.
            lost = np.unique(buffer.trajectory_ids[mask])
            mask |= np.isin(buffer.trajectory_ids, lost[lost >= 0])
        n = int((mask & (buffer.masks > 0)).sum())
        buffer.masks[mask] = 0.0
        self.discarded_steps += n
        self.logger.record("rollout/discarded_steps", n)
        log.warning("kept %d steps of episodes lost with a dead env worker out of this update", n)

    def _assign_advantages(self, buffer, completed) -> None:  # GRPO only
        self._apply_discards(buffer)
        super()._assign_advantages(buffer, completed)

    def _end_rollout(self, buffer) -> None:
        self._apply_discards(buffer)  # PPO (GRPO has done it before its advantages)
        super()._end_rollout(buffer)

    def train(self) -> None:
        super().train()
        self.global_step += 1
        self._prefetch = {}


class PipelinedPPO(PipelinedRolloutMixin, PPO):
    """`algorithms.PPO` with pipelined rollouts, rollout workers and env-worker fault tolerance."""


class PipelinedGRPO(PipelinedRolloutMixin, GRPO):
    """`algorithms.GRPO` with pipelined rollouts, rollout workers and env-worker fault tolerance."""
