"""A small env that keeps `Behavior-R1Pro-v0`'s contract, and a tiny chunk-token policy, for the trainer tests.

`ToyBehaviorEnv` has the contract's observation dict (channel-first uint8 `head_rgb` / `wrist_rgb`,
61-D `proprio`, `instruction` Text, `task_id`), the 23-D R1 Pro action with its bounds, the contract's
`info` keys, a tiled `render()` and a deterministic `reset(seed=...)`. Its task is learnable: each
episode asks for the left gripper (action index 14) open or closed — shown by the head camera's colour,
`proprio[0]` and the instruction — and every step that commands the asked sign earns 1/8.

`TinyTokenPolicy` is an SB3 policy in OpenVLA-OFT's shape: one categorical "token" per action value
(K * 23 per chunk, `n_bins` bins on each dimension's bounds), a value head named `value_head`, and
`forward` / `evaluate_actions` with `per_token=True`.
"""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import DummyVecEnv

from behavior_gym import spaces as S
from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper

th.set_num_threads(1)  # two cores, shared

GRIPPER = S.ACTION_PART["left_gripper"].start


class ToyBehaviorEnv(gym.Env):
    """Behavior-R1Pro-v0's contract around a one-decision task (see the module docstring).

    Args:
        image_size: camera side (the contract's 224 is allowed but slow).
        max_episode_steps: env steps before `truncated`.
        terminate_on_success: end the episode (`terminated`) when `success_steps` consecutive steps
            were right; otherwise success is only reported.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, image_size: int = 32, max_episode_steps: int = 24, terminate_on_success: bool = False,
                 success_steps: int = 8, render_mode: str | None = "rgb_array"):
        self.image_size = image_size
        self.max_episode_steps = max_episode_steps
        self.terminate_on_success = terminate_on_success
        self.success_steps = success_steps
        self.render_mode = render_mode
        self.observation_space = S.observation_space(image_size, n_tasks=2)
        self.action_space = S.action_space()
        self.task = "toy_gripper"
        self.target = 1
        self._noise = np.zeros(3, dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = int(self.np_random.choice([-1, 1]))
        self._noise = self.np_random.integers(0, 40, size=3)
        self._proprio_noise = self.np_random.normal(0, 0.1, size=S.PROPRIO_DIM).astype(np.float32)
        self.elapsed = self.correct = self.streak = 0
        self.success_once = False
        return self._obs(), self._info(False)

    def step(self, action):
        action = S.check_action(action)
        right = bool(np.sign(action[GRIPPER]) == self.target)
        self.elapsed += 1
        self.correct += right
        self.streak = self.streak + 1 if right else 0
        success = self.streak >= self.success_steps
        self.success_once |= success
        terminated = success and self.terminate_on_success
        truncated = not terminated and self.elapsed >= self.max_episode_steps
        return self._obs(), 0.125 * right, terminated, truncated, self._info(success)

    def _images(self) -> np.ndarray:
        s = self.image_size
        img = np.empty((3, 3, s, s), dtype=np.uint8)
        colour = np.array([200, 40, 40] if self.target > 0 else [40, 40, 200]) + self._noise
        img[:] = colour.astype(np.uint8)[None, :, None, None]
        img[1:, :, : s // 4, : s // 4] = min(255, 8 * self.elapsed)  # a step marker on the wrist cameras
        return img

    def _obs(self) -> dict:
        img = self._images()
        proprio = self._proprio_noise.copy()
        proprio[0] = self.target
        return {"head_rgb": img[0], "wrist_rgb": img[1:], "proprio": proprio,
                "instruction": f"{'open' if self.target > 0 else 'close'} the left gripper", "task_id": 0}

    def _info(self, success: bool) -> dict:
        held, missing = (["gripper"], []) if success else ([], ["gripper"])
        goal = {"satisfied": held, "unsatisfied": missing}
        return {"success": success, "success_once": self.success_once, "q_score": self.correct / max(self.elapsed, 1),
                "goal_status": goal, "task": self.task, "episode_len": self.elapsed}

    def render(self):
        from algorithms.callbacks import tile_observation

        obs = self._obs()
        return tile_observation(obs)


def make_toy_env(chunk: int = 8, monitor: bool = True, **kwargs) -> gym.Env:
    """The toy env as a trainer sees it: chunked, instruction as codes, SB3 Monitor."""
    env = SB3ObservationWrapper(ActionChunkWrapper(ToyBehaviorEnv(**kwargs), chunk=chunk))
    return Monitor(env) if monitor else env


def make_toy_vec_env(n_envs: int = 4, chunk: int = 8, **kwargs) -> DummyVecEnv:
    return DummyVecEnv([lambda: make_toy_env(chunk=chunk, **kwargs) for _ in range(n_envs)])


class TinyTokenPolicy(BasePolicy):
    """A few-thousand-parameter policy with OpenVLA-OFT's interface (per-token categorical actions)."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Box, lr_schedule, use_sde: bool = False,
                 n_bins: int = 16, hidden: int = 32, **kwargs):
        super().__init__(observation_space, action_space, normalize_images=False, **kwargs)
        self.n_bins = n_bins
        self.n_tokens = int(np.prod(action_space.shape))
        self.body = th.nn.Sequential(th.nn.Linear(7, hidden), th.nn.Tanh())
        self.action_head = th.nn.Linear(hidden, self.n_tokens * n_bins)
        th.nn.init.zeros_(self.action_head.weight)
        th.nn.init.zeros_(self.action_head.bias)
        self.value_head = th.nn.Sequential(th.nn.Linear(hidden, hidden), th.nn.Tanh(), th.nn.Linear(hidden, 1))
        self.register_buffer("low", th.as_tensor(action_space.low, dtype=th.float32))
        self.register_buffer("high", th.as_tensor(action_space.high, dtype=th.float32))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _features(self, obs) -> th.Tensor:
        head = obs["head_rgb"].float().mean(dim=(2, 3)) / 255.0
        return self.body(th.cat([obs["proprio"].float()[:, :4], head], dim=1))

    def _dist(self, obs):
        h = self._features(obs)
        logits = self.action_head(h).view(-1, self.n_tokens, self.n_bins)
        return th.distributions.Categorical(logits=logits.float()), self.value_head(h)

    def _to_actions(self, bins: th.Tensor) -> th.Tensor:
        return self.low + (bins.float() + 0.5) / self.n_bins * (self.high - self.low)

    def _to_bins(self, actions: th.Tensor) -> th.Tensor:
        frac = (actions.float() - self.low) / (self.high - self.low)
        return (frac * self.n_bins).floor().clamp(0, self.n_bins - 1).long()

    def forward(self, obs, deterministic: bool = False, per_token: bool = False):
        dist, values = self._dist(obs)
        bins = dist.probs.argmax(-1) if deterministic else dist.sample()
        log_prob = dist.log_prob(bins)
        return self._to_actions(bins), values, log_prob if per_token else log_prob.sum(-1)

    def evaluate_actions(self, obs, actions, per_token: bool = False):
        dist, values = self._dist(obs)
        log_prob, entropy = dist.log_prob(self._to_bins(actions)), dist.entropy()
        if not per_token:
            log_prob, entropy = log_prob.sum(-1), entropy.sum(-1)
        return values, log_prob, entropy

    def predict_values(self, obs):
        return self._dist(obs)[1]

    def _predict(self, observation, deterministic: bool = False):
        return self.forward(observation, deterministic)[0]


def evaluate_return(model, n_episodes: int = 16, seed: int = 1000, **env_kwargs) -> float:
    """Mean undiscounted return of the model's (sampled) actions over fresh episodes."""
    env = make_toy_env(monitor=False, **env_kwargs)
    total = 0.0
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=False)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
    return total / n_episodes


@pytest.fixture
def toys() -> SimpleNamespace:
    """The toy env, its factories, the tiny policy and the evaluation helper."""
    return SimpleNamespace(ToyBehaviorEnv=ToyBehaviorEnv, TinyTokenPolicy=TinyTokenPolicy, make_toy_env=make_toy_env,
                           make_toy_vec_env=make_toy_vec_env, evaluate_return=evaluate_return)
