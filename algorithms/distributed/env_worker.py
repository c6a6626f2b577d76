"""Env workers: Ray actors that each hold several training envs and step them in their own process.

An env is `Behavior-R1Pro-v0` as a trainer sees it: ``Monitor(SB3ObservationWrapper(ActionChunkWrapper(env)))``
(one step = one action chunk; the instruction as uint8 codes; episode returns for SB3's logger),
built by `behavior_gym`'s own env factory, which pins the simulator to the worker's GPU (OmniGibson
and MuJoCo's EGL read it from the environment) before the simulator starts.

`EnvWorker.step` follows SB3's `DummyVecEnv`: an env whose episode ends is reset at once, its last
observation goes to ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` says whether
a time limit cut it. The class is plain Python; `RayVecEnv` runs it as a Ray actor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """How to build one training env (the `env.train` section in plain values)."""

    task: str = "pick_and_place"
    backend: str = "mujoco"
    chunk: int = 8
    image_size: int = 224
    instance_id: int = 0
    max_episode_steps: int | None = None
    obs_every: int = 1
    reward_coef: float = 1.0
    success_bonus: float = 0.0
    reward_shaping: float = 0.0  # > 0: staged potential shaping of pick-style skills (behavior_gym.wrappers.shaping)
    extra: dict[str, Any] = field(default_factory=dict)  # more env keyword arguments (OmniGibson overrides)
    tasks: tuple[str, ...] = ()  # several tasks: env i runs tasks[(i // group_size) % len(tasks)]
    instance_ids: tuple[int, ...] = ()  # several instances, cycled the same way
    group_size: int = 1  # GRPO: the envs of a group share their task and instance
    layout: str | None = None  # skill tasks' start layout ("tabletop", "mobile"); None: the default

    def task_of(self, env_index: int) -> tuple[str, int]:
        """The task and instance id of global env `env_index`."""
        g = env_index // max(self.group_size, 1)
        task = self.tasks[g % len(self.tasks)] if self.tasks else self.task
        inst = self.instance_ids[g % len(self.instance_ids)] if self.instance_ids else self.instance_id
        return task, int(inst)

    def make(self, gpu_id: int | None = None, env_index: int = 0):
        from stable_baselines3.common.monitor import Monitor

        from behavior_gym.backends.omnigibson.processes import env_factories
        from behavior_gym.tasks.skills import layout_kwargs
        from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper

        task, instance_id = self.task_of(env_index)
        kwargs = dict(image_size=self.image_size, instance_id=instance_id, obs_every=self.obs_every,
                      reward_coef=self.reward_coef, success_bonus=self.success_bonus, **self.extra)
        if self.max_episode_steps is not None:
            kwargs["max_episode_steps"] = self.max_episode_steps
        kwargs.update(layout_kwargs(task, self.layout, self.backend))
        factory = env_factories(task, 1, self.backend, None if gpu_id is None else [gpu_id], None, **kwargs)[0]
        env = factory()
        if self.reward_shaping > 0:
            from behavior_gym.wrappers.shaping import ManipulationShaping

            env = ManipulationShaping(env, self.reward_shaping)
        return Monitor(SB3ObservationWrapper(ActionChunkWrapper(env, chunk=self.chunk)))


def stack_obs(observations: Sequence[Any]) -> Any:
    """A list of per-env observations (dicts of arrays, or arrays) -> one batch."""
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


class EnvWorker:
    """Holds the envs with global indices `env_ids` (built in this process) and steps the ones asked.

    Args:
        spec: how to build an env.
        env_ids: the global indices of this worker's envs (for the log).
        gpu_id: the GPU the simulators render on (None: CPU).
    """

    def __init__(self, spec: EnvSpec, env_ids: Sequence[int], gpu_id: int | None = None):
        self.env_ids = list(env_ids)
        self.gpu_id = gpu_id
        self.envs = [spec.make(gpu_id, i) for i in self.env_ids]

    def ping(self) -> int:
        return os.getpid()

    def spaces(self):
        env = self.envs[0]
        return env.observation_space, env.action_space

    def reset(self, local: Sequence[int], seeds: Sequence[int | None], options: Sequence[dict | None]):
        obs, infos = [], []
        for j, seed, opt in zip(local, seeds, options):
            o, info = self.envs[j].reset(seed=seed, **({"options": opt} if opt else {}))
            obs.append(o)
            infos.append(info)
        return stack_obs(obs), infos

    def step(self, local: Sequence[int], actions: np.ndarray):
        """Step envs `local` (indices into this worker's envs) with `actions` [len(local), ...]."""
        obs, rewards, dones, infos = [], np.zeros(len(local), np.float32), np.zeros(len(local), bool), []
        for k, j in enumerate(local):
            env = self.envs[j]
            o, reward, terminated, truncated, info = env.step(actions[k])
            info = dict(info)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = o
                o, _ = env.reset()
            obs.append(o)
            rewards[k], dones[k] = reward, done
            infos.append(info)
        return stack_obs(obs), rewards, dones, infos

    def env_method(self, name: str, local: Sequence[int], args: tuple, kwargs: dict) -> list:
        return [self.envs[j].get_wrapper_attr(name)(*args, **kwargs) for j in local]

    def get_attr(self, name: str, local: Sequence[int]) -> list:
        return [self.envs[j].get_wrapper_attr(name) for j in local]

    def set_attr(self, name: str, value: Any, local: Sequence[int]) -> None:
        for j in local:
            self.envs[j].set_wrapper_attr(name, value)

    def env_is_wrapped(self, wrapper_class: type, local: Sequence[int]) -> list[bool]:
        from stable_baselines3.common.env_util import is_wrapped

        return [is_wrapped(self.envs[j], wrapper_class) for j in local]

    def close(self) -> None:
        for env in self.envs:
            env.close()
