"""The SB3 adapter: an observation SB3 can store.

SB3 buffers and vector envs hold fixed-shape numeric arrays; `spaces.Text` has no shape, so the
`instruction` becomes its ASCII codes, `Box(0, 127, (512,), uint8)`, through
`behavior_gym.spaces.encode_instruction`. Nothing is lost: a policy turns the codes back into the
text with `decode_instruction` (or tokenises them) when it reads the observation. Images stay uint8.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from behavior_gym.spaces import INSTRUCTION_MAX_LEN, encode_instruction


class SB3ObservationWrapper(gym.ObservationWrapper):
    """Turn every `Text` entry of a Dict observation (the `instruction`) into uint8 ASCII codes.

    Args:
        env: an env with a Dict observation space (e.g. `Behavior-R1Pro-v0`).
        max_len: code length; defaults to each Text space's `max_length` (512 for the instruction).
    """

    def __init__(self, env: gym.Env, max_len: int | None = None):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict):
            raise ValueError(f"SB3ObservationWrapper needs a Dict observation space, got {space}")
        self.text_keys = _text_keys(space, max_len)
        self.observation_space = sb3_observation_space(space, max_len)

    def observation(self, observation: dict) -> dict:
        out = dict(observation)
        for key, n in self.text_keys.items():
            out[key] = encode_instruction(observation[key], n)
        return out


def _text_keys(space: spaces.Dict, max_len: int | None) -> dict[str, int]:
    return {key: int(max_len or sub.max_length or INSTRUCTION_MAX_LEN)
            for key, sub in space.spaces.items() if isinstance(sub, spaces.Text)}


def sb3_observation_space(space: spaces.Dict, max_len: int | None = None) -> spaces.Dict:
    """The observation space `SB3ObservationWrapper` makes of `space` (Text entries -> uint8 codes)."""
    text = _text_keys(space, max_len)
    return spaces.Dict({key: spaces.Box(0, 127, (text[key],), np.uint8) if key in text else sub
                        for key, sub in space.spaces.items()})
