"""`Behavior-R1Pro-v0`: the Gymnasium environment (SPEC §2).

The env knows the contract — spaces, validation, reward, termination, `info` — and delegates
simulation to a backend. Reward is BEHAVIOR's potential reward: the change in the fraction of
goal predicates that hold, times `reward_coef`, plus `success_bonus` on the step the goal is
first fully satisfied.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np

from behavior_gym import spaces as S
from behavior_gym.backends.base import Backend

log = logging.getLogger(__name__)


def _make_backend(backend: str, task, image_size: int, instance_id: int, grasping_mode: str = "assisted",
                  **task_kwargs) -> Backend:
    if backend == "auto":
        from behavior_gym.backends import omnigibson_available

        ok, why = omnigibson_available()
        backend = "omnigibson" if ok else "mujoco"
        log.info("backend='auto' chose %r%s", backend, "" if ok else f" (OmniGibson not usable: {why})")
    if backend == "mujoco":
        from behavior_gym.backends.mujoco.backend import MujocoBackend
        from behavior_gym.tasks.base import EmbeddedTask
        from behavior_gym.tasks.catalogue import make_task

        if not isinstance(task, EmbeddedTask):
            task = make_task(task, instance_id=instance_id, **task_kwargs)
        return MujocoBackend(task, image_size, instance_id, grasping_mode=grasping_mode)
    if backend == "omnigibson":
        from behavior_gym.backends.omnigibson import OmniGibsonBackend

        if not isinstance(task, str):
            raise ValueError("the OmniGibson backend takes a BEHAVIOR activity name as `task`")
        return OmniGibsonBackend(task, image_size=image_size, instance_id=instance_id, grasping_mode=grasping_mode,
                                 **task_kwargs)
    raise ValueError(
        f"unknown backend {backend!r}; choose 'mujoco' (embedded, runs anywhere), 'omnigibson' "
        "(BEHAVIOR-1K on Isaac Sim: install BEHAVIOR-1K and set OMNIGIBSON_DATA_PATH and ISAAC_PATH) or 'auto'"
    )


class BehaviorR1ProEnv(gym.Env):
    """The Galaxea R1 Pro in a BEHAVIOR task.

    Args:
        task: a BEHAVIOR activity (e.g. ``"picking_up_trash"``) or a project skill task
            (e.g. ``"pick_and_place"``); `behavior_gym.list_tasks()` lists them. The embedded
            backend also takes an `EmbeddedTask` instance: a task of your own.
        backend: ``"mujoco"`` (embedded, default), ``"omnigibson"`` or ``"auto"``.
        image_size: side of the square camera images (224 as in BEHAVIOR's RGBLowResWrapper).
        max_episode_steps: control steps before `truncated` (default: the task's limit). Through
            `gym.make`, this keyword is taken by Gymnasium and becomes a `TimeLimit` wrapper around
            the env (which keeps the task's own limit as well); construct `BehaviorR1ProEnv`
            directly to set a limit longer than the task's.
        render_mode: ``"rgb_array"`` — `render()` returns the three cameras tiled, HWC uint8.
        instance_id: which initial-state instance (scene variant) of the task.
        obs_every: render cameras only every N control steps; the steps between return the
            last frames and set ``info["obs_fresh"] = False`` (for chunked policies).
        reward_coef: scale of the potential reward.
        success_bonus: reward added on the step the goal first holds.
        grasping_mode: ``"assisted"`` (BEHAVIOR's default: a closing gripper holds an object that
            touches both fingers with a fixed joint) or ``"physical"`` (finger friction only).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        task="pick_and_place",
        backend: str = "mujoco",
        image_size: int = S.IMAGE_SIZE,
        max_episode_steps: int | None = None,
        render_mode: str | None = "rgb_array",
        instance_id: int = 0,
        obs_every: int = 1,
        reward_coef: float = 1.0,
        success_bonus: float = 0.0,
        grasping_mode: str = "assisted",
        **task_kwargs,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' (or None)")
        if int(obs_every) < 1:
            raise ValueError(f"obs_every must be >= 1, got {obs_every}")
        if int(image_size) < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
        self.render_mode = render_mode
        self.obs_every = int(obs_every)
        self.reward_coef = float(reward_coef)
        self.success_bonus = float(success_bonus)
        self.image_size = int(image_size)
        self.backend: Backend = _make_backend(backend, task, self.image_size, int(instance_id), grasping_mode,
                                              **task_kwargs)
        self.task_info = self.backend.task_info
        self.task = self.task_info.name
        self.instance_id = int(instance_id)
        self.max_episode_steps = int(max_episode_steps or self.task_info.max_steps)
        from behavior_gym import task_names

        names = task_names()
        self.task_id = names.index(self.task) if self.task in names else 0
        self.observation_space = S.observation_space(self.image_size, len(names))
        self.action_space = S.action_space()
        self._images = np.zeros((3, 3, self.image_size, self.image_size), dtype=np.uint8)
        self._frame_step = -1
        self._elapsed = 0
        self._success_once = False
        self._fraction = 0.0

    # -- Gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.backend.reset(self.np_random)
        self._elapsed = 0
        self._success_once = False
        status = self.backend.goal_status()
        self._fraction = status.fraction
        self._render_now()
        return self._obs(), self._info(status, fresh=True)

    def step(self, action):
        action = S.check_action(action)  # raises before touching the simulator
        self.backend.step(action)
        self._elapsed += 1
        status = self.backend.goal_status()
        fraction = status.fraction
        reward = self.reward_coef * (fraction - self._fraction)
        self._fraction = fraction
        success = status.success
        if success and not self._success_once:
            reward += self.success_bonus
        self._success_once |= success
        terminated = success
        truncated = not terminated and self._elapsed >= self.max_episode_steps
        fresh = self._elapsed % self.obs_every == 0 or terminated or truncated
        if fresh:
            self._render_now()
        return self._obs(fresh), float(reward), terminated, truncated, self._info(status, fresh)

    def render(self):
        if self.render_mode is None:
            return None
        if self._frame_step != self._elapsed:
            self._render_now()
        return tile_cameras(self._images)

    def close(self):
        self.backend.close()
        super().close()

    # -- helpers ---------------------------------------------------------------------------------
    def _render_now(self):
        # A fresh buffer per frame: observations are views of it, never copied, and frames a
        # caller still holds are never overwritten.
        self._images = self.backend.render_cameras(np.empty_like(self._images))
        self._frame_step = self._elapsed

    def _obs(self, fresh: bool = True) -> dict:
        # A fresh frame is handed out as views of its own buffer; a repeated one is copied, so no
        # two observations share memory (what Gymnasium asks of envs).
        images = self._images if fresh else self._images.copy()
        return {
            "head_rgb": images[0],
            "wrist_rgb": images[1:],
            "proprio": self.backend.proprio(),
            "instruction": self.task_info.instruction,
            "task_id": self.task_id,
        }

    def _info(self, status, fresh: bool) -> dict:
        return {
            "success": status.success,
            "success_once": self._success_once,
            "q_score": status.fraction,
            "goal_status": {"satisfied": list(status.satisfied), "unsatisfied": list(status.unsatisfied)},
            "task": self.task,
            "instance_id": self.instance_id,
            "episode_len": self._elapsed,
            "obs_fresh": fresh,
        }


def tile_cameras(images: np.ndarray) -> np.ndarray:
    """Tile [head, left wrist, right wrist] (each [3, H, W]) into one HWC frame of size [2H, 3H]:
    the head camera at double size on the left, the wrists stacked on the right."""
    head, left, right = images
    h = head.shape[1]
    frame = np.empty((2 * h, 3 * h, 3), dtype=np.uint8)
    frame[:, : 2 * h] = head.transpose(1, 2, 0).repeat(2, axis=0).repeat(2, axis=1)
    frame[:h, 2 * h :] = left.transpose(1, 2, 0)
    frame[h:, 2 * h :] = right.transpose(1, 2, 0)
    return frame
