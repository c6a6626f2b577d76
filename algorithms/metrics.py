"""Metric names (SPEC §6), defined once; trainers, callbacks, tests and docs import them from here.

The `actor/`, `rollout/` and `env/` names are the ones RLinf's Behavior docs list; `time/` holds the
wall-clock split of one iteration. `EpisodeStats` gathers the per-episode `env/` values from the
`info` of the step where each episode ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# --- update (train) ------------------------------------------------------------------------------
ACTOR_LOSS = "actor/loss"  # total loss: policy + vf_coef * value - ent_coef * entropy
ACTOR_POLICY_LOSS = "actor/policy_loss"
ACTOR_VALUE_LOSS = "actor/value_loss"
ACTOR_GRAD_NORM = "actor/grad_norm"  # total norm of the trainable parameters' gradients, before clipping
ACTOR_APPROX_KL = "actor/approx_kl"  # over the tokens the updated policy can still draw
# top-k rollouts: fraction of stored tokens the updated policy can no longer draw (pushed out of its top k)
ACTOR_UNDRAWABLE_FRACTION = "actor/undrawable_fraction"
ACTOR_PG_CLIPFRAC = "actor/pg_clipfrac"
ACTOR_VALUE_CLIP_RATIO = "actor/value_clip_ratio"
ACTOR_ENTROPY = "actor/entropy"
ACTOR_LR = "actor/lr"
ACTOR_VALUE_LR = "actor/value_lr"
ACTOR_N_UPDATES = "actor/n_updates"  # optimizer steps so far
ACTOR_EARLY_STOP = "actor/early_stopped"  # 1 when target_kl stopped this update

# --- rollout -------------------------------------------------------------------------------------
ROLLOUT_RETURNS_MEAN = "rollout/returns_mean"  # PPO: GAE returns; GRPO: trajectory returns
ROLLOUT_ADVANTAGES_MEAN = "rollout/advantages_mean"  # before normalisation
ROLLOUT_REWARDS_MEAN = "rollout/rewards_mean"  # mean chunk reward
ROLLOUT_BYTES_PER_STEP = "rollout/buffer_bytes_per_step"
ROLLOUT_VALID_FRACTION = "rollout/valid_fraction"  # fraction of stored steps that enter the loss
ROLLOUT_FILTERED_GROUPS = "rollout/filtered_groups"  # GRPO: fraction of complete groups filtered out
# with recompute_log_probs: mean |rollout log-prob - the update's recomputed one| per token of the valid samples
ROLLOUT_LOG_PROB_GAP = "rollout/log_prob_gap"
# with recompute_log_probs and top-k: fraction of the valid stored tokens outside the update's forward's top k
ROLLOUT_RECOMPUTE_UNDRAWABLE = "rollout/recompute_undrawable_fraction"

# --- env (per finished episode, averaged over the episodes that ended in the rollout) -------------
ENV_EPISODE_LEN = "env/episode_len"  # true length in env steps, from info["episode_len"]
ENV_SUCCESS_ONCE = "env/success_once"
ENV_Q_SCORE = "env/q_score"
ENV_RETURN = "env/return"
ENV_NUM_TRAJECTORIES = "env/num_trajectories"
# Multi-task runs: ENV_SUCCESS_ONCE per task (info["task"]) as "env/success_once/<task>", logged once
# episodes of two or more tasks ended in the rollout.

# --- time (seconds per iteration) ----------------------------------------------------------------
TIME_ENV = "time/env"  # env.step calls during the rollout
TIME_INFERENCE = "time/inference"  # policy forward passes during the rollout
TIME_ROLLOUT = "time/rollout"  # the whole rollout
TIME_UPDATE = "time/update"  # train(): all epochs, micro-batches and optimizer steps
TIME_UPDATE_PER_SAMPLE = "time/update_per_sample"  # time/update / samples (chunk steps) in the buffer
TIME_RECOMPUTE_LOG_PROBS = "time/recompute_log_probs"  # part of time/update: the old log-probs' recomputation

#: The names SPEC §6 requires (time/* stands for the TIME_* names).
SPEC_METRICS: tuple[str, ...] = (
    ACTOR_LOSS, ACTOR_VALUE_LOSS, ACTOR_GRAD_NORM, ACTOR_APPROX_KL, ACTOR_PG_CLIPFRAC, ACTOR_VALUE_CLIP_RATIO,
    ACTOR_ENTROPY, ROLLOUT_RETURNS_MEAN, ROLLOUT_ADVANTAGES_MEAN, ENV_EPISODE_LEN, ENV_SUCCESS_ONCE, ENV_Q_SCORE,
    TIME_ENV, TIME_INFERENCE, TIME_UPDATE,
)

#: info keys read at the end of an episode -> metric name.
EPISODE_INFO_METRICS: Mapping[str, str] = {
    "episode_len": ENV_EPISODE_LEN,
    "success_once": ENV_SUCCESS_ONCE,
    "q_score": ENV_Q_SCORE,
}


class EpisodeStats:
    """Per-episode values from the final `info` of each finished episode, averaged when recorded.

    Only the step where an episode ends is read, so `env/episode_len` is the env's true length
    (`info["episode_len"]`), not the step limit (RLinf logged `elapsed_steps`, which was the limit).
    The episode return comes from SB3's `Monitor` (`info["episode"]["r"]`) when present.
    """

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.per_task: dict[str, list[float]] = {}
        self.count = 0

    def add_step(self, infos: Sequence[Mapping[str, Any]], dones: Sequence[bool]) -> None:
        for info, done in zip(infos, dones):
            if done:
                self.add_episode(info)

    def add_episode(self, info: Mapping[str, Any]) -> None:
        self.count += 1
        for key, name in EPISODE_INFO_METRICS.items():
            if key in info:
                self.values.setdefault(name, []).append(float(info[key]))
        if "success_once" in info and isinstance(info.get("task"), str):
            self.per_task.setdefault(info["task"], []).append(float(info["success_once"]))
        if isinstance(info.get("episode"), Mapping) and "r" in info["episode"]:
            self.values.setdefault(ENV_RETURN, []).append(float(info["episode"]["r"]))

    def means(self) -> dict[str, float]:
        out = {name: float(np.mean(v)) for name, v in self.values.items() if v}
        if self.count:
            out[ENV_NUM_TRAJECTORIES] = float(self.count)
        if len(self.per_task) > 1:
            out.update({f"{ENV_SUCCESS_ONCE}/{task}": float(np.mean(v)) for task, v in self.per_task.items()})
        return out

    def clear(self) -> None:
        self.per_task.clear()
        self.values.clear()
        self.count = 0
