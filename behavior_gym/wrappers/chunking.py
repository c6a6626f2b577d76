"""Chunked acting: one `step` executes K actions, as OpenVLA-OFT predicts chunks of 8.

The action space is the K actions flattened, step k at ``[k*23:(k+1)*23]``, bounded by the tiled
single-step bounds. The reward of a chunk is the sum of its per-step rewards (RLinf's `chunk_level`
reward), and the chunk stops early when the episode ends inside it. `info` is the info of the last
executed step plus:

- ``chunk_rewards``: float32 [K], the per-step rewards (0 after an early stop);
- ``chunk_terminated`` / ``chunk_truncated``: bool [K], per-step flags (False after an early stop);
- ``chunk_dones``: bool [K], their OR;
- ``chunk_steps``: how many of the K actions were executed.

The env's own `info["episode_len"]` stays the true number of env steps. With
``gym.make(..., obs_every=K)`` the cameras render only at chunk boundaries (and at episode ends), which
is all a chunked policy sees. Unlike RLinf's `chunk_step`,
a done inside the chunk stops it there: the actions after the end are never sent to a finished
episode, so SB3's vector envs auto-reset exactly that env at the right step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ActionChunkWrapper(gym.Wrapper):
    """Execute a chunk of `chunk` actions per step.

    Args:
        env: an env with a 1-D Box action space (23-D for `Behavior-R1Pro-v0`).
        chunk: actions per step (K).
    """

    def __init__(self, env: gym.Env, chunk: int = 8):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"ActionChunkWrapper needs a 1-D Box action space, got {space}")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = int(chunk)
        self.action_dim = int(space.shape[0])
        self.action_space = spaces.Box(np.tile(space.low, self.chunk), np.tile(space.high, self.chunk),
                                       (self.chunk * self.action_dim,), dtype=space.dtype)

    def step(self, action):
        actions = np.asarray(action)
        if actions.size != self.chunk * self.action_dim or actions.ndim not in (1, 2):
            raise ValueError(
                f"a chunk action must have shape ({self.chunk * self.action_dim},) or ({self.chunk}, "
                f"{self.action_dim}) (step k at [k*{self.action_dim}:(k+1)*{self.action_dim}]), got {actions.shape}"
            )
        actions = actions.reshape(self.chunk, self.action_dim)
        rewards = np.zeros(self.chunk, dtype=np.float32)
        terminated_k = np.zeros(self.chunk, dtype=bool)
        truncated_k = np.zeros(self.chunk, dtype=bool)
        total = 0.0
        terminated = truncated = False
        for k in range(self.chunk):
            obs, reward, terminated, truncated, info = self.env.step(actions[k])
            rewards[k], terminated_k[k], truncated_k[k] = reward, terminated, truncated
            total += float(reward)
            if terminated or truncated:
                break
        info = dict(info)
        info.update(chunk_rewards=rewards, chunk_terminated=terminated_k, chunk_truncated=truncated_k,
                    chunk_dones=terminated_k | truncated_k, chunk_steps=k + 1)
        return obs, total, terminated, truncated, info
