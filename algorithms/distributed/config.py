"""The schema of an embodied training run (`examples/embodiment/config/*.yaml`) and its validation.

The dataclasses below are the single list of keys a run accepts, with their types and defaults.
`validate_config` checks a composed Hydra config against them *before anything starts*: unknown keys
(with the closest known key), values of the wrong type, and values that cannot work together
(placement, env counts, batch sizes, model paths, logger backends, the simulator backend). Every
problem is reported at once, each with its key and what to do. The result is a typed `RunConfig`.

Key names follow the user guide and RLinf's Behavior configs (`cluster.component_placement`,
`rollout.pipeline_stage_num`, `runner.logger.log_path`, `env.train.total_num_envs`, ...).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from algorithms.distributed.placement import (
    ComponentPlacement,
    PlacementError,
    actor_rank_devices,
    env_worker_devices,
    parse_component_placement,
    rollout_worker_devices,
)

LOGGER_BACKENDS = ("tensorboard", "wandb", "swanlab")
PRESETS = ("tiny", "small", "small-p28", "7.5b")
PRECISIONS = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
LOGPROB_TYPES = {"token_level": "token", "action_level": "action", "chunk_level": "chunk"}
ADV_TYPES = ("gae", "grpo")
ACTOR_STRATEGIES = ("ddp", "fsdp")  # algorithms.distributed.data_parallel.STRATEGIES (kept torch-free here)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# ---------------------------------------------------------------------------------------- schema
@dataclass
class LoggerConfig:
    """`runner.logger`: where and how metrics go."""

    log_path: str = "logs"  # root; each run writes to <log_path>/<time>-<config name>
    project_name: str = "behavior-rl"
    experiment_name: str = "behavior"
    logger_backends: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class RunnerConfig:
    task_type: str = "embodied"
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    max_epochs: int = 100  # training steps: one rollout + one update each
    max_steps: int = -1  # if > 0, at most this many training steps (RLinf's cap on max_epochs)
    save_interval: int = 10  # checkpoint every N training steps (0: only the final one)
    resume_dir: str | None = None  # a checkpoints/global_step_N folder (or its actor.zip) to continue from
    max_minutes: float | None = None  # stop (with a checkpoint) once training has run this long; resume_dir goes on


@dataclass
class ClusterConfig:
    num_nodes: int = 1
    component_placement: dict[str, Any] = field(default_factory=dict)
    ray_address: str | None = None  # None: start Ray here (1 node) or join the running cluster ("auto", >1 node)


@dataclass
class EnvConfig:
    """`env.train`: the training envs (Behavior-R1Pro-v0 through `gym.make`)."""

    backend: str = "mujoco"  # "mujoco" (embedded) or "omnigibson" (BEHAVIOR-1K on Isaac Sim)
    task: str = "pick_and_place"
    instance_id: int = 0
    tasks: list[str] = field(default_factory=list)  # several tasks, cycled over the envs (GRPO: over groups)
    instance_ids: list[int] = field(default_factory=list)  # several instances (scene variants), cycled likewise
    image_size: int = 224
    total_num_envs: int = 8
    num_env_subprocess: int = 1  # env worker processes per env device (GPU, or CPU node)
    max_episode_steps: int | None = None  # None: the task's own limit
    max_steps_per_rollout_epoch: int = 256  # env steps per env in one rollout epoch
    rollout_epoch: int = 1  # rollout epochs per training step
    skip_intermediate_obs_in_chunk: bool = True  # render cameras only at chunk boundaries
    reward_coef: float = 1.0
    success_bonus: float = 0.0
    reward_shaping: float = 0.0  # > 0: staged potential shaping (reach, lift, carry) of pick-style skills
    layout: str | None = None  # skill tasks: "tabletop" (null: the default) or "mobile" (behavior_gym.tasks.skills)
    seed: int = 0
    max_worker_restarts: int = 3  # per env worker; a worker that dies more often stops the run
    omni_config: dict[str, Any] = field(default_factory=dict)  # OmniGibson config overrides (backend omnigibson)


@dataclass
class EnvSection:
    train: EnvConfig = field(default_factory=EnvConfig)


@dataclass
class SamplingConfig:
    temperature_train: float = 1.0
    top_k: int = 0  # 0: all 256 action tokens


@dataclass
class FastInferenceConfig:
    """`rollout.fast_inference`: the policy that computes rollout actions (a rollout worker's copy, or the
    trainer's own when rollout shares the actor's devices) runs its no-grad forward passes through
    `OpenVLAOFTForActionPrediction.enable_fast_inference`; the update stays eager."""

    enabled: bool = False
    compile: bool = True  # torch.compile each ViT block and Llama layer
    cuda_graphs: bool | None = None  # whole forward passes as CUDA graphs; None: on CUDA
    mode: str | None = None  # torch.compile mode (None: its default)
    fp8: bool = False  # FP8 GEMMs in the Llama layers (CUDA compute capability >= 8.9, rollout on its own GPUs)
    fp8_vision: bool = False  # with fp8: the ViT blocks' linears too

    def kwargs(self) -> dict[str, Any] | None:
        """`enable_fast_inference` arguments, or None when off."""
        if not self.enabled:
            return None
        return {"compile": self.compile, "cuda_graphs": self.cuda_graphs, "mode": self.mode, "fp8": self.fp8,
                "fp8_vision": self.fp8_vision}


@dataclass
class RolloutConfig:
    pipeline_stage_num: int = 1  # split the envs into stages: one steps while the policy acts for another
    sampling_params: SamplingConfig = field(default_factory=SamplingConfig)
    fast_inference: FastInferenceConfig = field(default_factory=FastInferenceConfig)


@dataclass
class ModelConfig:
    """`actor.model`: the OpenVLA-OFT policy (`vla_policies.OpenVLAOFTPolicy`)."""

    model_type: str = "openvla_oft"
    model_path: str | None = None  # a released OpenVLA(-OFT) / RLinf checkpoint folder
    preset: str | None = None  # or a randomly initialised "tiny" / "small" / "7.5b" model
    precision: str = "bf16"  # bf16, fp16 or fp32: the dtype the forward passes compute in
    # the trained parameters and the optimizer's moments in float32 (bf16 autocast computes); false: train in
    # precision's dtype itself, where AdamW steps under half a bf16 ulp of a weight are lost (runs 1-14)
    master_weights: bool = True
    num_action_chunks: int = 8
    action_dim: int = 23
    num_images_in_input: int = 3
    image_size: int | None = None  # model input resolution (presets only; a checkpoint fixes its own)
    unnorm_key: str | None = None
    use_proprio: bool = False
    is_lora: bool = False
    lora_rank: int = 32
    lora_alpha: int | None = None
    gradient_checkpointing: bool = False
    freeze_vision_backbone: bool = False
    center_crop: float | None = None  # crop this fraction of the image area (OFT evaluation uses 0.9)
    attn_implementation: str = "sdpa"


@dataclass
class OptimConfig:
    lr: float = 1e-4
    value_lr: float = 3e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.01
    clip_grad: float = 10.0
    lr_warmup_steps: int = 0  # the actor's lr rises linearly over this many optimizer steps (0: off, as RLinf)
    # PPO: the first this many updates (one per rollout) train the value head only (RLinf's key)
    critic_warmup_steps: int = 0


@dataclass
class ActorConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    micro_batch_size: int = 2  # samples per forward/backward pass on one actor rank
    global_batch_size: int = 16  # samples per optimizer step, all actor ranks together
    seed: int = 1234
    strategy: str = "ddp"  # data parallelism over several actor ranks: "ddp", or "fsdp" (FULL_SHARD) for big models
    num_cpu_ranks: int = 1  # without GPUs: actor ranks (gloo processes) per actor node; with GPUs, one per actor GPU


@dataclass
class AlgorithmConfig:
    adv_type: str = "gae"  # "gae": PPO; "grpo": GRPO
    gamma: float = 0.99
    gae_lambda: float = 0.95
    normalize_advantages: bool = True
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = None  # dual clip (None: off)
    value_clip: float | None = 0.2
    value_loss_type: str = "huber"
    huber_delta: float = 10.0
    vf_coef: float = 1.0
    entropy_bonus: float = 0.0
    update_epoch: int = 1
    target_kl: float | None = None
    desired_kl: float | None = None  # adapt the actor's lr to this per-token KL per update (None: fixed lr)
    logprob_type: str = "token_level"  # token_level, action_level or chunk_level ratios
    reward_type: str = "chunk_level"
    group_size: int = 1  # GRPO: envs per group (same initial state)
    normalize_std: bool = True  # GRPO: divide by the group's std
    filter_rewards: bool = False  # GRPO: drop groups that all succeeded or all failed
    recompute_log_probs: bool | None = None  # old log-probs from the update's forward; None: with fast inference


@dataclass
class VideoConfig:
    save_video: bool = False
    info_on_video: bool = True
    video_base_dir: str = "${runner.logger.log_path}/video/train"
    fps: int = 15
    every_n_episodes: int = 1
    max_videos: int | None = None


@dataclass
class RunConfig:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    env: EnvSection = field(default_factory=EnvSection)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    video_cfg: VideoConfig = field(default_factory=VideoConfig)

    # -- derived values ---------------------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        """Chunk steps per env per training step (SB3's `n_steps`)."""
        e = self.env.train
        return e.rollout_epoch * e.max_steps_per_rollout_epoch // self.actor.model.num_action_chunks

    @property
    def num_training_steps(self) -> int:
        r = self.runner
        return min(r.max_epochs, r.max_steps) if r.max_steps > 0 else r.max_epochs


# ---------------------------------------------------------------------------------------- errors
class ConfigError(ValueError):
    """Every problem of a config, one line each: ``key: what is wrong; what to do``."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  - {key}: {msg}" for key, msg in problems)
        super().__init__(f"the config has {len(problems)} problem(s); nothing was started:\n{lines}")

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.problems]


_FREE_FORM = {"cluster.component_placement", "env.train.omni_config"}  # any keys allowed below these


def _schema_keys(cls, prefix: str = "") -> dict[str, Any]:
    """Every key of the schema (full dotted path -> field type), sections included."""
    out = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        out[key] = f.type
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out.update(_schema_keys(type(default), key + "."))
    return out


_KEYS = _schema_keys(RunConfig)
# Where users coming from RLinf's yaml or blog put keys that live elsewhere here.
_MOVED = {
    "env.pipeline_stage_num": "rollout.pipeline_stage_num",
    "env.train.pipeline_stage_num": "rollout.pipeline_stage_num",
    "env.train.video_cfg": "video_cfg",
    "env.video_cfg": "video_cfg",
    "rollout.model": "actor.model",
    "env.train.group_size": "algorithm.group_size",
    "algorithm.entropy_coef": "algorithm.entropy_bonus",
}


def _unknown_keys(raw: Any, prefix: str = "") -> list[tuple[str, str]]:
    problems = []
    if not isinstance(raw, dict):
        return problems
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if key in _FREE_FORM:
            continue
        if key not in _KEYS:
            if key in _MOVED:
                hint = f"this key is {_MOVED[key]} here"
            else:
                leaf = key.rsplit(".", 1)[-1]
                same_leaf = [k2 for k2 in _KEYS if k2.rsplit(".", 1)[-1] == leaf]
                close = same_leaf or difflib.get_close_matches(key, list(_KEYS), n=3, cutoff=0.75)
                hint = f"did you mean {' or '.join(close)}?" if close else "remove it"
            problems.append((key, f"unknown key; {hint}"))
        elif isinstance(v, dict) and dataclasses.is_dataclass(_default_of(key)):
            problems.extend(_unknown_keys(v, key + "."))
    return problems


def _default_of(key: str) -> Any:
    obj: Any = RunConfig()
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Type-check `cfg` against the schema (unknown keys, types, missing interpolations) and return the
    typed config. Raises `ConfigError`; semantic checks are `check_run_config`'s."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError([(str(getattr(e, "full_key", "") or "?"), f"cannot resolve: {e.msg}")]) from None
    problems = _unknown_keys(raw)
    if problems:
        raise ConfigError(problems)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), raw)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError([(str(getattr(e, "full_key", "") or "?"), f"bad value: {e.msg}")]) from None


# ---------------------------------------------------------------------------------------- checks
def check_run_config(c: RunConfig, gpus_per_node: int) -> ComponentPlacement:
    """Semantic checks of a typed config for a cluster with `gpus_per_node` GPUs on each node (0: CPUs
    only); returns the placement. Raises `ConfigError` listing every problem."""
    problems: list[tuple[str, str]] = []
    add = lambda key, msg: problems.append((key, msg))  # noqa: E731
    e, a, m, alg, r = c.env.train, c.actor, c.actor.model, c.algorithm, c.runner

    # runner / logger
    if r.task_type != "embodied":
        add("runner.task_type", f"only 'embodied' runs here, got {r.task_type!r}")
    if r.max_epochs < 1:
        add("runner.max_epochs", f"must be >= 1, got {r.max_epochs}")
    if r.save_interval < 0:
        add("runner.save_interval", f"must be >= 0 (0: only a final checkpoint), got {r.save_interval}")
    for b in r.logger.logger_backends:
        if b not in LOGGER_BACKENDS:
            add("runner.logger.logger_backends", f"unknown backend {b!r}; choose from {list(LOGGER_BACKENDS)}")
        elif b != "tensorboard" and importlib.util.find_spec(b) is None:
            add("runner.logger.logger_backends", f"{b!r} is not installed: pip install behavior-rl[{b}]")
    if r.resume_dir is not None and not os.path.exists(r.resume_dir):
        add("runner.resume_dir", f"{r.resume_dir!r} does not exist; point it at a checkpoints/global_step_N folder")

    # cluster
    if c.cluster.num_nodes < 1:
        add("cluster.num_nodes", f"must be >= 1, got {c.cluster.num_nodes}")
    placement = None
    try:
        placement = parse_component_placement(c.cluster.component_placement, max(c.cluster.num_nodes, 1),
                                              gpus_per_node)
    except PlacementError as err:
        add(err.key, str(err).split(": ", 1)[1])

    # env
    if e.backend not in ("mujoco", "omnigibson"):
        add("env.train.backend", f"unknown backend {e.backend!r}; choose 'mujoco' (embedded, runs anywhere) or "
                                 "'omnigibson' (BEHAVIOR-1K on Isaac Sim)")
    elif e.backend == "mujoco":
        for key, task in [("env.train.task", e.task)] * (not e.tasks) + [("env.train.tasks", t) for t in e.tasks]:
            msg = _embedded_task_problem(task)
            if msg:
                add(key, msg)
    else:
        from behavior_gym.backends import omnigibson_available

        ok, why = omnigibson_available()
        if not ok:
            add("env.train.backend", f"the OmniGibson backend cannot run here ({why}); install BEHAVIOR-1K, set "
                                     "ISAAC_PATH and OMNIGIBSON_DATA_PATH, or use env.train.backend=mujoco")
    from behavior_gym.tasks.skills import LAYOUTS

    if e.layout is not None and e.layout not in LAYOUTS:
        add("env.train.layout", f"{e.layout!r} is not a skill layout; choose one of {list(LAYOUTS)} ('tabletop': "
            "objects start in front of the left arm; 'mobile': anywhere on the table, the base drives) or null")
    if e.reward_shaping < 0:
        add("env.train.reward_shaping", f"must be >= 0 (0: BEHAVIOR's reward only), got {e.reward_shaping}")
    elif e.reward_shaping > 0:
        from behavior_gym.wrappers.shaping import SHAPED_TASKS

        if e.backend != "mujoco":
            add("env.train.reward_shaping", "shaping reads the embedded backend's MuJoCo state; set it to 0 with "
                                            "env.train.backend=omnigibson")
        elif not any(t in SHAPED_TASKS for t in (e.tasks or [e.task])):
            add("env.train.reward_shaping", f"none of the training tasks is shaped (only {list(SHAPED_TASKS)} are); "
                                            "set it to 0")
    if e.image_size < 16:
        add("env.train.image_size", f"must be >= 16 pixels, got {e.image_size}")
    n, s = e.total_num_envs, c.rollout.pipeline_stage_num
    if n < 1:
        add("env.train.total_num_envs", f"must be >= 1, got {n}")
    if e.num_env_subprocess < 1:
        add("env.train.num_env_subprocess", f"must be >= 1, got {e.num_env_subprocess}")
    if s < 1:
        add("rollout.pipeline_stage_num", f"must be >= 1, got {s}")
    elif n >= 1 and n % s:
        ok_s = [d for d in range(1, n + 1) if n % d == 0]
        add("rollout.pipeline_stage_num", f"{s} does not divide env.train.total_num_envs={n}; use one of {ok_s} "
                                          f"or make total_num_envs a multiple of {s}")
    if placement is not None and n >= 1 and e.num_env_subprocess >= 1:
        workers = len(env_worker_devices(placement, e.num_env_subprocess))
        if n % workers:
            add("env.train.total_num_envs", f"{n} envs cannot be shared evenly by {workers} env workers "
                                            f"({len(placement.devices['env'])} env device(s) x num_env_subprocess="
                                            f"{e.num_env_subprocess}); use a multiple of {workers}")
        if e.backend == "omnigibson":
            if n != workers:
                per_device = max(1, n // len(placement.devices["env"]))
                add("env.train.num_env_subprocess", f"OmniGibson runs one simulator per process: give each of the {n} "
                                                    f"envs its own worker (num_env_subprocess={per_device})")
            for node in placement.nodes("env"):
                gpus = [d.gpu for d in placement.devices["env"] if d.node == node and d.gpu is not None]
                if gpus and gpus != list(range(len(gpus))):
                    add("cluster.component_placement.env",
                        f"env GPUs on node {node} are {gpus}: Isaac Sim can hang unless env workers use GPUs from 0 "
                        f"(put env on 0-{len(gpus) - 1} and move the other components)")
    if e.max_steps_per_rollout_epoch < 1 or e.max_steps_per_rollout_epoch % m.num_action_chunks:
        add("env.train.max_steps_per_rollout_epoch", f"{e.max_steps_per_rollout_epoch} must be a positive multiple "
                                                     f"of actor.model.num_action_chunks={m.num_action_chunks}")
    if e.rollout_epoch < 1:
        add("env.train.rollout_epoch", f"must be >= 1, got {e.rollout_epoch}")
    if e.max_episode_steps is not None and e.max_episode_steps < 1:
        add("env.train.max_episode_steps", f"must be >= 1 or null (the task's limit), got {e.max_episode_steps}")
    if e.max_worker_restarts < 0:
        add("env.train.max_worker_restarts", f"must be >= 0, got {e.max_worker_restarts}")

    # model
    if m.model_type != "openvla_oft":
        add("actor.model.model_type", f"only 'openvla_oft' is available, got {m.model_type!r}")
    if (m.model_path is None) == (m.preset is None):
        add("actor.model.model_path", "set exactly one of actor.model.model_path (a checkpoint folder) and "
                                      f"actor.model.preset ({', '.join(PRESETS)})")
    elif m.model_path is not None and not os.path.isfile(os.path.join(m.model_path, "config.json")):
        add("actor.model.model_path", f"{m.model_path!r} is not a model folder (no config.json there); download "
                                      "RLinf/RLinf-OpenVLAOFT-Behavior and set actor.model.model_path=/its/folder, or "
                                      "use actor.model.preset=tiny for a test run")
    elif m.preset is not None and m.preset not in PRESETS:
        add("actor.model.preset", f"unknown preset {m.preset!r}; choose from {list(PRESETS)}")
    if m.precision not in PRECISIONS:
        add("actor.model.precision", f"unknown precision {m.precision!r}; choose from {list(PRECISIONS)}")
    if m.action_dim != 23:
        add("actor.model.action_dim", f"the R1 Pro action has 23 values, got {m.action_dim}")
    if m.num_action_chunks < 1:
        add("actor.model.num_action_chunks", f"must be >= 1, got {m.num_action_chunks}")
    if m.image_size is not None and m.model_path is not None:
        add("actor.model.image_size", "a checkpoint fixes its own input resolution; set it only with a preset")
    if m.image_size is not None and (m.image_size < 14 or m.image_size % 14):
        add("actor.model.image_size", f"must be a multiple of the 14-pixel patch size, got {m.image_size}")
    if m.is_lora and m.lora_rank < 1:
        add("actor.model.lora_rank", f"must be >= 1 with is_lora, got {m.lora_rank}")

    if a.optim.critic_warmup_steps < 0:
        add("actor.optim.critic_warmup_steps", f"must be >= 0 (0: none), got {a.optim.critic_warmup_steps}")
    elif a.optim.critic_warmup_steps and alg.adv_type == "grpo":
        add("actor.optim.critic_warmup_steps", "GRPO has no critic to warm up; set it to 0")
    if a.optim.lr_warmup_steps < 0:
        add("actor.optim.lr_warmup_steps", f"must be >= 0 (0: no warmup), got {a.optim.lr_warmup_steps}")

    # batches
    samples = c.n_steps * n if n >= 1 and m.num_action_chunks >= 1 else 0
    if a.micro_batch_size < 1 or a.global_batch_size < 1:
        add("actor.global_batch_size", "actor.global_batch_size and actor.micro_batch_size must be >= 1")
    else:
        if a.global_batch_size % a.micro_batch_size:
            add("actor.micro_batch_size", f"{a.micro_batch_size} does not divide actor.global_batch_size="
                                          f"{a.global_batch_size}")
        if samples and a.global_batch_size > samples:
            add("actor.global_batch_size", f"{a.global_batch_size} is more than the {samples} samples of one rollout "
                                           f"(total_num_envs x rollout_epoch x max_steps_per_rollout_epoch / "
                                           f"num_action_chunks); lower it or collect more")

    # data-parallel actor
    if a.strategy not in ACTOR_STRATEGIES:
        add("actor.strategy", f"unknown {a.strategy!r}; 'ddp' replicates the policy on every actor rank, 'fsdp' "
                              "shards it (FULL_SHARD, for the 7.5B model)")
    if a.num_cpu_ranks < 1:
        add("actor.num_cpu_ranks", f"must be >= 1, got {a.num_cpu_ranks}")
    elif a.num_cpu_ranks > 1 and gpus_per_node > 0:
        add("actor.num_cpu_ranks", "only for clusters without GPUs; with GPUs the actor has one rank per GPU of "
                                   "cluster.component_placement's actor entry")
    elif placement is not None:
        world = len(actor_rank_devices(placement, a.num_cpu_ranks))
        if world > 1 and n >= 1 and n % world:
            add("env.train.total_num_envs", f"{n} envs cannot be shared evenly by the {world} actor ranks (each "
                                            f"trains on its share of the envs' rollouts); use a multiple of {world}")
        if world > 1 and a.micro_batch_size >= 1 and a.global_batch_size % (world * a.micro_batch_size):
            add("actor.global_batch_size", f"{a.global_batch_size} is not a multiple of the {world} actor ranks x "
                                           f"actor.micro_batch_size={a.micro_batch_size}; use a multiple of "
                                           f"{world * a.micro_batch_size}")

    # algorithm
    if alg.adv_type not in ADV_TYPES:
        add("algorithm.adv_type", f"unknown {alg.adv_type!r}; 'gae' trains with PPO, 'grpo' with GRPO")
    if alg.adv_type == "grpo":
        if alg.group_size < 2:
            add("algorithm.group_size", f"GRPO compares G >= 2 trajectories per group, got {alg.group_size}")
        elif n >= 1 and n % alg.group_size:
            add("algorithm.group_size", f"{alg.group_size} does not divide env.train.total_num_envs={n}")
    if alg.logprob_type not in LOGPROB_TYPES:
        add("algorithm.logprob_type", f"unknown {alg.logprob_type!r}; choose from {list(LOGPROB_TYPES)}")
    if alg.reward_type != "chunk_level":
        add("algorithm.reward_type", "only chunk_level rewards (the sum over the chunk) are implemented")
    if alg.value_loss_type not in ("mse", "huber"):
        add("algorithm.value_loss_type", f"choose 'mse' or 'huber', got {alg.value_loss_type!r}")
    if not 0 < alg.gamma <= 1:
        add("algorithm.gamma", f"must be in (0, 1], got {alg.gamma}")
    if not 0 <= alg.gae_lambda <= 1:
        add("algorithm.gae_lambda", f"must be in [0, 1], got {alg.gae_lambda}")
    if alg.update_epoch < 1:
        add("algorithm.update_epoch", f"must be >= 1, got {alg.update_epoch}")
    if alg.desired_kl is not None and not alg.desired_kl > 0:
        add("algorithm.desired_kl", f"must be > 0, or null for a fixed learning rate, got {alg.desired_kl}")

    problems.extend(_fast_inference_problems(c, placement, gpus_per_node))

    # video
    if c.video_cfg.fps < 1:
        add("video_cfg.fps", f"must be >= 1, got {c.video_cfg.fps}")
    if c.video_cfg.every_n_episodes < 1:
        add("video_cfg.every_n_episodes", f"must be >= 1, got {c.video_cfg.every_n_episodes}")

    if problems:
        raise ConfigError(problems)
    return placement


def _fast_inference_problems(c: RunConfig, placement: ComponentPlacement | None,
                             gpus_per_node: int) -> list[tuple[str, str]]:
    """What cannot work in `rollout.fast_inference` (`FastInference`'s own checks, made before anything starts)."""
    f, key = c.rollout.fast_inference, "rollout.fast_inference"
    problems = []
    if not f.enabled:
        if f.fp8 or f.fp8_vision:
            problems.append((f"{key}.fp8", f"FP8 is part of fast inference, which is off ({key}.enabled=false); "
                                           f"set {key}.enabled=true too, or fp8=false"))
        return problems
    if f.mode is not None and f.mode not in COMPILE_MODES:
        problems.append((f"{key}.mode", f"unknown torch.compile mode {f.mode!r}; choose null or one of "
                                        f"{list(COMPILE_MODES)}"))
    elif f.mode is not None and not f.compile:
        problems.append((f"{key}.mode", f"{f.mode!r} is a torch.compile mode but {key}.compile=false; set "
                                        "compile=true or mode=null"))
    elif f.mode == "reduce-overhead" and f.cuda_graphs is not False:
        problems.append((f"{key}.mode", "'reduce-overhead' makes torch.compile capture its own CUDA graphs per "
                                        f"region; set {key}.cuda_graphs=false with it, or mode=null to keep the "
                                        "whole-forward graphs"))
    if f.cuda_graphs and gpus_per_node == 0:
        problems.append((f"{key}.cuda_graphs", "CUDA graphs need GPUs and this cluster has none; set it to null "
                                               "(on with CUDA) or false"))
    if f.fp8_vision and not f.fp8:
        problems.append((f"{key}.fp8_vision", f"quantizes the ViT blocks in addition to the Llama layers: it "
                                              f"needs {key}.fp8=true"))
    why = _fp8_device_problem(gpus_per_node) if f.fp8 else None
    if why:  # the most basic problem of fp8 only, one line per key
        problems.append((f"{key}.fp8", f"FP8 GEMMs need a CUDA GPU of compute capability 8.9 or newer "
                                       f"(Ada, Hopper, Blackwell): {why}; set {key}.fp8=false"))
    elif f.fp8 and c.actor.model.precision != "bf16":
        problems.append((f"{key}.fp8", f"FP8 layers compute in bfloat16 but actor.model.precision is "
                                       f"{c.actor.model.precision!r}; use bf16 or {key}.fp8=false"))
    elif f.fp8 and placement is not None and not rollout_worker_devices(placement):
        problems.append((f"{key}.fp8", "FP8 replaces the policy's weights (inference only), so it needs rollout "
                                       "workers with their own copy: give rollout its own GPUs in "
                                       "cluster.component_placement (e.g. {env: 0, rollout: 1, actor: 2}), or set "
                                       f"{key}.fp8=false"))
    return problems


def _fp8_device_problem(gpus_per_node: int) -> str | None:
    # the GPUs of this machine stand for the cluster's; without local CUDA (a CPU-only head node) the
    # runner checks again before starting the rollout workers
    if gpus_per_node == 0:
        return "this cluster has no GPUs"
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from vla_policies.openvla_oft.fp8 import fp8_unsupported_reason

    return fp8_unsupported_reason(torch.device("cuda", 0))


def _embedded_task_problem(task: str) -> str | None:
    from behavior_gym.tasks.catalogue import all_activities, unsupported_reason
    from behavior_gym.tasks.skills import SKILLS

    if task in SKILLS:
        return None
    if task in all_activities():
        return unsupported_reason(task)
    close = difflib.get_close_matches(task, list(SKILLS) + list(all_activities()), n=3, cutoff=0.5)
    return (f"unknown task {task!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
            + " (behavior_gym.list_tasks() lists them)")
