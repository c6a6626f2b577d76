"""PPO for VLA policies: SB3's PPO with what billion-parameter policies and action chunks need.

On top of `stable_baselines3.PPO` (same constructor, `learn`, callbacks and logger):

- chunk-level GAE: one env step of the (`ActionChunkWrapper`-wrapped) env is one chunk, so gamma and
  lambda apply once per chunk;
- token-level ratios when the policy offers `forward(obs, per_token=True)` and
  `evaluate_actions(obs, actions, per_token=True)` (OpenVLA-OFT: one log-prob per action token),
  action- or chunk-level otherwise (`ratio_level`); policies without per-token log-probs fall back to
  chunk level;
- asymmetric ratio clip (`clip_ratio_low`, `clip_ratio_high`), optional dual clip, value clipping
  (`clip_range_vf`) with MSE or Huber loss, entropy bonus, `target_kl` early stop;
- gradient accumulation: each minibatch of `batch_size` samples (the global batch of one optimizer
  step) is evaluated in micro-batches of `micro_batch_size`;
- bf16 autocast (default on CUDA, optional on CPU), gradient clipping, a separate learning rate
  `value_lr` for parameters whose name contains ``value_head``, only trainable (``requires_grad``, e.g.
  LoRA) parameters in the optimizer;
- lean rollout storage (`LeanRolloutBuffer`): uint8 images, per-token log-probs, no float32 copies;
- optionally (`recompute_log_probs`), old log-probs recomputed by the update's own forward pass, for
  rollouts computed by another forward pass (compiled / FP8 fast inference in rollout workers);
- metrics under SPEC §6's names (`algorithms.metrics`), timing of env, inference and update;
- atomic checkpoints (`save` writes a temporary file, then `os.replace`) that also keep the RNG states.

Differences from SB3's PPO: advantages are normalised once over the whole rollout (masked), not per
minibatch (a micro-batch of 1-2 samples has no usable statistics); `actor/approx_kl` and the other
update metrics average over every optimizer step of the update, not only the last epoch; `_n_updates`
counts optimizer steps; the update's metrics are dumped at the end of `train()`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pathlib
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from algorithms import metrics as M
from algorithms.buffers import LeanRolloutBuffer, LeanRolloutBufferSamples
from algorithms.objectives import (
    UNDRAWABLE_LOG_PROB,
    aggregate_log_probs,
    approx_kl,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_loss,
    normalize,
    undrawable_fraction,
)

ACTION_DIM = 23  # tokens per action step of the R1 Pro (behavior_gym.spaces.ACTION_DIM), for "action" ratios


def accepts_kwarg(fn, name: str) -> bool:
    """Whether callable `fn` takes a keyword argument `name` (or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy (global) and torch RNG states, for exact resumption."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": th.get_rng_state()}
    if th.cuda.is_available():
        state["cuda"] = th.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(state["torch"])
    if "cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda"])


def atomic_save(write, path: str | os.PathLike) -> pathlib.Path:
    """Write a file through `write(fileobj)` into a temporary file beside `path`, fsync it, then
    `os.replace` it onto `path`: a crash at any point leaves either the old file or the new one."""
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return final


def keep_float32_master_weights(module: th.nn.Module, autocast: bool) -> None:
    """Make `module`'s trained parameters float32 in place (the same Parameter objects, so an
    optimizer built before still holds them). With `autocast` (bf16 forward passes) frozen parameters
    keep their dtype; without it every floating-point parameter and buffer becomes float32, since the
    forward pass then computes in the parameters' own dtype and mixed dtypes would meet in one layer."""
    if not autocast:
        module.float()  # in place (`.data`): the same Parameter objects
        return
    for p in module.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != th.float32:
            p.data = p.data.float()


class PPO(SB3PPO):
    """Proximal Policy Optimization for chunked, token-level VLA policies (SPEC §6).

    Takes SB3 PPO's arguments (`learning_rate`, `n_steps`, `batch_size`, `n_epochs`, `gamma`,
    `gae_lambda`, `clip_range`, `clip_range_vf`, `normalize_advantage`, `ent_coef`, `vf_coef`,
    `max_grad_norm`, `target_kl`, `tensorboard_log`, `policy_kwargs`, `verbose`, `seed`, `device`) and:

    Args:
        clip_ratio_low, clip_ratio_high: ratio clip range ``[1 - low, 1 + high]`` (float or schedule);
            default `clip_range` for both (RLinf's Behavior config: 0.2 / 0.28).
        batch_size: samples per optimizer step (the global batch).
        micro_batch_size: samples per forward/backward pass; gradients of the micro-batches of one
            minibatch are accumulated. None = the whole minibatch at once.
        ratio_level: ``"token"`` (one ratio per action token), ``"action"`` (per step of the chunk) or
            ``"chunk"`` (one per chunk, SB3's behaviour). Token/action level need a policy with
            per-token log-probs; others fall back to chunk level with a warning.
        value_lr: learning rate (float or schedule) of parameters whose name contains one of
            `value_param_patterns` (default ``value_head``); None = `learning_rate`.
        value_loss_type: ``"mse"`` (SB3) or ``"huber"`` (RLinf, with `huber_delta`).
        dual_clip: cap of the loss of negative-advantage samples at ``-dual_clip * A`` (None: off).
        bf16: bfloat16 autocast of the policy's forward passes; None = on CUDA only.
        master_weights: train float32 parameters whatever dtype the policy was built in (mixed
            precision as in SFT and RLinf's FSDP actor): with `bf16` autocast the trained parameters
            (and so the optimizer's moments) become float32 and frozen ones keep their dtype; without
            autocast the whole policy becomes float32. False trains in the policy's own dtype: in
            bfloat16 an AdamW step smaller than half a bf16 ulp of the weight is rounded away (at lr
            2e-5, every weight above ~0.005 in magnitude and every norm scale never moves).
        tokens_per_action: tokens per chunk step for ``ratio_level="action"`` (23 for the R1 Pro).
        recompute_log_probs: before the update epochs, replace the rollout's log-probs by those of the
            update's own forward pass (see `_recompute_log_probs`): for rollouts acted by another forward
            pass (compiled / FP8 fast inference), whose log-probs differ from the eager update's.
        lr_warmup_steps: the policy group's learning rate rises linearly over this many optimizer
            steps (0: off; the value head's is not warmed up). A fresh Adam's first steps move every
            parameter by about the learning rate whatever its gradient (m/sqrt(v) is +-1 at step 1):
            at lr 1e-4 the first PPO update from an SFT checkpoint had a per-token approx. KL of
            0.14-0.19 against 0.004-0.02 later (learning runs 8 and 9). Counts the policy's own steps
            (after any critic warmup).
        desired_kl: adapt the policy group's learning rate to keep the per-token approximate KL between
            the rollout's policy and the one being updated near this value (None: the schedule's rate as
            it is). Before each optimizer step the rate is divided by 1.5 when the minibatch's `approx_kl`
            exceeds twice `desired_kl` and multiplied by 1.5 (up to the schedule's rate, the ceiling)
            when it is below half of it; the factor carries over between updates and checkpoints, down
            to `min_lr_factor` of the schedule's rate. The rule is RSL-RL's adaptive schedule with the
            given rate as its ceiling. Why: one learning rate moves different policies by very different
            amounts; at lr 2e-5 the 75.6M-parameter VLA's updates had a per-token KL of 0.003-0.016 and
            the CPU proxy's state clone's 0.0013-0.0017, and the proxy keeps its cloned skill there and
            loses it at 5e-5 (KL 0.0035-0.0044); with desired_kl=0.0015 from lr 1e-4 it settles at
            1.8e-5 and keeps it (learning run 15, docs/learning/README.md).
        min_lr_factor: the lowest fraction of the schedule's rate that `desired_kl` can set.
        critic_warmup_updates: the first this many updates (`train` calls) train the value head only;
            the policy's parameters get no gradient and no step (RLinf's `critic_warmup_steps`). A
            critic that starts from scratch gives noisy advantages, and a policy cloned to act well
            can lose that in the first updates (benchmarks/proxy_rl.py).
    """

    policy_aliases: ClassVar[dict[str, type]] = dict(SB3PPO.policy_aliases)
    _use_value_loss: ClassVar[bool] = True

    def __init__(
        self,
        policy: str | type,
        env: Any,
        learning_rate: float | Any = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Any = 0.2,
        clip_range_vf: float | Any | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = None,
        *,
        clip_ratio_low: float | Any | None = None,
        clip_ratio_high: float | Any | None = None,
        micro_batch_size: int | None = None,
        ratio_level: str = "token",
        value_lr: float | Any | None = None,
        value_param_patterns: Sequence[str] = ("value_head",),
        value_loss_type: str = "mse",
        huber_delta: float = 10.0,
        dual_clip: float | None = None,
        bf16: bool | None = None,
        master_weights: bool = True,
        tokens_per_action: int = ACTION_DIM,
        recompute_log_probs: bool = False,
        lr_warmup_steps: int = 0,
        critic_warmup_updates: int = 0,
        desired_kl: float | None = None,
        min_lr_factor: float = 1e-3,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if ratio_level not in ("token", "action", "chunk"):
            raise ValueError(f"ratio_level must be 'token', 'action' or 'chunk', got {ratio_level!r}")
        if rollout_buffer_class is not None and not issubclass(rollout_buffer_class, LeanRolloutBuffer):
            raise TypeError(f"rollout_buffer_class must be a LeanRolloutBuffer subclass (it keeps the per-token "
                            f"log-probs and loss masks the update reads), got {rollout_buffer_class.__name__}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0 (0: no warmup), got {lr_warmup_steps}")
        self.lr_warmup_steps = int(lr_warmup_steps)
        self._policy_lr: float | None = None
        if critic_warmup_updates < 0:
            raise ValueError(f"critic_warmup_updates must be >= 0 (0: none), got {critic_warmup_updates}")
        if critic_warmup_updates and not self._use_value_loss:
            raise ValueError(f"{type(self).__name__} has no critic to warm up; set critic_warmup_updates=0")
        self.critic_warmup_updates = int(critic_warmup_updates)
        if desired_kl is not None and not desired_kl > 0:
            raise ValueError(f"desired_kl must be > 0 (None: a fixed learning rate), got {desired_kl}")
        if not 0 < min_lr_factor <= 1:
            raise ValueError(f"min_lr_factor must be in (0, 1], got {min_lr_factor}")
        self.desired_kl = None if desired_kl is None else float(desired_kl)
        self.min_lr_factor = float(min_lr_factor)
        self._kl_lr_factor = 1.0  # desired_kl's factor on the policy's learning rate
        self._train_calls = 0  # updates done (critic warmup included)
        self._actor_steps = 0  # optimizer steps that moved the policy
        self.clip_ratio_low = clip_range if clip_ratio_low is None else clip_ratio_low
        self.clip_ratio_high = clip_range if clip_ratio_high is None else clip_ratio_high
        self.micro_batch_size = micro_batch_size
        self.ratio_level = ratio_level
        self.value_lr = value_lr
        self.value_param_patterns = tuple(value_param_patterns)
        self.value_loss_type = value_loss_type
        self.huber_delta = huber_delta
        self.dual_clip = dual_clip
        self.bf16 = bf16
        self.master_weights = bool(master_weights)
        self.tokens_per_action = tokens_per_action
        self.recompute_log_probs = bool(recompute_log_probs)
        self._episode_stats = M.EpisodeStats()
        self._times: dict[str, float] = defaultdict(float)
        super().__init__(
            policy, env, learning_rate=learning_rate, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs,
            gamma=gamma, gae_lambda=gae_lambda, clip_range=clip_range, clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage, ent_coef=ent_coef, vf_coef=vf_coef,
            max_grad_norm=max_grad_norm if max_grad_norm is not None else float("inf"), use_sde=False,
            rollout_buffer_class=rollout_buffer_class or LeanRolloutBuffer,
            rollout_buffer_kwargs=rollout_buffer_kwargs, target_kl=target_kl, stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs, verbose=verbose, seed=seed, device=device,
            _init_setup_model=_init_setup_model,
        )

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        super()._setup_model()
        self.clip_ratio_low = FloatSchedule(self.clip_ratio_low)
        self.clip_ratio_high = FloatSchedule(self.clip_ratio_high)
        self.value_lr_schedule = FloatSchedule(self.value_lr) if self.value_lr is not None else None
        per_token = accepts_kwarg(self.policy.forward, "per_token") and accepts_kwarg(
            self.policy.evaluate_actions, "per_token")
        if self.ratio_level != "chunk" and not per_token:
            warnings.warn(f"{type(self.policy).__name__} has no per-token log-probs (forward/evaluate_actions "
                          f"without per_token=); using chunk-level ratios instead of {self.ratio_level!r}",
                          stacklevel=2)
        self._token_level = per_token and self.ratio_level != "chunk"
        if self.master_weights:
            keep_float32_master_weights(self.policy, autocast=self.use_bf16)
        self.policy.optimizer = self._build_optimizer()

    def _build_optimizer(self, module: th.nn.Module | None = None) -> th.optim.Optimizer:
        """The policy's optimizer class over the trainable parameters only (of `module`, default the
        policy), value-head parameters in their own group (named ``value_head``) so that they can have
        their own learning rate."""
        lr = self.lr_schedule(1.0)
        value_lr = self.value_lr_schedule(1.0) if self.value_lr_schedule is not None else lr
        main, value = [], []
        for name, p in (module if module is not None else self.policy).named_parameters():
            if p.requires_grad:
                (value if any(pat in name for pat in self.value_param_patterns) else main).append(p)
        if not main and not value:
            raise ValueError("the policy has no trainable parameters (requires_grad=False everywhere)")
        groups = [{"params": params, "lr": group_lr, "name": name}
                  for name, params, group_lr in (("policy", main, lr), ("value_head", value, value_lr)) if params]
        opt_class = getattr(self.policy, "optimizer_class", th.optim.Adam)
        opt_kwargs = dict(getattr(self.policy, "optimizer_kwargs", None) or {})
        return opt_class(groups, lr=lr, **opt_kwargs)

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        lr = self.lr_schedule(self._current_progress_remaining)
        value_lr = self.value_lr_schedule(self._current_progress_remaining) if self.value_lr_schedule else lr
        self._policy_lr = lr
        lr = self._step_policy_lr()
        self.logger.record(M.ACTOR_LR, lr)
        self.logger.record(M.ACTOR_VALUE_LR, value_lr)
        for opt in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in opt.param_groups:
                group["lr"] = value_lr if group.get("name") == "value_head" else lr

    def _step_policy_lr(self) -> float:
        """The policy group's lr for the next optimizer step: the schedule's, times the warmup's and
        `desired_kl`'s factors."""
        return self._policy_lr * self._warmup_factor() * self._kl_lr_factor

    def _adapt_to_kl(self, kl: float) -> None:
        """`desired_kl`'s rule on the factor of the policy's learning rate, from one minibatch's KL."""
        if self.desired_kl is None:
            return
        if kl > 2.0 * self.desired_kl:
            self._kl_lr_factor = max(self._kl_lr_factor / 1.5, self.min_lr_factor)
        elif kl < 0.5 * self.desired_kl:
            self._kl_lr_factor = min(self._kl_lr_factor * 1.5, 1.0)

    def _warmup_factor(self) -> float:
        """The policy lr's factor for the next optimizer step (`lr_warmup_steps`)."""
        if not self.lr_warmup_steps:
            return 1.0
        return min(1.0, (self._actor_steps + 1) / self.lr_warmup_steps)

    @property
    def _critic_only(self) -> bool:
        """Whether this update trains the value head alone (`critic_warmup_updates`)."""
        return self._train_calls < self.critic_warmup_updates

    @property
    def use_bf16(self) -> bool:
        return self.device.type == "cuda" if self.bf16 is None else bool(self.bf16)

    def _autocast(self):
        return th.autocast(device_type=self.device.type, dtype=th.bfloat16, enabled=self.use_bf16)

    # ------------------------------------------------------------------ acting
    def _act(self, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Sample a chunk per env: actions, values [n_envs], log-probs [n_envs, T] (T = 1 at chunk level)."""
        with th.no_grad(), self._autocast():
            obs_tensor = obs_as_tensor(obs, self.device)
            if self._token_level:
                actions, values, log_prob = self.policy(obs_tensor, per_token=True)
            else:
                actions, values, log_prob = self.policy(obs_tensor)
        log_prob = log_prob.float()
        return actions, self._values(values, actions.shape[0]), log_prob if log_prob.dim() == 2 else log_prob[:, None]

    def _values(self, values: th.Tensor | None, n: int) -> th.Tensor:
        """Values as float32 [n]; a policy without a value head may return None, which only GRPO accepts."""
        if values is None:
            if self._use_value_loss:
                raise ValueError(f"{type(self.policy).__name__} returned no values: PPO needs a value head "
                                 "(GRPO does not)")
            return th.zeros(n, device=self.device)
        return values.float().reshape(-1)

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        if isinstance(self.action_space, spaces.Box):
            if self.policy.squash_output:
                return self.policy.unscale_action(actions)
            return np.clip(actions, self.action_space.low, self.action_space.high)
        return actions

    def _bootstrap_timeouts(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]) -> np.ndarray:
        """Add gamma * V(terminal obs) to the reward of episodes cut by a time limit (SB3 issue #633)."""
        idx = [i for i, d in enumerate(dones) if d and infos[i].get("TimeLimit.truncated", False)
               and infos[i].get("terminal_observation") is not None]
        if not idx:
            return rewards
        terminal = [infos[i]["terminal_observation"] for i in idx]
        if isinstance(terminal[0], dict):
            batch = {k: np.stack([t[k] for t in terminal]) for k in terminal[0]}
        else:
            batch = np.stack(terminal)
        with th.no_grad(), self._autocast():
            values = self.policy.predict_values(obs_as_tensor(batch, self.device)).float().reshape(-1).cpu().numpy()
        rewards = rewards.astype(np.float32, copy=True)
        rewards[idx] += self.gamma * values
        return rewards

    def _timed_step(self, env: VecEnv, obs: Any) -> tuple[np.ndarray, th.Tensor, th.Tensor, tuple]:
        t0 = time.perf_counter()
        actions, values, log_prob = self._act(obs)
        actions = actions.cpu().numpy()
        env_actions = self._env_actions(actions)
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.reshape(-1, 1)  # the buffer's [n_envs, 1]; the env takes [n_envs] ints
        t1 = time.perf_counter()
        result = env.step(env_actions)
        t2 = time.perf_counter()
        self._times[M.TIME_INFERENCE] += t1 - t0
        self._times[M.TIME_ENV] += t2 - t1
        self.num_timesteps += env.num_envs
        return actions, values, log_prob, result

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """SB3's rollout loop, storing per-token log-probs and timing env and inference."""
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        self._begin_rollout()
        callback.on_rollout_start()
        n_steps = 0
        while n_steps < n_rollout_steps:
            actions, values, log_probs, (new_obs, rewards, dones, infos) = self._timed_step(env, self._last_obs)
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            self._episode_stats.add_step(infos, dones)
            self._reward_sum += float(np.sum(rewards))
            n_steps += 1
            rewards = self._bootstrap_timeouts(rewards, dones, infos)
            rollout_buffer.add(self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs)
            self._last_obs = new_obs
            self._last_episode_starts = dones

        with th.no_grad(), self._autocast():
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device)).float()
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        self._end_rollout(rollout_buffer)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _begin_rollout(self) -> None:
        self._episode_stats.clear()
        self._reward_sum = 0.0
        self._times = defaultdict(float)
        self._rollout_start = time.perf_counter()

    def _end_rollout(self, buffer: LeanRolloutBuffer) -> None:
        """Record the rollout's metrics (before any advantage normalisation)."""
        self._times[M.TIME_ROLLOUT] = time.perf_counter() - self._rollout_start
        masks = buffer.masks
        n_valid = max(float(masks.sum()), 1.0)
        record = self.logger.record
        record(M.ROLLOUT_RETURNS_MEAN, float((buffer.returns * masks).sum() / n_valid))
        record(M.ROLLOUT_ADVANTAGES_MEAN, float((buffer.advantages * masks).sum() / n_valid))
        record(M.ROLLOUT_REWARDS_MEAN, self._reward_sum / max(buffer.buffer_size * buffer.n_envs, 1))
        record(M.ROLLOUT_VALID_FRACTION, float(masks.mean()))
        record(M.ROLLOUT_BYTES_PER_STEP, float(buffer.bytes_per_step))
        for name, value in self._episode_stats.means().items():
            record(name, value)
        for name, value in self._times.items():
            record(name, value)

    # ------------------------------------------------------------------ training
    def _evaluate(self, obs: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        with self._autocast():
            if self._token_level:
                values, log_prob, entropy = self._training_policy.evaluate_actions(obs, actions, per_token=True)
            else:
                values, log_prob, entropy = self._training_policy.evaluate_actions(obs, actions)
        values = self._values(values, log_prob.shape[0])
        return values, log_prob.float(), None if entropy is None else entropy.float()

    def _loss(self, mb: LeanRolloutBufferSamples, clip_low: float, clip_high: float,
              clip_vf: float | None) -> dict[str, th.Tensor]:
        """The PPO objective of one micro-batch (a masked mean over its valid samples / tokens)."""
        values, log_prob, entropy = self._evaluate(mb.observations, mb.actions)
        level = self.ratio_level if self._token_level else "chunk"
        new_lp = aggregate_log_probs(log_prob, level, self.tokens_per_action)
        old_lp = aggregate_log_probs(mb.old_log_prob, level, self.tokens_per_action)
        policy_loss, clipfrac = clipped_policy_loss(new_lp, old_lp, mb.advantages, clip_low, clip_high, mb.masks,
                                                    self.dual_clip)
        if self._use_value_loss:
            value_loss, value_clip = clipped_value_loss(values, mb.old_values, mb.returns, clip_vf, mb.masks,
                                                        self.value_loss_type, self.huber_delta)
        else:
            value_loss = value_clip = th.zeros((), device=new_lp.device)
        ent_loss = entropy_loss(entropy if entropy is not None else -log_prob, mb.masks)
        actor = 0.0 if self._critic_only else 1.0
        loss = actor * (policy_loss + self.ent_coef * ent_loss) + self.vf_coef * value_loss
        return {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": -ent_loss,
                "approx_kl": approx_kl(new_lp, old_lp, mb.masks), "pg_clipfrac": clipfrac,
                "undrawable_fraction": undrawable_fraction(new_lp, mb.masks),
                "value_clip_ratio": value_clip}

    def _recompute_log_probs(self, buffer: LeanRolloutBuffer) -> None:
        """Replace the buffer's old log-probs (per token where it keeps them) by the update's own: `_evaluate`
        without gradients, with the policy as the loss sees it (training mode, same autocast), in micro-batches
        of `micro_batch_size`. The first minibatch's ratios are then exactly 1 (up to the batch composition's
        float rounding) whatever forward pass acted: compiled / FP8 fast inference differs from the eager
        forward by a few % of the logits, and over the 184 tokens of a chunk that moves chunk-level ratios far
        from 1. Values, returns and advantages stay as computed at rollout time (the critic's estimates then
        come from the acting pass; their error is the value loss's to fix, not the ratios').

        Records `rollout/log_prob_gap` (mean |rollout - recomputed| per token of the valid samples that
        both passes can draw), with top-k sampling `rollout/recompute_undrawable_fraction` (the share of
        the valid tokens the rollout drew that the update's forward cannot: outside its top k, where the
        two passes' logits order near-tied bins differently) and the time it took. Only valid samples are
        recomputed in one process; with data parallelism every sample (each rank then runs the same number
        of passes, which DDP / FSDP need)."""
        t0 = time.perf_counter()
        old = buffer._flat(buffer.log_probs)  # a view: writing into it writes into the buffer
        masks = buffer._flat(buffer.masks)
        rows = np.arange(len(old)) if self._world_size > 1 else np.flatnonzero(masks > 0)
        size = self.micro_batch_size or max(len(rows), 1)
        gap = counted = lost = 0.0
        with th.no_grad():
            for start in range(0, len(rows), size):
                idx = rows[start:start + size]
                mb = buffer._get_samples(idx)
                new = self._micro_batch_log_probs(mb).float().reshape(len(idx), -1).cpu().numpy()
                if new.shape[1] != old.shape[1]:
                    raise ValueError(f"the update's forward gives {new.shape[1]} log-probs per sample, the rollout "
                                     f"stored {old.shape[1]}: both must be per token or both per chunk")
                # with top-k a stored token can lie outside the update's top k (log-prob about -1e30): it
                # keeps the rollout's log-prob, so that its ratio is 0 and it adds no gradient, as a token
                # an update pushed out (undrawable_fraction); it is counted apart, and the gap is taken
                # over the tokens both passes can draw
                weight = np.broadcast_to(masks[idx, None], new.shape)
                acted, drawable = old[idx] > UNDRAWABLE_LOG_PROB, new > UNDRAWABLE_LOG_PROB
                both, out = weight * (acted & drawable), acted & ~drawable
                gap += float((np.abs(old[idx] - new) * both).sum())
                counted += float(both.sum())
                lost += float((weight * out).sum())
                old[idx] = np.where(out, old[idx], new)
        gap, counted, lost, tokens = self._all_reduce_sum([gap, counted, lost, float(masks.sum()) * old.shape[1]])
        self.logger.record(M.ROLLOUT_LOG_PROB_GAP, gap / max(counted, 1.0))
        if getattr(self.policy, "top_k", 0):
            self.logger.record(M.ROLLOUT_RECOMPUTE_UNDRAWABLE, lost / max(tokens, 1.0))
        self.logger.record(M.TIME_RECOMPUTE_LOG_PROBS, time.perf_counter() - t0)

    def _micro_batch_log_probs(self, mb: LeanRolloutBufferSamples) -> th.Tensor:
        """Log-probs of a micro-batch's stored actions by the update's forward pass (call without gradients)."""
        return self._evaluate(mb.observations, mb.actions)[1]

    def _micro_batches(self, batch: LeanRolloutBufferSamples) -> Iterator[LeanRolloutBufferSamples]:
        n = batch.actions.shape[0]
        size = self.micro_batch_size or n
        for start in range(0, n, size):
            sl = slice(start, start + size)
            obs = ({k: v[sl] for k, v in batch.observations.items()} if isinstance(batch.observations, dict)
                   else batch.observations[sl])
            yield LeanRolloutBufferSamples(obs, *(t[sl] for t in batch[1:]))

    def _backward_minibatch(self, batch: LeanRolloutBufferSamples, clip_low: float, clip_high: float,
                            clip_vf: float | None) -> dict[str, float] | None:
        """Accumulate the gradient of one minibatch over its micro-batches (into zeroed gradients); return
        the minibatch's loss terms, each a mean over its valid samples. None if no sample is valid.

        Each micro-batch's loss is weighted by its share of the valid samples, so the accumulated gradient
        is that of the minibatch's mean loss. With data parallelism the minibatch is this rank's part of
        the global one: the valid count and the terms are summed over ranks (`_all_reduce_sum`), and the
        gradients are synchronised once, in the backward pass of the last micro-batch (`_grad_sync`)."""
        local_valid = float(batch.masks.sum())
        n_valid = self._all_reduce_sum([local_valid])[0]
        if n_valid == 0:
            return None
        self._training_optimizer.zero_grad(set_to_none=True)
        micro = list(self._micro_batches(batch))
        if self._world_size == 1:  # one process: an empty micro-batch adds nothing, skip it
            micro = [mb for mb in micro if float(mb.masks.sum()) > 0]
        keys: list[str] = []
        sums: dict[str, float] = defaultdict(float)
        for i, mb in enumerate(micro):
            share = float(mb.masks.sum()) / n_valid  # of the global minibatch
            # every rank runs every micro-batch (an empty one with weight 0), so that all ranks meet in
            # the gradient synchronisation of the last one; DDP / FSDP average over ranks, hence * W
            with self._grad_sync(i == len(micro) - 1):
                terms = self._micro_batch_loss(mb, clip_low, clip_high, clip_vf)
                (terms["loss"] * (share * self._world_size)).backward()
            for key, value in terms.items():
                sums[key] += share * float(value.detach())
            keys = list(terms)
        totals = self._all_reduce_sum([sums[k] for k in keys])
        return dict(zip(keys, totals))

    def _optimizer_step(self, batch: LeanRolloutBufferSamples, clip_low: float, clip_high: float,
                        clip_vf: float | None) -> dict[str, float] | None:
        """Accumulate the gradient of one minibatch, then step (unless target_kl stops the update first,
        like SB3: the step is then skipped). None if no sample is valid."""
        stats = self._backward_minibatch(batch, clip_low, clip_high, clip_vf)
        if stats is None:
            return None
        optimizer = self._training_optimizer
        if self.target_kl is not None and stats["approx_kl"] > 1.5 * self.target_kl:
            optimizer.zero_grad(set_to_none=True)
            stats["stop"] = 1.0
            return stats
        params = [p for group in optimizer.param_groups for p in group["params"]]
        stats["grad_norm"] = self._clip_grad_norm(params)
        if self._critic_only:  # no step, no weight decay for the policy's parameters
            for group in optimizer.param_groups:
                if group.get("name") != "value_head":
                    for p in group["params"]:
                        p.grad = None
        elif (self.lr_warmup_steps or self.desired_kl is not None) and self._policy_lr is not None:
            self._adapt_to_kl(stats["approx_kl"])
            lr = stats["lr"] = self._step_policy_lr()
            for group in optimizer.param_groups:
                if group.get("name") != "value_head":
                    group["lr"] = lr
        optimizer.step()
        self._actor_steps += 0 if self._critic_only else 1
        self._n_updates += 1
        self._after_optimizer_step()
        return stats

    # -- data-parallel hooks: one process here; algorithms.distributed.data_parallel overrides them ------
    _world_size: int = 1

    @property
    def _training_policy(self) -> th.nn.Module:
        """The policy the update evaluates (under FSDP: the sharded copy, `self.policy` being the one that acts)."""
        return self.policy

    @property
    def _training_optimizer(self) -> th.optim.Optimizer:
        """The optimizer of the parameters the update trains (under FSDP: of their shards)."""
        return self.policy.optimizer

    def _micro_batch_loss(self, mb: LeanRolloutBufferSamples, clip_low: float, clip_high: float,
                          clip_vf: float | None) -> dict[str, th.Tensor]:
        return self._loss(mb, clip_low, clip_high, clip_vf)

    def _grad_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-batch's backward pass; `sync` on the last micro-batch of a minibatch."""
        return contextlib.nullcontext()

    def _all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Sums over the data-parallel ranks (the values themselves in one process)."""
        return [float(v) for v in values]

    def _clip_grad_norm(self, params: list[th.nn.Parameter]) -> float:
        return float(th.nn.utils.clip_grad_norm_(params, self.max_grad_norm))

    def _after_optimizer_step(self) -> None:
        pass

    def _normalized_advantages(self, buffer: LeanRolloutBuffer) -> np.ndarray:
        return normalize(buffer.advantages, buffer.masks)

    def train(self) -> None:
        """Update the policy on the rollout buffer (n_epochs x minibatches of batch_size samples)."""
        t0 = time.perf_counter()
        self.policy.set_training_mode(True)
        self._update_learning_rate(self._training_optimizer)
        progress = self._current_progress_remaining
        clip_low, clip_high = self.clip_ratio_low(progress), self.clip_ratio_high(progress)
        clip_vf = self.clip_range_vf(progress) if self.clip_range_vf is not None else None
        buffer = self.rollout_buffer
        if self.recompute_log_probs:
            self._recompute_log_probs(buffer)
        if self.normalize_advantage:
            buffer.advantages = self._normalized_advantages(buffer)

        history: dict[str, list[float]] = defaultdict(list)
        stopped = False
        for epoch in range(self.n_epochs):
            for batch in buffer.get(self.batch_size // self._world_size):
                stats = self._optimizer_step(batch, clip_low, clip_high, clip_vf)
                if stats is None:
                    continue
                if stats.pop("stop", 0.0):
                    stopped = True
                    if self.verbose >= 1:
                        print(f"Early stopping at epoch {epoch} due to approx_kl {stats['approx_kl']:.3f}")
                    break
                for key, value in stats.items():
                    history[key].append(value)
            if stopped:
                break

        self._record_update(history, stopped, time.perf_counter() - t0, buffer)

    def _record_update(self, history: dict[str, list[float]], stopped: bool, seconds: float,
                       buffer: LeanRolloutBuffer) -> None:
        names = {"loss": M.ACTOR_LOSS, "policy_loss": M.ACTOR_POLICY_LOSS, "value_loss": M.ACTOR_VALUE_LOSS,
                 "grad_norm": M.ACTOR_GRAD_NORM, "approx_kl": M.ACTOR_APPROX_KL, "pg_clipfrac": M.ACTOR_PG_CLIPFRAC,
                 "value_clip_ratio": M.ACTOR_VALUE_CLIP_RATIO, "entropy": M.ACTOR_ENTROPY,
                 "undrawable_fraction": M.ACTOR_UNDRAWABLE_FRACTION, "lr": M.ACTOR_LR}
        if not self._use_value_loss:
            names.pop("value_loss")
            names.pop("value_clip_ratio")
        if not getattr(self.policy, "top_k", 0):  # without top-k sampling every stored token stays drawable
            names.pop("undrawable_fraction")
        for key, name in names.items():
            if history.get(key):
                self.logger.record(name, float(np.mean(history[key])))
        self._train_calls += 1
        self.logger.record(M.ACTOR_N_UPDATES, self._n_updates)
        self.logger.record(M.ACTOR_EARLY_STOP, float(stopped))
        self.logger.record(M.TIME_UPDATE, seconds)
        self.logger.record(M.TIME_UPDATE_PER_SAMPLE, seconds / (buffer.buffer_size * buffer.n_envs))
        self.logger.dump(step=self.num_timesteps)

    # ------------------------------------------------------------------ checkpoints
    def trainable_parameter_names(self) -> set[str]:
        """Names (policy state-dict keys) of the parameters a trainable-only checkpoint keeps: those with
        ``requires_grad`` (LoRA adapters, heads) and every value-head parameter."""
        return {name for name, p in self.policy.named_parameters()
                if p.requires_grad or any(pat in name for pat in self.value_param_patterns)}

    def get_parameters(self) -> dict[str, dict]:
        params = super().get_parameters()
        if getattr(self, "_trainable_only_checkpoint", False):
            keep = self.trainable_parameter_names()
            params["policy"] = {k: v for k, v in params["policy"].items() if k in keep}
        return params

    def _complete_policy_state(self, partial: dict[str, th.Tensor]) -> dict[str, th.Tensor]:
        """A trainable-only state dict completed with this policy's own frozen parameters and buffers."""
        full = self.policy.state_dict()
        unexpected = sorted(set(partial) - set(full))
        missing = sorted(self.trainable_parameter_names() - set(partial))
        if unexpected or missing:
            raise ValueError(f"trainable-only checkpoint does not fit {type(self.policy).__name__}: unknown keys "
                             f"{unexpected[:5]}, trainable parameters missing {missing[:5]} (the policy must be "
                             "built with the same trainable (LoRA) parameters as when it was saved)")
        full.update(partial)
        return full

    def set_parameters(self, load_path_or_dict: Any, exact_match: bool = True, device: th.device | str = "auto"):
        """SB3's `set_parameters`; a trainable-only checkpoint's missing (frozen) parameters keep the values
        of this policy, i.e. of the base weights it was built from."""
        partial = getattr(self, "_trainable_only_checkpoint", False)
        if not isinstance(load_path_or_dict, dict):
            from stable_baselines3.common.save_util import load_from_zip_file

            data, load_path_or_dict, _ = load_from_zip_file(load_path_or_dict, device=device)
            partial = bool((data or {}).get("_trainable_only_checkpoint", False))
        if partial and "policy" in load_path_or_dict:
            load_path_or_dict = {**load_path_or_dict,
                                 "policy": self._complete_policy_state(load_path_or_dict["policy"])}
        return super().set_parameters(load_path_or_dict, exact_match=exact_match, device=device)

    def save(self, path: str | os.PathLike | Any, exclude: Any = None, include: Any = None,
             trainable_only: bool = False) -> None:
        """SB3's zip checkpoint (policy, optimizer, counters, schedules) plus the RNG states, written
        atomically: a crash while saving leaves the previous checkpoint at `path` intact.

        With `trainable_only`, the policy's state dict keeps only `trainable_parameter_names()` (LoRA
        adapters and the value head, not the frozen base model); `load` then builds the policy from its
        saved constructor arguments (e.g. `model_path`, the base weights) and puts the saved parameters
        on top. The optimizer state, counters and RNG states are saved in full either way."""
        self._rng_state = capture_rng_state()
        self._trainable_only_checkpoint = bool(trainable_only)
        try:
            if not isinstance(path, (str, os.PathLike)):
                return super().save(path, exclude, include)
            final = pathlib.Path(path)
            if final.suffix == "":
                final = final.with_suffix(".zip")
            atomic_save(lambda f: super(PPO, self).save(f, exclude, include), final)
        finally:
            del self._rng_state, self._trainable_only_checkpoint

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, print_system_info=False, force_reset=True,
             **kwargs):
        """SB3's `load`, then the RNG states saved with the checkpoint are restored."""
        model = super().load(path, env=env, device=device, custom_objects=custom_objects,
                             print_system_info=print_system_info, force_reset=force_reset, **kwargs)
        state = model.__dict__.pop("_rng_state", None)
        model.__dict__.pop("_trainable_only_checkpoint", None)
        if state is not None:
            restore_rng_state(state)
        return model
