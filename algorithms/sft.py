"""Supervised fine-tuning (behaviour cloning) of OpenVLA-OFT on scripted-expert demonstrations.

The way OpenVLA-OFT is fine-tuned: every frame of a demonstration is one sample, its target the
next K actions (the chunk; past the episode's end the last action repeats), discretised into the
policy's action tokens with `norm_stats` computed from the demonstrations; the loss is the
cross-entropy of all K x 23 parallel-decoded tokens. The result is a released-layout checkpoint
(`save_pretrained`) that the RL configs load with `actor.model.model_path` and
`actor.model.unnorm_key=behavior_embedded`.

    demos = load_demos(["demos/pick_and_place.hdf5"], chunk=8)
    policy = sft_policy(demos, preset="small", device="cuda")
    train_sft(policy, demos, SFTConfig(steps=3000), out_dir="runs/sft")   # resumable

Demonstrations are the HDF5 files of `behavior_gym.experts.recorder` (head [T, 3, H, W], wrists
[T, 2, 3, H, W], proprio [T, 61], actions [T, 23]). Only successful episodes are used by default.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from algorithms.sigterm import SigtermHook
from behavior_gym.spaces import ACTION_DIM, ACTION_PART

log = logging.getLogger(__name__)

UNNORM_KEY = "behavior_embedded"
STATE_FILE = "sft_state.pt"
MODEL_DIR = "model"
_GRIPPERS = (ACTION_PART["left_gripper"].start, ACTION_PART["right_gripper"].start)


@dataclass
class DemoSet:
    """Demonstration frames in memory, images as uint8.

    Attributes:
        head: [N, 3, H, W]; wrist: [N, 2, 3, H, W]; proprio: [N, 61].
        chunks: [N, K, 23] the K actions from each frame on.
        instruction: [N] index into `instructions`; task: [N] index into `tasks`.
        episodes: number of episodes the frames come from.
    """

    head: np.ndarray
    wrist: np.ndarray
    proprio: np.ndarray
    chunks: np.ndarray
    instruction: np.ndarray
    instructions: list[str]
    task: np.ndarray
    tasks: list[str]
    episodes: int
    actions: np.ndarray = field(repr=False, default=None)  # [M, 23] every action of the episodes (statistics)
    # Privileged labels (`behavior_gym.experts.privileged`), None unless every episode has them:
    # points [N, P, 3] the task's objects in the robot's frame, points_mask [N, P] which are real.
    points: np.ndarray | None = field(repr=False, default=None)
    points_mask: np.ndarray | None = field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.head)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.head, self.wrist, self.proprio, self.chunks))


def _chunks(actions: np.ndarray, k: int) -> np.ndarray:
    """[T, A] -> [T, K, A]: for each t the actions t..t+K-1, the last one repeated past the end."""
    idx = np.minimum(np.arange(len(actions))[:, None] + np.arange(k)[None], len(actions) - 1)
    return actions[idx]


def load_demos(paths: list[str], chunk: int = 8, frame_stride: int = 1, successful_only: bool = True,
               tasks: list[str] | None = None, max_episodes_per_task: int | None = None,
               workers: int = 1, cache_dir: str | None = None) -> DemoSet:
    """Read demonstration files into memory.

    Args:
        paths: HDF5 files written by `behavior_gym.experts.recorder` (or folders holding them).
        chunk: actions per sample (the policy's K).
        frame_stride: keep every n-th frame as a sample (neighbouring frames are nearly the same);
            the chunks still hold consecutive actions.
        successful_only: skip episodes the expert failed.
        tasks: keep only these tasks (None: all).
        max_episodes_per_task: cap per task (None: all; files are read in sorted order).
        workers: processes reading files in parallel (lzf decompression is the slow part).
        cache_dir: decode the samples into .npy files here and memory-map them, now and on the next call
            with the same files and arguments (a resumed SFT piece then starts in seconds). The reading
            processes write their episodes into the files in place, so nothing is pickled between
            processes, concatenated or written twice, and memory holds the samples once (page cache).
            Without the disk room (a warning says so) or without a cache_dir the samples are read into
            memory instead.
    """
    files = _demo_files(paths)
    key = _cache_key(files, chunk, frame_stride, successful_only, tasks, max_episodes_per_task)
    if cache_dir is not None:
        cached = _load_cache(os.path.join(cache_dir, key))
        if cached is not None:
            return cached
    plan = _plan_episodes(files, chunk, frame_stride, successful_only, tasks, max_episodes_per_task)
    if not plan:
        raise ValueError(f"no usable episodes in {files} (successful_only={successful_only}, tasks={tasks})")
    if cache_dir is not None and _fill_cache(plan, os.path.join(cache_dir, key), chunk, frame_stride, workers):
        return _load_cache(os.path.join(cache_dir, key))
    return _load_demos(plan, chunk, frame_stride, workers)


_ARRAYS = ("head", "wrist", "proprio", "chunks", "instruction", "task", "actions")
_OPTIONAL = ("points", "points_mask")  # cached when the demonstrations have them
_PER_SAMPLE = ("head", "wrist", "proprio", "chunks")  # one row per sample, as `_read_episode` gives them


def _optional(plan) -> tuple[str, ...]:
    """The optional arrays every planned episode has (privileged labels in all of them, or none kept)."""
    return _OPTIONAL if all(e["points"] is not None for e in plan) else ()


def _cache_key(files, *args) -> str:
    import hashlib
    import json

    stat = [(os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)) for f in files]
    return hashlib.sha1(json.dumps([stat, list(args)], default=str).encode()).hexdigest()[:16]


def _load_cache(path: str) -> DemoSet | None:
    import json

    meta = os.path.join(path, "meta.json")
    if not os.path.exists(meta):
        return None
    with open(meta) as f:
        m = json.load(f)
    arrays = {k: np.load(os.path.join(path, f"{k}.npy"), mmap_mode="c") for k in _ARRAYS}  # copy-on-write: torch-ready
    arrays.update({k: np.load(os.path.join(path, f"{k}.npy")) for k in _OPTIONAL
                   if os.path.exists(os.path.join(path, f"{k}.npy"))})
    log.info("demonstrations from the cache %s", path)
    return DemoSet(**arrays, instructions=m["instructions"], tasks=m["tasks"], episodes=m["episodes"])


def _fill_cache(plan, path, chunk, frame_stride, workers) -> bool:
    """Decode the planned episodes (`_plan_episodes`) straight into .npy files under `path` (the cache entry).

    Every file's reader writes its episodes' frames at their offsets. meta.json is written last, and the
    entry is renamed into place only when whole. Returns False (nothing written) when the disk lacks the room.
    """
    import shutil

    n = sum(e["samples"] for e in plan)
    m = sum(e["steps"] for e in plan)
    first = plan[0]
    optional = _optional(plan)
    shapes = {"head": ((n, *first["head"][0]), first["head"][1]), "wrist": ((n, *first["wrist"][0]), first["wrist"][1]),
              "proprio": ((n, first["proprio"]), np.float32), "chunks": ((n, chunk, ACTION_DIM), np.float32),
              "instruction": ((n,), np.int32), "task": ((n,), np.int32), "actions": ((m, ACTION_DIM), np.float32)}
    if optional:
        shapes["points"] = ((n, *first["points"]), np.float32)
        shapes["points_mask"] = ((n, first["points"][0]), bool)
    need = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in shapes.values())
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < need + 2**30:
        log.warning("no demonstration cache: %.1f GiB needed, %.1f GiB free in %s", need / 2**30, free / 2**30, parent)
        return False
    tmp = f"{path}.tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    try:
        _write_entry(tmp, shapes, plan, chunk, frame_stride, optional, workers)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written entry left to fill the disk
        raise
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    return True


def _write_entry(tmp, shapes, plan, chunk, frame_stride, optional, workers) -> None:
    import json

    for k, (shape, dtype) in shapes.items():
        np.lib.format.open_memmap(os.path.join(tmp, f"{k}.npy"), mode="w+", dtype=dtype, shape=shape).flush()
    instructions, task_names = _vocabulary(plan)
    placed, row, step = [], 0, 0
    for e in plan:
        placed.append({**e, "row": row, "step": step})
        row += e["samples"]
        step += e["steps"]
    _map_files(_write_file, [(f, eps, tmp, chunk, frame_stride, optional) for f, eps in _by_file(placed)], workers)
    with open(os.path.join(tmp, "meta.json"), "w") as f:  # written last: its presence marks a whole cache
        json.dump({"instructions": instructions, "tasks": task_names, "episodes": len(plan)}, f)


def _plan_episodes(files, chunk, frame_stride, successful_only, tasks, max_episodes_per_task) -> list[dict]:
    """The usable episodes in reading order with their sample and step counts and array shapes (no images read)."""
    plan, per_task = [], {}
    for path in files:
        with h5py.File(path, "r") as f:
            _check_format(f, path)
            for name in sorted(k for k in f if k.startswith("episode_")):
                g = f[name]
                task, instruction, usable = _episode_attrs(g, successful_only, tasks)
                if not usable:
                    continue
                if max_episodes_per_task is not None and per_task.get(task, 0) >= max_episodes_per_task:
                    continue
                per_task[task] = per_task.get(task, 0) + 1
                keep = _kept_frames(g, chunk, frame_stride)
                plan.append({"file": path, "name": name, "task": task, "instruction": instruction,
                             "samples": len(keep), "steps": len(g["actions"]),
                             "head": (g["head_rgb"].shape[1:], g["head_rgb"].dtype),
                             "wrist": (g["wrist_rgb"].shape[1:], g["wrist_rgb"].dtype),
                             "proprio": g["proprio"].shape[1],
                             "points": g["points"].shape[1:] if "points" in g else None})
    return plan


def _write_file(job: tuple) -> None:
    """Write the planned episodes of one file into the cache entry's .npy files at their offsets."""
    path, episodes, folder, chunk, frame_stride, optional = job
    out = {k: np.load(os.path.join(folder, f"{k}.npy"), mmap_mode="r+") for k in _ARRAYS + optional}
    with h5py.File(path, "r") as f:
        for e in episodes:
            ep = _read_episode(f[e["name"]], chunk, frame_stride)
            rows = slice(e["row"], e["row"] + len(ep["head"]))
            for k in _PER_SAMPLE + optional:
                out[k][rows] = ep[k]
            out["instruction"][rows] = e["instruction_index"]
            out["task"][rows] = e["task_index"]
            out["actions"][e["step"]:e["step"] + len(ep["actions"])] = ep["actions"]
    for a in out.values():
        a.flush()


def _demo_files(paths: list[str]) -> list[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith((".hdf5", ".h5")))
        elif os.path.exists(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"no demonstration file or folder {p!r}; record some with "
                                    "examples/embodiment/collect_demos.py")
    if not files:
        raise FileNotFoundError(f"no .hdf5 demonstration files in {paths}")
    return files


def _load_demos(plan, chunk, frame_stride, workers) -> DemoSet:
    """Read the planned episodes (`_plan_episodes`) into memory."""
    loaded = [ep for eps in _map_files(_read_planned, [(f, eps, chunk, frame_stride) for f, eps in _by_file(plan)],
                                       workers) for ep in eps]
    instructions, task_names = _vocabulary(plan)
    keys = _PER_SAMPLE + ("actions",) + _optional(plan)
    data = {k: np.concatenate([ep[k] for ep in loaded]) for k in keys}
    for k in ("instruction", "task"):  # grouped by file, the episodes are still in plan order
        data[k] = np.concatenate([np.full(len(ep["head"]), e[f"{k}_index"], np.int32) for ep, e in zip(loaded, plan)])
    return DemoSet(**data, instructions=instructions, tasks=task_names, episodes=len(plan))


def _vocabulary(plan) -> tuple[list[str], list[str]]:
    """The instructions and tasks of the planned episodes in order of first appearance; sets each episode's
    `instruction_index` and `task_index` into them."""
    instructions = list(dict.fromkeys(e["instruction"] for e in plan))
    task_names = list(dict.fromkeys(e["task"] for e in plan))
    for e in plan:
        e["instruction_index"] = instructions.index(e["instruction"])
        e["task_index"] = task_names.index(e["task"])
    return instructions, task_names


def _by_file(plan) -> list[tuple[str, list[dict]]]:
    """The planned episodes grouped by file, files and episodes in plan order."""
    groups: dict[str, list[dict]] = {}
    for e in plan:
        groups.setdefault(e["file"], []).append(e)
    return list(groups.items())


def _map_files(fn, jobs: list, workers: int) -> list:
    """`fn` over per-file jobs, in `workers` processes when there are several files (lzf decompression is the
    slow part)."""
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("forkserver").Pool(min(workers, len(jobs))) as pool:
            return pool.map(fn, jobs, chunksize=1)
    return [fn(j) for j in jobs]


def _check_format(f: h5py.File, path: str) -> None:
    if f.attrs.get("format") != "behavior_gym.demos":
        raise ValueError(f"{path} is not a behavior_gym demonstration file (attrs format={f.attrs.get('format')!r})")


def _episode_attrs(g: h5py.Group, successful_only: bool, tasks) -> tuple[str, str, bool]:
    """(task, instruction, usable) of an episode group."""
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
    task = str(attrs["task"])
    usable = not ((successful_only and not attrs.get("success", False)) or (tasks and task not in tasks))
    return task, str(attrs["instruction"]), usable


def _kept_frames(g: h5py.Group, chunk: int, frame_stride: int) -> np.ndarray:
    """The frames of an episode that become samples: every `frame_stride`-th, and where the episode has
    expert labels only those whose whole chunk is the expert's own (no recovery displacements)."""
    keep = np.arange(0, len(g["actions"]), frame_stride)
    if "expert_label" in g:
        label = g["expert_label"][()].astype(bool)
        keep = keep[_chunks(label[:, None], chunk)[keep, :, 0].all(1)]
    return keep


def _read_episode(g: h5py.Group, chunk: int, frame_stride: int) -> dict[str, np.ndarray]:
    """One episode's samples (frames subsampled, chunks built) and all its actions."""
    actions = g["actions"][()].astype(np.float32)
    keep = _kept_frames(g, chunk, frame_stride)
    ep = {"actions": actions, "head": g["head_rgb"][()][keep], "wrist": g["wrist_rgb"][()][keep],
          "proprio": g["proprio"][()][keep].astype(np.float32), "chunks": _chunks(actions, chunk)[keep]}
    if "points" in g:
        ep["points"] = g["points"][()][keep].astype(np.float32)
        ep["points_mask"] = np.repeat(g["points_mask"][()].astype(bool)[None], len(keep), 0)
    return ep


def _read_planned(job: tuple) -> list[dict[str, Any]]:
    """The planned episodes of one demonstration file, with frames subsampled and chunks built."""
    path, episodes, chunk, frame_stride = job
    with h5py.File(path, "r") as f:
        return [_read_episode(f[e["name"]], chunk, frame_stride) for e in episodes]


def _stats(x: np.ndarray) -> dict[str, list]:
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "min": x.min(0).tolist(), "max": x.max(0).tolist(),
            "q01": np.quantile(x, 0.01, axis=0).tolist(), "q99": np.quantile(x, 0.99, axis=0).tolist()}


def demo_norm_stats(demos: DemoSet) -> dict[str, Any]:
    """OpenVLA-style `norm_stats` entry (actions and proprio: mean, std, min, max, q01, q99, mask).

    The grippers are already in [-1, 1] and stay unnormalised (mask False), as in OpenVLA.
    """
    action = _stats(demos.actions)
    mask = np.ones(ACTION_DIM, bool)
    mask[list(_GRIPPERS)] = False
    action["mask"] = mask.tolist()
    proprio = _stats(demos.proprio)
    proprio["mask"] = [True] * demos.proprio.shape[1]
    return {"action": action, "proprio": proprio, "num_transitions": int(len(demos.actions)),
            "num_trajectories": int(demos.episodes)}


def sft_policy(demos: DemoSet, preset: str = "small", device: str | torch.device = "cpu", use_proprio: bool = True,
               image_size: int = 224, config_overrides: dict[str, Any] | None = None, **policy_kwargs: Any):
    """A fresh `OpenVLAOFTPolicy` (preset weights) whose `norm_stats` come from `demos`.

    The policy is kept in float32 (master weights); `train_sft` runs the forward pass in bf16
    autocast on CUDA.
    """
    import gymnasium as gym

    from behavior_gym.spaces import ACTION_HIGH, ACTION_LOW, observation_space
    from behavior_gym.wrappers.sb3 import sb3_observation_space
    from vla_policies import OpenVLAOFTPolicy
    from vla_policies.sb3_policy import make_lr_schedule

    k = demos.chunks.shape[1]
    obs_space = sb3_observation_space(observation_space(image_size, max(len(demos.tasks), 1)))
    action_space = gym.spaces.Box(np.tile(ACTION_LOW, k), np.tile(ACTION_HIGH, k), dtype=np.float32)
    overrides = {"num_action_chunks": k, "use_proprio": use_proprio,
                 "norm_stats": {UNNORM_KEY: demo_norm_stats(demos)}, **(config_overrides or {})}
    policy = OpenVLAOFTPolicy(obs_space, action_space, make_lr_schedule(1e-4), preset=preset,
                              config_overrides=overrides, unnorm_key=UNNORM_KEY, torch_dtype="float32",
                              model_device=device, **policy_kwargs)
    return policy.to(device)


@dataclass
class SFTConfig:
    """Settings of `train_sft`."""

    steps: int = 2000  # optimizer steps in all; <= 0: as many as fit in max_minutes (measured after 20 steps)
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay down to lr * this
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    bf16: bool | None = None  # None: on CUDA
    random_shift: int = 8  # pixels of random image translation (0: no augmentation)
    log_every: int = 50
    save_every: int = 500  # resumable state every N steps (and at the end / the time budget)
    max_minutes: float | None = None  # stop after this long (state and model saved); rerun to go on
    seed: int = 0
    # > 0: cross-entropy against a Gaussian of this many bins around each demonstrated token instead of
    # the one-hot token, so a near miss costs less than a far one (the 256 bins are ordered). Off by
    # default: in benchmarks/bc_clonability.py sigma 2 doubled the lifts, success stayed the same.
    label_sigma: float = 0.0
    # > 0: also regress where the task's objects are (the demonstrations' privileged `points`, in the
    # robot's frame) from the state the value head reads (the last prompt token's), with this weight
    # on a smooth-L1 loss in decimetres. An auxiliary loss: the policy never gets the points as input;
    # it gives the vision towers a direct signal for where things are, which action tokens give only
    # through the motions they lead to. The head is dropped after SFT.
    aux_position_weight: float = 0.0


def _random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ-style augmentation: pad by `pad` (edge pixels) and crop back at a random offset per image.

    images: uint8 [B, n, 3, H, W] on any device.
    """
    b, n, c, h, w = images.shape
    x = torch.nn.functional.pad(images.reshape(b * n, c, h, w).float(), (pad,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator).to(images.device)
    dy = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device)[None])  # [bn, h]
    cols = (dx[:, None] + torch.arange(w, device=images.device)[None])  # [bn, w]
    x = x[torch.arange(b * n, device=images.device)[:, None, None, None], torch.arange(c, device=images.device)[None, :,
          None, None], rows[:, None, :, None], cols[:, None, None, :]]
    return x.round().to(torch.uint8).reshape(b, n, c, h, w)


class _Batches:
    """Random mini-batches of a `DemoSet`, images moved to the device as uint8."""

    def __init__(self, demos: DemoSet, device: torch.device, seed: int):
        self.demos = demos
        self.device = device
        self.rng = np.random.default_rng(seed)
        self.head = torch.from_numpy(demos.head)
        self.wrist = torch.from_numpy(demos.wrist)
        self.proprio = torch.from_numpy(demos.proprio)
        self.chunks = torch.from_numpy(demos.chunks.reshape(len(demos), -1))

    def sample(self, n: int) -> tuple[dict[str, Any], torch.Tensor]:
        idx = torch.from_numpy(np.sort(self.rng.choice(len(self.demos), size=n, replace=len(self.demos) < n)))
        move = dict(device=self.device, non_blocking=True)
        images = torch.cat([self.head[idx][:, None], self.wrist[idx]], dim=1).to(**move)
        obs = {"images": images, "proprio": self.proprio[idx].to(**move),
               "instruction": [self.demos.instructions[i] for i in self.demos.instruction[idx.numpy()]]}
        if self.demos.points is not None:
            obs["points"] = torch.from_numpy(np.asarray(self.demos.points[idx.numpy()])).to(**move)
            obs["points_mask"] = torch.from_numpy(np.asarray(self.demos.points_mask[idx.numpy()])).to(**move)
        return obs, self.chunks[idx].to(**move)


class AuxPositionHead(torch.nn.Module):
    """Predicts the task's object positions from the hidden state the policy's value head reads (a
    forward hook on the value head keeps it), for `SFTConfig.aux_position_weight`."""

    def __init__(self, policy, n_points: int, hidden: int = 256):
        super().__init__()
        head = policy.model.value_head
        if head is None:
            raise ValueError("aux_position_weight > 0 reads the last prompt token's state where the value head "
                             "does; this policy has none (config add_value_head=False): build it with a value head "
                             "or set aux_position_weight=0")
        self.n_points = n_points
        self.mlp = torch.nn.Sequential(torch.nn.Linear(policy.model.config.hidden_size, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, 3 * n_points))
        self._state: torch.Tensor | None = None
        self._hook = head.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self._state = args[0]

    def loss(self, points: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(smooth-L1 loss in decimetres over the real points, mean position error in cm) for the
        forward pass just run."""
        if self._state is None:
            raise RuntimeError("AuxPositionHead.loss before a forward pass of the policy")
        pred = self.mlp(self._state.float()).view(-1, self.n_points, 3)
        self._state = None
        m = mask.bool()
        err = torch.nn.functional.smooth_l1_loss(10 * pred[m], 10 * points[m].float())
        cm = 100 * (pred[m] - points[m].float()).norm(dim=-1).mean()
        return err, cm.detach()

    def remove(self) -> None:
        self._hook.remove()


def _atomic_torch_save(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def soft_token_targets(value_idx: torch.Tensor, n_values: int, sigma: float) -> torch.Tensor:
    """[..., n_values] target distributions: a Gaussian of `sigma` bins around each index, normalised."""
    d = torch.arange(n_values, device=value_idx.device, dtype=torch.float32) - value_idx[..., None].float()
    w = torch.exp(-0.5 * (d / sigma) ** 2)
    return w / w.sum(-1, keepdim=True)


def sft_loss(policy, obs: dict[str, Any], chunks: torch.Tensor, label_sigma: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of the demonstrated action tokens (against Gaussian-smoothed targets of
    `label_sigma` bins if > 0; see `SFTConfig.label_sigma`) and the greedy token accuracy."""
    images = obs["images"]
    batch = {"head_rgb": images[:, 0], "wrist_rgb": images[:, 1:], "proprio": obs["proprio"],
             "instruction": obs["instruction"]}
    dist = policy.get_distribution(batch)
    bins = policy._actions_to_bins(chunks)
    live = ~policy._collapsed.to(bins.device)
    if label_sigma > 0:
        lp = dist.value_log_probs  # over decoded values: bins 0 and 1 are one value
        target = soft_token_targets(dist.value_index(bins.long().to(lp.device)), lp.shape[-1], label_sigma)
        loss = -(target * lp).sum(-1)[:, live].mean()
    else:
        loss = -dist.log_prob(bins)[:, live].mean()
    acc = (dist.mode() == bins)[:, live].float().mean()
    return loss, acc


def train_sft(policy, demos: DemoSet, cfg: SFTConfig, out_dir: str, logger=None) -> dict[str, Any]:
    """Behaviour-clone `policy` on `demos`; resumes from `out_dir/sft_state.pt` when it exists.

    Writes `out_dir/sft_state.pt` (weights, optimizer, step, RNG; atomically) every `save_every`
    steps and when the time budget ends or SIGTERM arrives, and the released-layout checkpoint `out_dir/model/` at
    the end. Returns a summary (steps done, final loss and accuracy, samples/s, whether finished).
    """
    from stable_baselines3.common.logger import configure

    os.makedirs(out_dir, exist_ok=True)
    logger = logger or configure(out_dir, ["stdout", "tensorboard", "csv"])
    device = policy.device
    bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"
    aux = None
    if cfg.aux_position_weight > 0:
        if demos.points is None:
            raise ValueError("aux_position_weight > 0 needs demonstrations with privileged `points`; these have "
                             "none (recorded before they were added): record them again with collect_demos.py, "
                             "or set aux_position_weight=0")
        aux = AuxPositionHead(policy, demos.points.shape[1]).to(device)
    params = [p for p in policy.parameters() if p.requires_grad] + (list(aux.parameters()) if aux else [])
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                            fused=device.type == "cuda")
    state_path = os.path.join(out_dir, STATE_FILE)
    step = 0
    if cfg.steps <= 0 and cfg.max_minutes is None:
        raise ValueError("SFTConfig.steps <= 0 means 'as many as fit in max_minutes'; set max_minutes too")
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location=device, weights_only=False)
        if cfg.steps <= 0:  # the total was fixed by the first piece's throughput
            cfg = SFTConfig(**{**asdict(cfg), "steps": state["config"]["steps"]})
        elif state["config"]["steps"] != cfg.steps:
            log.warning("resuming with steps=%d (the saved run planned %d): the lr schedule follows the new value",
                        cfg.steps, state["config"]["steps"])
        policy.load_state_dict(state["policy"])
        if aux is not None and state.get("aux") is not None:
            aux.load_state_dict(state["aux"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        random.setstate(state["python_rng"])
        log.info("resumed SFT from %s at step %d", state_path, step)
    batches = _Batches(demos, device, cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * step)
    torch.manual_seed(cfg.seed + step)

    def save_state() -> None:
        _atomic_torch_save({"policy": policy.state_dict(), "optimizer": opt.state_dict(), "step": step,
                            "config": asdict(cfg), "python_rng": random.getstate(),
                            "aux": aux.state_dict() if aux is not None else None}, state_path)

    policy.train()
    t0 = time.perf_counter()
    t_log, samples = t0, 0
    loss_sum = acc_sum = aux_sum = 0.0
    n_sum = 0
    finished = False
    probe = None
    last: dict[str, float] = {}
    # steps <= 0: plan as many steps as fit in max_minutes from the measured time per step, first over
    # steps 20-40 of this piece, then again over each later doubling of that window (40-80, 80-160,
    # ...): the first steps also pay for warming caches and the data loader (run 9 planned from a
    # 0.24 s step that later took 0.14 s and finished in 4.2 of its 6.6 minutes).
    auto = cfg.steps <= 0
    first = step
    next_probe = first + 20
    with SigtermHook() as stop:  # stop after the step in progress, state and model saved
        while True:
            if auto and step == next_probe:
                now = time.perf_counter()
                if probe is not None:
                    per_step = (now - probe[1]) / (step - probe[0])
                    total = int((60 * cfg.max_minutes - (now - t0)) / per_step) + step
                    if total != cfg.steps:
                        cfg = SFTConfig(**{**asdict(cfg), "steps": max(total, step + 1)})
                        log.info("SFT: %.3f s per step, %d steps fit in %.1f min", per_step, cfg.steps,
                                 cfg.max_minutes)
                probe = (step, now)
                next_probe = first + 2 * (step - first)
            if cfg.steps > 0 and step >= cfg.steps:
                finished = True
                break
            if stop.count:
                log.warning("SFT: SIGTERM at step %d: state and model saved; rerun to continue", step)
                break
            if cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * cfg.max_minutes:
                log.info("SFT time budget of %.1f min reached at step %d; rerun to continue", cfg.max_minutes, step)
                break
            lr = _lr_at(step, cfg) if cfg.steps > 0 else cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            obs, chunks = batches.sample(cfg.batch_size)
            if cfg.random_shift > 0:
                obs["images"] = _random_shift(obs["images"], cfg.random_shift, gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, acc = sft_loss(policy, obs, chunks, cfg.label_sigma)
                total = loss
                if aux is not None:
                    aux_loss, aux_cm = aux.loss(obs["points"], obs["points_mask"])
                    total = loss + cfg.aux_position_weight * aux_loss
                    aux_sum += aux_cm
            opt.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            opt.step()
            step += 1
            samples += cfg.batch_size
            loss_sum += loss.detach()
            acc_sum += acc.detach()
            n_sum += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                logger.record("sft/loss", float(loss_sum / n_sum))
                logger.record("sft/token_accuracy", float(acc_sum / n_sum))
                logger.record("sft/grad_norm", float(grad_norm))
                logger.record("sft/lr", lr)
                logger.record("time/samples_per_s", samples / (now - t_log))
                logger.record("sft/epoch", step * cfg.batch_size / len(demos))
                if aux is not None:
                    logger.record("sft/aux_position_error_cm", float(aux_sum / n_sum))
                logger.dump(step)
                last = {"loss": float(loss_sum / n_sum), "token_accuracy": float(acc_sum / n_sum),
                        "samples_per_s": samples / (now - t_log)}
                if aux is not None:
                    last["aux_position_error_cm"] = float(aux_sum / n_sum)
                t_log, samples, loss_sum, acc_sum, aux_sum, n_sum = now, 0, 0.0, 0.0, 0.0, 0
            if step % cfg.save_every == 0:
                save_state()
    save_state()
    if aux is not None:
        aux.remove()
    summary: dict[str, Any] = {"step": step, "finished": finished, "seconds": time.perf_counter() - t0,
                               "samples": len(demos), "episodes": demos.episodes, "tasks": demos.tasks}
    summary.update(last)
    if step > 0:
        policy.eval()
        model_dir = os.path.join(out_dir, MODEL_DIR)
        tmp = model_dir + ".tmp"
        policy.save_pretrained(tmp)
        if os.path.isdir(model_dir):
            import shutil

            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
        summary["model_path"] = model_dir
    return summary
