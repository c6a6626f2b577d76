"""Thin composable wrappers around `Behavior-R1Pro-v0`: chunked acting and the SB3 observation adapter.

    env = SB3ObservationWrapper(ActionChunkWrapper(gym.make("Behavior-R1Pro-v0", task="pick_and_place"), chunk=8))
"""

from behavior_gym.wrappers.chunking import ActionChunkWrapper
from behavior_gym.wrappers.sb3 import SB3ObservationWrapper

__all__ = ["ActionChunkWrapper", "SB3ObservationWrapper"]
