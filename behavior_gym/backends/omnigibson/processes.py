"""One simulator per process: vector envs whose every env lives in its own worker process.

Isaac Sim's Kit app is a process singleton, so OmniGibson envs can only be vectorised across
processes. `env_factories` makes picklable constructors that pin each env to a GPU (counted
from 0, as Isaac Sim requires of env processes) before the simulator starts; `make_subproc_vec_env`
wraps them in SB3's `SubprocVecEnv` with the forkserver start method (a forked child would
inherit the parent's GPU/GL state). The same factories serve the embedded backend, and Ray env
workers call them inside their own processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence


class _EnvFactory:
    """Picklable `() -> env` that pins the process to a GPU before creating the env."""

    def __init__(self, task: str, backend: str, gpu_id: int | None, seed: int | None, kwargs: dict):
        self.task, self.backend, self.gpu_id, self.seed, self.kwargs = task, backend, gpu_id, seed, kwargs

    def __call__(self):
        import gymnasium as gym

        if self.gpu_id is not None:
            # OmniGibson reads OMNIGIBSON_GPU_ID; MuJoCo's EGL reads MUJOCO_EGL_DEVICE_ID.
            os.environ["OMNIGIBSON_GPU_ID"] = str(self.gpu_id)
            os.environ["MUJOCO_EGL_DEVICE_ID"] = str(self.gpu_id)
        env = gym.make("behavior_gym:Behavior-R1Pro-v0", task=self.task, backend=self.backend, **self.kwargs)
        env.unwrapped.gpu_id = self.gpu_id  # which GPU this process's simulator renders on
        if self.seed is not None:
            env.reset(seed=self.seed)
        return env


def assign_gpus(num_envs: int, gpu_ids: Sequence[int] | None) -> list[int | None]:
    """Round-robin envs over `gpu_ids` starting from the first (GPU 0 by default)."""
    if not gpu_ids:
        return [None] * num_envs
    if any(g < 0 for g in gpu_ids):
        raise ValueError(f"GPU ids must be >= 0, got {list(gpu_ids)}")
    return [gpu_ids[i % len(gpu_ids)] for i in range(num_envs)]


def env_factories(task: str, num_envs: int, backend: str = "mujoco", gpu_ids: Sequence[int] | None = None,
                  seed: int | None = None, **env_kwargs) -> list[Callable]:
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    gpus = assign_gpus(num_envs, gpu_ids)
    return [_EnvFactory(task, backend, gpus[i], None if seed is None else seed + i, dict(env_kwargs))
            for i in range(num_envs)]


def make_subproc_vec_env(task: str, num_envs: int, backend: str = "mujoco", gpu_ids: Sequence[int] | None = None,
                         seed: int | None = None, **env_kwargs):
    """SB3 `SubprocVecEnv` with one env (and one simulator) per process."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    return SubprocVecEnv(env_factories(task, num_envs, backend, gpu_ids, seed, **env_kwargs),
                         start_method="forkserver")
