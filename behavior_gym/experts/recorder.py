"""Record expert episodes into an HDF5 demonstration file for supervised fine-tuning.

Layout (one group per episode, images uint8 and compressed):

    /attrs: format="behavior_gym.demos", version=1, image_size, control_hz
    /episode_000000/
        head_rgb      uint8 [T, 3, H, W]        (observation before each action)
        wrist_rgb     uint8 [T, 2, 3, H, W]
        proprio       float32 [T, 61]
        actions       float32 [T, 23]
        rewards       float32 [T]
        expert_label  bool [T]   False where the action is a displacement, not the expert's choice
                                 (`ScriptedExpert.recovery_offset`; absent in older files: all True)
        points        float32 [T, P, 3]  the task's objects in the robot's frame (privileged labels for
        points_mask   bool [P]           auxiliary losses, `behavior_gym.experts.privileged`; not in older files)
        attrs: task, instance_id, seed, instruction, success, episode_len, q_score, expert_failure

`record_episodes(task, n, path)` runs `make_expert` on fresh seeds and appends episodes;
`read_episode(path, index)` loads one back as numpy arrays.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from behavior_gym.experts.privileged import TaskPoints

FORMAT = "behavior_gym.demos"


def _gym():
    import gymnasium as gym

    import behavior_gym  # noqa: F401  (registers the env)

    return gym


def record_episode(env, expert, seed: int, max_steps: int | None = None, recovery_offset: float = 0.0) -> dict:
    """Run one expert episode; returns arrays and metadata (observations before each action).
    `recovery_offset` > 0: the expert's drives are sometimes displaced and driven back (see
    `ScriptedExpert.drive_to`), the displacement steps marked False in `expert_label`."""
    obs, info = env.reset(seed=seed)
    expert.rng = np.random.default_rng(10**6 + seed)  # its own draws (recovery, standoff jitter) differ per episode
    if recovery_offset > 0:
        expert.recovery_offset = recovery_offset
    expert.reset()
    task_points = TaskPoints(env)
    heads, wrists, props, acts, rews, labels, points = [], [], [], [], [], [], []
    limit = max_steps or env.unwrapped.max_episode_steps
    for _ in range(limit):
        points.append(task_points()[0])
        action = expert.act(obs)
        labels.append(not expert.perturbing)
        heads.append(obs["head_rgb"])
        wrists.append(obs["wrist_rgb"])
        props.append(obs["proprio"])
        acts.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rews.append(reward)
        if terminated or truncated:
            break
    return {
        "head_rgb": np.stack(heads).astype(np.uint8),
        "wrist_rgb": np.stack(wrists).astype(np.uint8),
        "proprio": np.stack(props).astype(np.float32),
        "actions": np.stack(acts).astype(np.float32),
        "rewards": np.asarray(rews, np.float32),
        "expert_label": np.asarray(labels, bool),
        "points": np.stack(points).astype(np.float32),
        "points_mask": task_points.mask.copy(),
        "instruction": obs["instruction"],
        "success": bool(info["success_once"]),
        "episode_len": int(info["episode_len"]),
        "q_score": float(info["q_score"]),
        "expert_failure": expert.failed or "",
    }


def write_episode(f: h5py.File, ep: dict, task: str, instance_id: int, seed: int, compression: str = "lzf") -> str:
    name = f"episode_{len([k for k in f if k.startswith('episode_')]):06d}"
    g = f.create_group(name)
    for key in ("head_rgb", "wrist_rgb"):
        g.create_dataset(key, data=ep[key], compression=compression, chunks=(1, *ep[key].shape[1:]))
    for key in ("proprio", "actions", "rewards", "expert_label", "points", "points_mask"):
        g.create_dataset(key, data=ep[key])
    g.attrs.update(task=task, instance_id=instance_id, seed=seed, instruction=ep["instruction"],
                   success=ep["success"], episode_len=ep["episode_len"], q_score=ep["q_score"],
                   expert_failure=ep["expert_failure"])
    return name


def record_episodes(task: str, n: int, path: str | os.PathLike, seed0: int = 0, image_size: int = 224,
                    successful_only: bool = False, instance_ids=None, compression: str = "lzf",
                    recovery_offset: float = 0.0, layout: str | None = None) -> dict:
    """Record `n` expert episodes of `task` into `path` (appending). Returns counts. `layout`: the
    skill tasks' start layout (`behavior_gym.tasks.skills`; None: the default)."""
    from behavior_gym.experts import make_expert
    from behavior_gym.tasks.skills import layout_kwargs

    gym = _gym()
    written = successes = 0
    with h5py.File(path, "a") as f:
        f.attrs.update(format=FORMAT, version=1, image_size=image_size, control_hz=30)
        for k in range(n):
            seed = seed0 + k
            inst = instance_ids[k % len(instance_ids)] if instance_ids else seed
            env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=inst, image_size=image_size,
                           **layout_kwargs(task, layout))
            try:
                ep = record_episode(env, make_expert(env), seed, recovery_offset=recovery_offset)
            finally:
                env.close()
            successes += ep["success"]
            if successful_only and not ep["success"]:
                continue
            write_episode(f, ep, task, inst, seed, compression)
            written += 1
    return {"episodes": n, "written": written, "successes": successes}


def _record_shard(args: tuple) -> dict:
    task, n, path, seed0, image_size, successful_only, recovery_offset, layout = args
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = record_episodes(task, n, path, seed0=seed0, image_size=image_size, successful_only=successful_only,
                          recovery_offset=recovery_offset, layout=layout)
    return {"task": task, "path": str(path), **out}


def record_parallel(tasks: list[str], episodes: int, out_dir: str | os.PathLike, workers: int = 1, seed0: int = 0,
                    image_size: int = 224, successful_only: bool = True, recovery_offset: float = 0.0,
                    layout: str | None = None) -> list[dict]:
    """Record `episodes` expert episodes of each task into `out_dir/<task>_<k>.hdf5`, with `workers`
    processes (each writes its own shard). Episode j of a task uses seed and instance `seed0 + j`.
    `recovery_offset`: see `record_episode`."""
    import multiprocessing as mp

    os.makedirs(out_dir, exist_ok=True)
    shards_per_task = max(1, min(episodes, -(-workers // max(len(tasks), 1))))
    jobs = []
    for task in tasks:
        bounds = np.linspace(0, episodes, shards_per_task + 1).astype(int)
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            path = os.path.join(out_dir, f"{task}_{k:03d}.hdf5")
            if os.path.exists(path):
                os.remove(path)  # a shard is written whole or recorded again
            if b > a:
                jobs.append((task, int(b - a), path, seed0 + int(a), image_size, successful_only, recovery_offset,
                             layout))
    if workers <= 1:
        return [_record_shard(j) for j in jobs]
    with mp.get_context("forkserver").Pool(min(workers, len(jobs))) as pool:
        return pool.map(_record_shard, jobs, chunksize=1)


def read_episode(path: str | os.PathLike, index: int = 0) -> dict:
    """One episode as numpy arrays plus its attributes."""
    with h5py.File(path, "r") as f:
        g = f[f"episode_{index:06d}"]
        out = {k: g[k][()] for k in g}
        out.update({k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()})
    return out


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Record scripted-expert demonstrations to HDF5.")
    p.add_argument("task")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", default="demos.hdf5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--successful-only", action="store_true")
    a = p.parse_args()
    print(record_episodes(a.task, a.episodes, a.out, a.seed, a.image_size, a.successful_only))
