"""The real backend: BEHAVIOR-1K's OmniGibson on NVIDIA Isaac Sim (SPEC §4)."""

from behavior_gym.backends.omnigibson.backend import OmniGibsonBackend
from behavior_gym.backends.omnigibson.environment import OmniGibsonUnavailable, require_omnigibson, run_checks

__all__ = ["OmniGibsonBackend", "OmniGibsonUnavailable", "require_omnigibson", "run_checks"]
