"""Helpers for the vla_policies tests: observations, spaces and a tiny env with the chunked action Box."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from behavior_gym.spaces import ACTION_DIM, ACTION_HIGH, ACTION_LOW, PROPRIO_DIM, encode_instruction
from vla_policies import OpenVLAOFTProcessor

CHUNK = 8
IMAGE_SIZE = 224
INSTRUCTIONS = ["pick up the red cup", "open the top drawer of the kitchen cabinet", "stack the blocks"]


def observation_space(image_size: int = IMAGE_SIZE) -> spaces.Dict:
    """The SB3-facing observation of Behavior-R1Pro-v0: the instruction as uint8 ASCII codes."""
    return spaces.Dict({
        "head_rgb": spaces.Box(0, 255, (3, image_size, image_size), np.uint8),
        "wrist_rgb": spaces.Box(0, 255, (2, 3, image_size, image_size), np.uint8),
        "proprio": spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
        "instruction": spaces.Box(0, 255, (512,), np.uint8),
        "task_id": spaces.Discrete(len(INSTRUCTIONS)),
    })


def chunked_action_space(chunk: int = CHUNK) -> spaces.Box:
    return spaces.Box(np.tile(ACTION_LOW, chunk), np.tile(ACTION_HIGH, chunk), shape=(chunk * ACTION_DIM,),
                      dtype=np.float32)


def make_obs(batch: int, instructions: list[str] | None = None, seed: int = 0,
             image_size: int = IMAGE_SIZE) -> dict[str, torch.Tensor]:
    """A batch of SB3-style observation tensors with random images."""
    g = torch.Generator().manual_seed(seed)
    instructions = instructions or [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]
    return {
        "head_rgb": torch.randint(0, 256, (batch, 3, image_size, image_size), generator=g, dtype=torch.uint8),
        "wrist_rgb": torch.randint(0, 256, (batch, 2, 3, image_size, image_size), generator=g, dtype=torch.uint8),
        "proprio": torch.randn(batch, PROPRIO_DIM, generator=g),
        "instruction": torch.as_tensor(np.stack([encode_instruction(t) for t in instructions])),
        "task_id": torch.zeros(batch, dtype=torch.long),
    }


class TinyBehaviorEnv(gym.Env):
    """Emits the SB3-facing Behavior observation with random images; accepts the chunked action Box."""

    metadata = {"render_modes": []}

    def __init__(self, chunk: int = CHUNK, image_size: int = 64, episode_len: int = 3):
        self.observation_space = observation_space(image_size)
        self.action_space = chunked_action_space(chunk)
        self.episode_len = episode_len
        self._t = 0
        self._task = 0

    def _obs(self) -> dict[str, np.ndarray]:
        rng = self.np_random
        size = self.observation_space["head_rgb"].shape[-1]
        return {
            "head_rgb": rng.integers(0, 256, (3, size, size), dtype=np.uint8),
            "wrist_rgb": rng.integers(0, 256, (2, 3, size, size), dtype=np.uint8),
            "proprio": rng.standard_normal(PROPRIO_DIM).astype(np.float32),
            "instruction": encode_instruction(INSTRUCTIONS[self._task]),
            "task_id": self._task,
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._task = int(self.np_random.integers(len(INSTRUCTIONS)))
        return self._obs(), {}

    def step(self, action):
        action = np.asarray(action)
        assert action.shape == self.action_space.shape, action.shape
        assert np.all(np.isfinite(action))
        self._t += 1
        # reward: closeness of the first step's gripper commands to "open"
        reward = float(np.mean(action.reshape(-1, ACTION_DIM)[:, [14, 22]]))
        truncated = self._t >= self.episode_len
        return self._obs(), reward, False, truncated, {}


def model_inputs(processor: OpenVLAOFTProcessor, instructions: list[str], seed: int = 0, n_images: int = 3,
                 image_size: int = IMAGE_SIZE) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (len(instructions), n_images, 3, image_size, image_size), generator=g,
                           dtype=torch.uint8)
    return processor(instructions, images)
