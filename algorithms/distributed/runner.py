"""The embodied runner: from a validated `RunConfig` to env workers, rollout workers and a trainer on Ray.

`launch` (in the driver) reserves the nodes and starts `EmbodiedRunner`, the actor component, as a
Ray actor on the actor's devices. The runner builds

- a `RayVecEnv` over env workers placed on the env devices (`num_env_subprocess` per device),
- rollout workers on the rollout devices when those differ from the actor's (else the trainer's own
  policy acts, and no weights need copying); with `rollout.fast_inference` the acting policy runs
  its no-grad passes compiled / as CUDA graphs / in FP8, and (`algorithm.recompute_log_probs`) the
  update recomputes the old log-probs with its own forward pass,
- `algorithms.PPO` (``adv_type: gae``) or `algorithms.GRPO` (``adv_type: grpo``) with pipelined
  rollouts around `vla_policies.OpenVLAOFTPolicy`,
- the logger (TensorBoard, W&B, SwanLab), the video recorder and checkpoints,

then trains for `runner.max_epochs` training steps (one rollout and one update each).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict
from functools import partial
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter

from algorithms import metrics as M
from algorithms.distributed.config import LOGPROB_TYPES, PRECISIONS, RunConfig
from algorithms.distributed.placement import (
    ComponentPlacement,
    actor_devices,
    actor_rank_devices,
    env_worker_devices,
    rollout_worker_devices,
)
from algorithms.sigterm import SigtermHook

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "actor.zip"


# ---------------------------------------------------------------------------------------- config -> objects
def env_spec(c: RunConfig):
    from algorithms.distributed.env_worker import EnvSpec

    e, k = c.env.train, c.actor.model.num_action_chunks
    return EnvSpec(task=e.task, backend=e.backend, chunk=k, image_size=e.image_size, instance_id=e.instance_id,
                   max_episode_steps=e.max_episode_steps, obs_every=k if e.skip_intermediate_obs_in_chunk else 1,
                   reward_coef=e.reward_coef, success_bonus=e.success_bonus, reward_shaping=e.reward_shaping,
                   extra=dict(e.omni_config),
                   tasks=tuple(e.tasks), instance_ids=tuple(e.instance_ids),
                   group_size=c.algorithm.group_size if c.algorithm.adv_type == "grpo" else 1, layout=e.layout)


def model_dtype(c: RunConfig) -> str:
    """The dtype the actor's policy is built in: float32 when every weight is trained with master weights
    (the SFT checkpoint's float32 weights then load unrounded), else `precision` (LoRA's frozen base; the
    trainer makes the trained parameters float32 itself)."""
    m = c.actor.model
    return "float32" if m.master_weights and not m.is_lora else PRECISIONS[m.precision]


def acting_copy_kwargs(c: RunConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A rollout worker's policy arguments: the trainer's, in `precision`. The copies only infer (FP8 needs
    bf16 weights); weight syncs from the trainer's float32 master weights cast as they load."""
    return dict(kwargs, torch_dtype=PRECISIONS[c.actor.model.precision])


def policy_kwargs(c: RunConfig) -> dict[str, Any]:
    """`OpenVLAOFTPolicy` arguments from `actor.model`, `actor.optim` and `rollout.sampling_params`."""
    m, o, s = c.actor.model, c.actor.optim, c.rollout.sampling_params
    overrides: dict[str, Any] = {"num_action_chunks": m.num_action_chunks, "num_images_in_input": m.num_images_in_input,
                                 "use_proprio": m.use_proprio}
    if m.image_size is not None:
        overrides["image_sizes"] = [m.image_size, m.image_size]
    kwargs: dict[str, Any] = dict(
        config_overrides=overrides, unnorm_key=m.unnorm_key, temperature=s.temperature_train, top_k=s.top_k,
        lora_rank=m.lora_rank if m.is_lora else 0, lora_alpha=m.lora_alpha,
        freeze_vision_backbone=m.freeze_vision_backbone, torch_dtype=model_dtype(c),
        attn_implementation=m.attn_implementation, center_crop=m.center_crop,
        gradient_checkpointing=m.gradient_checkpointing,
        optimizer_kwargs={"betas": (o.adam_beta1, o.adam_beta2), "eps": o.adam_eps, "weight_decay": o.weight_decay},
    )
    if m.model_path is not None:
        kwargs["model_path"] = m.model_path
    else:
        kwargs["preset"] = m.preset
    return kwargs


def trainer_kwargs(c: RunConfig) -> dict[str, Any]:
    """`algorithms.PPO` / `GRPO` arguments from `algorithm`, `actor` and `env.train`."""
    a, alg = c.actor, c.algorithm
    kwargs: dict[str, Any] = dict(
        learning_rate=a.optim.lr, n_steps=c.n_steps, batch_size=a.global_batch_size,
        micro_batch_size=a.micro_batch_size, n_epochs=alg.update_epoch, gamma=alg.gamma, gae_lambda=alg.gae_lambda,
        clip_range=alg.clip_ratio_low, clip_ratio_low=alg.clip_ratio_low, clip_ratio_high=alg.clip_ratio_high,
        dual_clip=alg.clip_ratio_c, ent_coef=alg.entropy_bonus, max_grad_norm=a.optim.clip_grad,
        target_kl=alg.target_kl, desired_kl=alg.desired_kl, ratio_level=LOGPROB_TYPES[alg.logprob_type],
        bf16=None if a.model.precision == "bf16" else False, master_weights=a.model.master_weights,
        seed=a.seed, policy_kwargs=policy_kwargs(c),
        recompute_log_probs=recompute_log_probs(c), lr_warmup_steps=a.optim.lr_warmup_steps,
    )
    if alg.adv_type == "grpo":
        kwargs.update(group_size=alg.group_size, normalize_std=alg.normalize_std, filter_groups=alg.filter_rewards,
                      group_seed=c.env.train.seed, normalize_advantage=False)
    else:
        kwargs.update(clip_range_vf=alg.value_clip, normalize_advantage=alg.normalize_advantages, vf_coef=alg.vf_coef,
                      value_lr=a.optim.value_lr, value_loss_type=alg.value_loss_type, huber_delta=alg.huber_delta,
                      critic_warmup_updates=a.optim.critic_warmup_steps)
    return kwargs


def recompute_log_probs(c: RunConfig) -> bool:
    """`algorithm.recompute_log_probs`; null: exactly when `rollout.fast_inference` is on (its compiled or
    FP8 forward passes give other log-probs than the update's eager one)."""
    r = c.algorithm.recompute_log_probs
    return c.rollout.fast_inference.enabled if r is None else bool(r)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_file_handler(path: str) -> logging.Handler:
    """Appends log lines to the run's log file (the driver and the runner share it; each line is one
    append, so their lines do not mix)."""
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    return handler


def checkpoint_path(log_dir: str, global_step: int) -> str:
    return os.path.join(log_dir, CHECKPOINT_DIR, f"global_step_{global_step}", CHECKPOINT_FILE)


def resolve_resume(path: str) -> str:
    """`runner.resume_dir` (a global_step_N folder or the actor.zip in it) -> the checkpoint file."""
    return os.path.join(path, CHECKPOINT_FILE) if os.path.isdir(path) else path


def check_fp8_here() -> None:
    """Before starting rollout workers with FP8: the GPU here (the actor's; a cluster's GPUs are
    normally of one kind) must run FP8 GEMMs, so that an unsupported GPU fails now rather than inside
    every worker. Without CUDA here there is nothing to check (the workers check their own)."""
    import torch as th

    if th.cuda.is_available():
        from vla_policies.openvla_oft.fp8 import check_fp8_device

        check_fp8_device(th.device("cuda"), th.bfloat16)


# ---------------------------------------------------------------------------------------- logging, checkpoints
class TimeBudgetCallback(BaseCallback):
    """Ends `learn` once `seconds` have passed (the rollout in progress is dropped; the last finished
    training step is what the final checkpoint holds), so long runs go in pieces with `resume_dir`."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if time.perf_counter() - self.start < self.seconds:
            return True
        log.info("runner.max_minutes reached after %.0f s at training step %d; resume with runner.resume_dir",
                 time.perf_counter() - self.start, getattr(self.model, "global_step", -1))
        return False


class StopRequest:
    """A flag the driver sets and the runner reads (a CPU-less Ray actor, so it works across nodes)."""

    def __init__(self):
        self.signal: str | None = None

    def request(self, why: str) -> None:
        self.signal = self.signal or why

    def requested(self) -> str | None:
        return self.signal


class StopRequestCallback(BaseCallback):
    """Ends `learn` once the driver asks (`launch` forwards SIGTERM: `timeout`, a scheduler's
    preemption, `kill`), like `TimeBudgetCallback`: the final checkpoint then holds the last finished
    training step. Asks the flag at most every `every` seconds."""

    def __init__(self, flag, every: float = 1.0):
        super().__init__()
        self.flag, self.every, self.last = flag, every, 0.0
        self.stopped: str | None = None

    def _on_step(self) -> bool:
        import ray

        now = time.perf_counter()
        if now - self.last < self.every:
            return True
        self.last = now
        self.stopped = ray.get(self.flag.requested.remote())
        if self.stopped is None:
            return True
        log.warning("%s: stopping at training step %d; the final checkpoint holds it; resume with "
                    "runner.resume_dir", self.stopped, getattr(self.model, "global_step", -1))
        return False


def _forward_sigterm(flag, count: int) -> None:
    """The driver's SIGTERM: the first asks the runner to stop after its step and save (`StopRequest`),
    a second ends the driver at once (the last saved checkpoint stays)."""
    if count > 1:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    log.warning("SIGTERM: the run stops after its current step and saves a checkpoint (SIGTERM again: "
                "stop at once, the last saved checkpoint stays)")
    flag.request.remote("SIGTERM")


class ProgressWriter(KVWriter):
    """One line per training step in the run's log: progress, throughput and the main metrics."""

    NAMES = (M.ROLLOUT_RETURNS_MEAN, M.ENV_SUCCESS_ONCE, M.ENV_Q_SCORE, M.ENV_EPISODE_LEN, M.ACTOR_LOSS,
             M.ACTOR_APPROX_KL, M.ACTOR_UNDRAWABLE_FRACTION, M.TIME_ROLLOUT, M.TIME_UPDATE,
             "rollout/discarded_steps")

    def __init__(self, model, total_steps: int):
        self.model, self.total_steps = model, total_steps
        self.t0 = time.perf_counter()

    def write(self, key_values: dict[str, Any], key_excluded: dict, step: int = 0) -> None:
        elapsed = time.perf_counter() - self.t0
        # train() dumps before the trainer counts its step: this dump is step global_step + 1
        parts = [f"step {self.model.global_step + 1}/{self.total_steps}",
                 f"{step} chunk steps ({step / max(elapsed, 1e-9):.1f}/s)"]
        parts += [f"{name} {float(key_values[name]):.4g}" for name in self.NAMES if name in key_values]
        log.info(" | ".join(parts) + f" | {elapsed:.0f} s")

    def close(self) -> None:
        pass


class CheckpointCallback(BaseCallback):
    """Saves the trainer to ``<log_dir>/checkpoints/global_step_N/actor.zip`` every `save_interval`
    training steps (after the update; SB3 calls `on_rollout_start` next) and on `save`."""

    def __init__(self, log_dir: str, save_interval: int):
        super().__init__()
        self.log_dir, self.save_interval = log_dir, save_interval
        self.saved: list[str] = []

    def _on_rollout_start(self) -> None:
        g = self.model.global_step
        if self.save_interval and g and g % self.save_interval == 0:
            self.save(g)

    def _on_step(self) -> bool:
        return True

    def save(self, g: int) -> str:
        path = checkpoint_path(self.log_dir, g)
        if not self.saved or self.saved[-1] != path:
            self.model.save(path)
            self.saved.append(path)
            log.info("checkpoint: %s", path)
        return path


# ---------------------------------------------------------------------------------------- the runner
class EmbodiedRunner:
    """The actor component: builds the workers and the trainer, and trains. Runs as a Ray actor.

    Args:
        cfg: the validated config.
        placement: where each component runs.
        reservation: the `NodeReservation` workers are pinned to.
        log_dir: the run's folder (`runner.logger.log_path`).
        config_dict: the resolved config, for W&B / SwanLab.
    """

    def __init__(self, cfg: RunConfig, placement: ComponentPlacement, reservation, log_dir: str,
                 config_dict: Mapping[str, Any] | None = None, stop_flag=None):
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
        self.cfg, self.placement, self.reservation = cfg, placement, reservation
        self.stop_flag = stop_flag
        self.log_dir = log_dir
        self.config_dict = config_dict
        self.venv = self.model = self.rollout_group = self.actor_group = None
        self._log_file = None
        if log_dir and os.path.isdir(log_dir):  # Ray forwards our stdout to the driver only on a best-effort basis
            self._log_file = log_file_handler(os.path.join(log_dir, "run_embodiment.log"))
            logging.getLogger().addHandler(self._log_file)

    def ping(self) -> tuple[int, str]:
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def _make_env(self):
        from algorithms.distributed.vec_env import RayVecEnv

        c = self.cfg
        devices = env_worker_devices(self.placement, c.env.train.num_env_subprocess)
        options = [self.reservation.options([d], visible=False) for d in devices]
        return RayVecEnv(env_spec(c), c.env.train.total_num_envs, options, gpu_ids=[d.gpu for d in devices],
                         num_stages=c.rollout.pipeline_stage_num, max_restarts=c.env.train.max_worker_restarts)

    def _make_rollout_group(self, model):
        import ray

        from algorithms.distributed.rollout_worker import RolloutGroup, RolloutWorker

        devices = rollout_worker_devices(self.placement)
        if not devices:
            return None
        kwargs = acting_copy_kwargs(self.cfg, model.policy_kwargs)
        fast = self.cfg.rollout.fast_inference.kwargs()
        if fast is not None and fast["fp8"]:
            check_fp8_here()
        workers = [ray.remote(RolloutWorker).options(**self.reservation.options([d])).remote(
            type(model.policy), model.observation_space, model.action_space, kwargs,
            token_level=model._token_level, bf16=model.use_bf16, fast_inference=fast) for d in devices]
        log.info("%d rollout worker(s) on %s%s", len(workers), ", ".join(map(str, devices)),
                 f" with fast inference {fast}" if fast else "")
        return RolloutGroup(workers, full_first_sync=self.cfg.actor.model.model_path is None)

    def run(self) -> dict[str, Any]:
        import torch as th

        from algorithms import VideoRecorderCallback, make_logger
        from algorithms.distributed.pipeline import PipelinedGRPO, PipelinedPPO
        from vla_policies import OpenVLAOFTPolicy

        c, t0 = self.cfg, time.perf_counter()
        node, mine = actor_devices(self.placement)
        ranks = actor_rank_devices(self.placement, c.actor.num_cpu_ranks)
        world = len(ranks)
        if world > 1:
            mine = ranks[:1]
        if not th.cuda.is_available():
            env_here = sum(d.node == node for d in env_worker_devices(self.placement, c.env.train.num_env_subprocess))
            ranks_here = sum(d.node == node for d in ranks)
            th.set_num_threads(max(1, ((os.cpu_count() or 1) - env_here) // ranks_here))
        log.info("actor on %s (torch on %s, %d thread(s))", ", ".join(map(str, mine)),
                 "cuda" if th.cuda.is_available() else "cpu", th.get_num_threads())
        self.venv = self._make_env()
        log.info("%d envs in %d env worker(s), %d pipeline stage(s); env up in %.1f s", self.venv.num_envs,
                 self.venv.num_workers, self.venv.num_stages, time.perf_counter() - t0)

        cls = PipelinedGRPO if c.algorithm.adv_type == "grpo" else PipelinedPPO
        kwargs = trainer_kwargs(c)
        if world > 1:  # a data-parallel actor: this process is rank 0, ranks 1.. are Ray actors
            from algorithms.distributed.actor_group import ActorGroup, data_parallel_classes

            cls, rank_cls = data_parallel_classes(c.algorithm.adv_type == "grpo")
            kwargs["strategy"] = c.actor.strategy
            self.actor_group = ActorGroup.start(
                self.reservation, ranks, rank_cls, OpenVLAOFTPolicy, self.venv.observation_space,
                self.venv.action_space, self.venv.num_envs, kwargs, num_threads=th.get_num_threads())
            log.info("data-parallel actor (%s): %d ranks on %s", c.actor.strategy, world, ", ".join(map(str, ranks)))
        resume = resolve_resume(c.runner.resume_dir) if c.runner.resume_dir else None
        if resume:
            self.model = cls.load(resume, env=self.venv, device="auto")
            log.info("resumed from %s at training step %d", resume, self.model.global_step)
        else:
            self.model = cls(OpenVLAOFTPolicy, self.venv, **kwargs)
            if c.algorithm.adv_type != "grpo":
                self.venv.seed(c.env.train.seed)
        if world > 1:
            self.model.strategy = c.actor.strategy
            self.model.actor_group = self.actor_group
            if resume and c.actor.strategy == "ddp":  # every rank steps from the same optimizer moments
                self.actor_group.load_optimizer_state(self.model.policy.optimizer.state_dict())
        model = self.model
        n_params = sum(p.numel() for p in model.policy.parameters())
        log.info("%s with OpenVLA-OFT (%s, %.1fM parameters) on %s", cls.__name__,
                 c.actor.model.preset or c.actor.model.model_path, n_params / 1e6, model.device)
        if resume:  # the config decides, not the checkpoint
            model.recompute_log_probs = kwargs["recompute_log_probs"]
        self.rollout_group = model.rollout_group = self._make_rollout_group(model)
        fast = c.rollout.fast_inference.kwargs()
        if fast is not None and self.rollout_group is None:
            # the trainer's policy acts: its no-grad eval-mode passes take the fast path, the update's stay
            # eager (FP8, which would replace the weights it trains, is refused by the config check)
            model.policy.enable_fast_inference(**fast)
            log.info("the trainer's policy acts with fast inference %s", fast)
        if model.recompute_log_probs:
            log.info("old log-probs are recomputed by the update's forward pass before every update")

        total = c.num_training_steps
        logger = make_logger(self.log_dir, c.runner.logger.logger_backends, project=c.runner.logger.project_name,
                             experiment_name=c.runner.logger.experiment_name,
                             config=dict(self.config_dict or asdict(c)))
        logger.output_formats.append(ProgressWriter(model, total))
        model.set_logger(logger)
        checkpoints = CheckpointCallback(self.log_dir, c.runner.save_interval)
        callbacks: list[BaseCallback] = [checkpoints]
        if c.runner.max_minutes is not None:
            callbacks.append(TimeBudgetCallback(60 * c.runner.max_minutes))
        stop = StopRequestCallback(self.stop_flag) if self.stop_flag is not None else None
        if stop is not None:
            callbacks.append(stop)
        v = c.video_cfg
        if v.save_video:
            videos = VideoRecorderCallback(video_base_dir=v.video_base_dir, env_indices=(0,),
                                           info_on_video=v.info_on_video, fps=v.fps,
                                           every_n_episodes=v.every_n_episodes, max_videos=v.max_videos)
            callbacks.append(videos)
        remaining = max(total - model.global_step, 0)
        log.info("training for %d step(s) of %d chunk steps x %d envs", remaining, model.n_steps, self.venv.num_envs)
        # log_interval=None: one dump per training step (rollout and update metrics together, at train()'s end)
        model.learn(remaining * model.n_steps * self.venv.num_envs, callback=callbacks, log_interval=None,
                    reset_num_timesteps=resume is None)
        final = checkpoints.save(model.global_step)
        logger.close()
        summary = {"global_step": model.global_step, "num_timesteps": model.num_timesteps,
                   "seconds": time.perf_counter() - t0, "checkpoints": checkpoints.saved, "final_checkpoint": final,
                   "videos": list(videos.paths) if v.save_video else [], "env_worker_restarts": sum(self.venv.restarts),
                   "rollout_workers": len(self.rollout_group.workers) if self.rollout_group else 0,
                   "rollout_weights_version": self.rollout_group.version if self.rollout_group else None,
                   "discarded_steps": model.discarded_steps, "actor_ranks": world,
                   "fast_inference": fast, "recompute_log_probs": model.recompute_log_probs,
                   "stopped_by": stop.stopped if stop is not None else None}
        log.info("done: %d training steps, %d chunk steps in %.0f s; checkpoint %s", model.global_step,
                 model.num_timesteps, summary["seconds"], final)
        return summary

    def close(self) -> None:
        if self.actor_group is not None:
            self.actor_group.close()
        if self.rollout_group is not None:
            self.rollout_group.close()
        if self.venv is not None:
            self.venv.close()
        if self._log_file is not None:
            logging.getLogger().removeHandler(self._log_file)
            self._log_file.close()


def launch(cfg: RunConfig, placement: ComponentPlacement, log_dir: str,
           config_dict: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Reserve the nodes, start the runner on the actor's devices and train; returns the run's summary.
    Ray must be connected (`algorithms.distributed.cluster.connect`). SIGTERM to the driver (from its
    main thread) stops the run after its current training step with a final checkpoint
    (``summary["stopped_by"]``); a second SIGTERM ends the driver at once."""
    import ray

    from algorithms.distributed.cluster import NodeReservation

    reservation = NodeReservation.create(placement.num_nodes, placement.gpus_per_node)
    try:
        ranks = actor_rank_devices(placement, cfg.actor.num_cpu_ranks)
        devices = ranks[:1] if len(ranks) > 1 else actor_devices(placement)[1]  # rank 0 of a data-parallel actor
        flag = ray.remote(num_cpus=0)(StopRequest).remote()
        runner = ray.remote(EmbodiedRunner).options(**reservation.options(devices)).remote(
            cfg, placement, reservation, log_dir, config_dict, flag)
        try:
            with SigtermHook(partial(_forward_sigterm, flag)):
                return ray.get(runner.run.remote())
        finally:
            try:
                ray.get(runner.close.remote(), timeout=120)
            except Exception as e:
                log.warning("closing the runner: %s", e)
            ray.kill(runner, no_restart=True)
    finally:
        reservation.remove()
