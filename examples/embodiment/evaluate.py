"""Evaluate an OpenVLA-OFT policy on held-out seeds: success rate, q_score, episode length per task.

    python examples/embodiment/evaluate.py --config-name evaluate_embedded model_path=runs/sft/model
    python examples/embodiment/evaluate.py --config-name evaluate_embedded \
        checkpoint=logs/<run>/checkpoints/global_step_N/actor.zip

`model_path` is a released-layout checkpoint (the SFT stage's `model/`); `checkpoint` an RL run's
`actor.zip`. The envs run in parallel processes, tasks cycled over them; env i starts from seed
`seed + i` and instance `seed + i` (the demonstrations use seeds from 0, RL training from
`env.train.seed`; keep `seed` far from both). Each mode (`greedy`: argmax tokens, `sampled`: tokens
sampled at `temperature` among the `top_k` most likely; `sampled:T`: sampled at temperature T, e.g. the
one RL's rollouts ran at; `sampled:T:K`: at T among the K most likely tokens of each position, as
`rollout.sampling_params.top_k` samples) runs `episodes_per_task` episodes of every task. Prints a
table and writes it as JSON to `out`.

`fast_inference` (null: on with CUDA) runs the policy's forward passes through compiled layer regions
and CUDA graphs; `fp8=true` adds FP8 GEMMs (CUDA compute capability >= 8.9; the weights are rounded to
FP8, so the numbers are those of the FP8 policy).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

import hydra
from omegaconf import DictConfig

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.join(os.path.dirname(__file__), "..", "..")]
from stage_utils import fail, typed_config  # noqa: E402


def mode_sampling(mode: str, temperature: float, top_k: int = 0) -> tuple[float, int] | None:
    """(temperature, top_k) an evaluation mode samples at (None: greedy); `sampled` takes the config's
    `temperature` and `top_k` (`vla_policies.openvla_oft.action_tokenizer.sampling_mode`)."""
    from vla_policies.openvla_oft.action_tokenizer import sampling_mode

    return sampling_mode(mode, temperature, top_k)


@dataclass
class EvalConfig:
    model_path: str | None = None
    checkpoint: str | None = None
    unnorm_key: str | None = "behavior_embedded"
    tasks: list[str] = field(default_factory=lambda: ["pick_and_place"])
    episodes_per_task: int = 100
    num_envs: int = 4
    seed: int = 100_000
    modes: list[str] = field(default_factory=lambda: ["greedy", "sampled"])
    temperature: float = 1.0
    top_k: int = 0  # `sampled` draws among the top_k most likely tokens (0: all), as rollout.sampling_params.top_k
    image_size: int = 224
    max_episode_steps: int | None = None
    layout: str | None = None  # skill tasks: "tabletop" (null: the default) or "mobile"
    out: str = "runs/eval/eval.json"
    device: str = "auto"
    fast_inference: bool | None = None  # compiled regions + CUDA graphs; null: on with CUDA
    fp8: bool = False  # with fast inference: FP8 GEMMs in the Llama layers
    fp8_vision: bool = False  # with fp8: the ViT blocks' linears too


def check_fast_inference(c: EvalConfig, device: str) -> None:
    """Exit with the key and the fix if the fast-inference settings cannot work on `device` (before the
    model is loaded)."""
    import torch

    if c.fp8_vision and not c.fp8:
        fail("evaluate", "fp8_vision", "quantizes the ViT blocks in addition to the Llama layers: it needs fp8=true")
    if c.fp8 and c.fast_inference is False:
        fail("evaluate", "fp8", "FP8 is part of fast inference, which fast_inference=false turns off; set "
                                "fast_inference to null or true, or fp8=false")
    if c.fp8:
        from vla_policies.openvla_oft.fp8 import fp8_unsupported_reason

        dev = torch.device(device)
        why = ("the policy runs on the CPU (torch's CPU kernel is a reference for tests)" if dev.type == "cpu"
               else fp8_unsupported_reason(dev))
        if why:
            fail("evaluate", "fp8", f"FP8 GEMMs need a CUDA GPU of compute capability 8.9 or newer: {why}; set "
                                    "fp8=false")


def load_policy(c: EvalConfig, device: str):
    """The policy of a released checkpoint folder or of an RL `actor.zip`, in the dtype it infers in:
    bfloat16 on CUDA, float32 on the CPU (an RL checkpoint holds float32 master weights; both kinds are
    evaluated alike)."""
    import torch

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if c.checkpoint:
        from algorithms import PPO

        policy = PPO.load(c.checkpoint, device=device).policy
        policy.model.set_dtype(dtype)
        return policy
    import gymnasium as gym
    import numpy as np

    from behavior_gym.spaces import ACTION_HIGH, ACTION_LOW, observation_space
    from behavior_gym.wrappers.sb3 import sb3_observation_space
    from vla_policies import OpenVLAOFTPolicy
    from vla_policies.openvla_oft import OpenVLAOFTConfig
    from vla_policies.sb3_policy import make_lr_schedule

    k = OpenVLAOFTConfig.from_pretrained(c.model_path).num_action_chunks
    action_space = gym.spaces.Box(np.tile(ACTION_LOW, k), np.tile(ACTION_HIGH, k), dtype=np.float32)
    policy = OpenVLAOFTPolicy(sb3_observation_space(observation_space(c.image_size)), action_space,
                              make_lr_schedule(0.0), model_path=c.model_path, unnorm_key=c.unnorm_key,
                              torch_dtype=dtype, model_device=device)
    return policy.to(device)


@hydra.main(version_base="1.3", config_path="config", config_name="evaluate_embedded")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from algorithms import evaluate
    from algorithms.distributed.env_worker import EnvSpec
    from algorithms.evaluation import use_fast_inference
    from behavior_gym.tasks.skills import DEFAULT_LAYOUT, LAYOUTS

    c = typed_config(cfg, EvalConfig, "evaluate")
    if bool(c.model_path) == bool(c.checkpoint):
        fail("evaluate", "model_path", "give exactly one of model_path (a checkpoint folder) or checkpoint "
                                       "(an RL run's actor.zip)")
    path = c.model_path or c.checkpoint
    if not os.path.exists(path):
        fail("evaluate", "model_path" if c.model_path else "checkpoint", f"{path!r} does not exist")
    if not c.temperature > 0:
        fail("evaluate", "temperature", f"must be > 0, got {c.temperature}")
    if c.top_k < 0:
        fail("evaluate", "top_k", f"must be >= 0 (0: every token), got {c.top_k}")
    if not c.modes:
        fail("evaluate", "modes", "is empty; give at least one of greedy, sampled, sampled:T, sampled:T:K")
    try:
        sampling = {m: mode_sampling(m, c.temperature, c.top_k) for m in c.modes}
    except ValueError as e:
        fail("evaluate", "modes", str(e))
    if c.layout is not None and c.layout not in LAYOUTS:
        fail("evaluate", "layout", f"{c.layout!r} is not a skill layout; choose one of {list(LAYOUTS)} or null")
    if c.num_envs % len(c.tasks):
        fail("evaluate", "num_envs", f"{c.num_envs} envs cannot be shared evenly by {len(c.tasks)} tasks; use a "
                                     "multiple of the number of tasks")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if c.device == "auto" else c.device
    check_fast_inference(c, device)
    policy = load_policy(c, device)
    policy.set_training_mode(False)
    fast = {"fp8": True, "fp8_vision": c.fp8_vision} if c.fp8 else {}
    try:  # once for all modes: the compiled regions and captured graphs serve both
        fast_on = use_fast_inference(policy, c.fast_inference, **fast)
    except ValueError as e:  # e.g. FP8 with a checkpoint that is not in bfloat16
        fail("evaluate", "fp8" if c.fp8 else "fast_inference", str(e))
    print(f"fast inference: {'on' + (' (FP8)' if c.fp8 else '') if fast_on else 'off'}")
    k = policy.model.config.num_action_chunks
    spec = EnvSpec(chunk=k, image_size=c.image_size, obs_every=k, max_episode_steps=c.max_episode_steps,
                   tasks=tuple(c.tasks), instance_ids=tuple(c.seed + i for i in range(c.num_envs)), layout=c.layout)
    per_env = -(-c.episodes_per_task * len(c.tasks) // c.num_envs)
    results = {"model": path, "seed": c.seed, "num_envs": c.num_envs, "fast_inference": fast_on, "fp8": c.fp8,
               "layout": c.layout or DEFAULT_LAYOUT,  # the skill tasks' layout these episodes ran (null: the default)
               "temperature": c.temperature, "top_k": c.top_k, "modes": {}}
    width = max(8, max(map(len, c.modes)))
    print(f"{'mode':<{width}} {'task':<24} {'episodes':>8} {'success':>8} {'q_score':>8} {'length':>7}")
    for mode in c.modes:
        if sampling[mode] is not None:  # every mode sets its top-k: an RL checkpoint keeps its rollouts' own
            policy.set_sampling(*sampling[mode])
        venv = SubprocVecEnv([_Factory(spec, i) for i in range(c.num_envs)], start_method="forkserver")
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                stats = evaluate(policy, venv, episodes=per_env * c.num_envs, deterministic=sampling[mode] is None,
                                 seed=c.seed, fast_inference=False)  # as set up above
        finally:
            venv.close()
        stats.pop("episode_records")
        stats["seconds"] = round(time.perf_counter() - t0, 1)
        results["modes"][mode] = stats
        for task, s in stats["per_task"].items():
            print(f"{mode:<{width}} {task:<24} {s['episodes']:>8} {s['success_rate']:>8.1%} {s['q_score']:>8.3f} "
                  f"{s['episode_len']:>7.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(c.out)), exist_ok=True)
    with open(c.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results in {c.out}")


class _Factory:
    """Picklable env factory for SubprocVecEnv: env `i` of `spec` (task and instance cycled)."""

    def __init__(self, spec, i: int):
        self.spec, self.i = spec, i

    def __call__(self):
        return self.spec.make(None, self.i)


if __name__ == "__main__":
    main()
