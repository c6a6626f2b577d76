"""The Behavior-R1Pro-v0 contract: action layout and bounds, proprio layout, observation space.

Every backend, wrapper and policy imports these definitions; nothing else restates them
(SPEC §2). The action order is OmniGibson's R1 Pro controller order — base, torso, left arm,
left gripper, right arm, right gripper — which interleaves the grippers with their arms.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

IMAGE_SIZE = 224
ACTION_DIM = 23
PROPRIO_DIM = 61
INSTRUCTION_MAX_LEN = 512
# Printable ASCII including the space; `spaces.Text`'s default charset has no space.
INSTRUCTION_CHARSET = frozenset(string.printable) - frozenset("\t\n\r\x0b\x0c")


@dataclass(frozen=True)
class Part:
    """One controller's slice of the 23-D action."""

    name: str
    start: int
    stop: int
    low: tuple[float, ...]
    high: tuple[float, ...]
    meaning: str

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def dim(self) -> int:
        return self.stop - self.start


_ARM_LOW = (-4.4506, -0.1745, -2.3562, -2.0944, -2.3562, -1.0472, -1.5708)
_ARM_HIGH = (1.3090, 3.1416, 2.3562, 0.3491, 2.3562, 1.0472, 1.5708)
# The right arm mirrors the left about the sagittal plane: only joint 2 (shoulder roll) flips.
_RIGHT_ARM_LOW = (-4.4506, -3.1416, -2.3562, -2.0944, -2.3562, -1.0472, -1.5708)
_RIGHT_ARM_HIGH = (1.3090, 0.1745, 2.3562, 0.3491, 2.3562, 1.0472, 1.5708)

ACTION_PARTS: tuple[Part, ...] = (
    Part("base", 0, 3, (-0.75, -0.75, -1.0), (0.75, 0.75, 1.0),
         "vx, vy (m/s) and yaw rate (rad/s) in the robot frame"),
    Part("torso", 3, 7, (-1.1345, -2.7925, -1.8326, -3.0543), (1.8326, 2.5307, 1.5708, 3.0543),
         "absolute torso joint positions (rad)"),
    Part("left_arm", 7, 14, _ARM_LOW, _ARM_HIGH, "absolute left arm joint positions (rad)"),
    Part("left_gripper", 14, 15, (-1.0,), (1.0,), "-1 closed ... +1 open"),
    Part("right_arm", 15, 22, _RIGHT_ARM_LOW, _RIGHT_ARM_HIGH, "absolute right arm joint positions (rad)"),
    Part("right_gripper", 22, 23, (-1.0,), (1.0,), "-1 closed ... +1 open"),
)
ACTION_PART = {p.name: p for p in ACTION_PARTS}
ACTION_LOW = np.concatenate([p.low for p in ACTION_PARTS]).astype(np.float32)
ACTION_HIGH = np.concatenate([p.high for p in ACTION_PARTS]).astype(np.float32)

# Joint ranges of the robot model: the commandable ranges above (torso and arms).
TORSO_RESET = (1.025, -1.45, -0.47, 0.0)  # BEHAVIOR's reset_joint_pos for the trunk
GRIPPER_OPEN_WIDTH = 0.05  # metres per finger when fully open (OmniGibson's finger limit)

# 61-D proprio: BEHAVIOR's 2026 standard-track layout (`eval/r1pro.yaml` proprio_obs).
_ARM_PROPRIO = (("joint_qpos", 7), ("joint_qvel", 7), ("eef_pos", 3), ("eef_quat", 4),
                ("gripper_qpos", 2), ("gripper_qvel", 2))
PROPRIO_FIELDS: tuple[tuple[str, int], ...] = (
    (("base_qvel", 3),)
    + tuple((f"left_{k}", n) for k, n in _ARM_PROPRIO)
    + tuple((f"right_{k}", n) for k, n in _ARM_PROPRIO)
    + (("trunk_qpos", 4), ("trunk_qvel", 4))
)


def _field_slices(fields: tuple[tuple[str, int], ...]) -> dict[str, slice]:
    out, i = {}, 0
    for name, n in fields:
        out[name] = slice(i, i + n)
        i += n
    return out


PROPRIO_SLICES: dict[str, slice] = _field_slices(PROPRIO_FIELDS)
assert sum(n for _, n in PROPRIO_FIELDS) == PROPRIO_DIM


def action_space() -> spaces.Box:
    """The 23-D R1 Pro action, bounded by BEHAVIOR's `JOINT_RANGE["R1Pro"]`."""
    return spaces.Box(ACTION_LOW.copy(), ACTION_HIGH.copy(), dtype=np.float32)


def instruction_space() -> spaces.Text:
    return spaces.Text(INSTRUCTION_MAX_LEN, min_length=1, charset="".join(sorted(INSTRUCTION_CHARSET)))


def observation_space(image_size: int = IMAGE_SIZE, n_tasks: int = 1) -> spaces.Dict:
    """The observation dict of SPEC §2: channel-first uint8 images, 61-D proprio, text, task id."""
    return spaces.Dict(
        {
            "head_rgb": spaces.Box(0, 255, (3, image_size, image_size), np.uint8),
            "wrist_rgb": spaces.Box(0, 255, (2, 3, image_size, image_size), np.uint8),
            "proprio": spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
            "instruction": instruction_space(),
            "task_id": spaces.Discrete(max(n_tasks, 1)),
        }
    )


def check_action(action) -> np.ndarray:
    """Validate a 23-D action and clip it to bounds.

    Returns a float32 copy. Raises `ValueError` naming the offending slice for a wrong shape,
    a non-numeric dtype, or NaN/inf values, so a policy bug is found where it happens.
    """
    arr = np.asarray(action)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(
            f"action must be a numeric array of shape ({ACTION_DIM},), got dtype {arr.dtype}; "
            "pass np.float32 values in the order " + describe_action_layout()
        )
    if arr.shape != (ACTION_DIM,):
        raise ValueError(
            f"action must have shape ({ACTION_DIM},), got {arr.shape}; the R1 Pro action is "
            + describe_action_layout()
            + (" (for a chunk of actions use behavior_gym.wrappers.ActionChunkWrapper)" if arr.ndim == 2 else "")
        )
    arr = arr.astype(np.float32, copy=True)
    bad = ~np.isfinite(arr)
    if bad.any():
        parts = [f"{p.name}[{', '.join(str(i - p.start) for i in np.flatnonzero(bad[p.slice]) + p.start)}]"
                 for p in ACTION_PARTS if bad[p.slice].any()]
        raise ValueError(f"action has NaN or inf in {', '.join(parts)} (indices {np.flatnonzero(bad).tolist()}); "
                         "the env state is unchanged, send a finite action")
    return np.clip(arr, ACTION_LOW, ACTION_HIGH)


def describe_action_layout() -> str:
    return ", ".join(f"{p.name} {p.start}:{p.stop}" for p in ACTION_PARTS)


def split_action(action: np.ndarray) -> dict[str, np.ndarray]:
    """Split a 23-D action (or a batch `[..., 23]`) into its named parts."""
    return {p.name: action[..., p.slice] for p in ACTION_PARTS}


def encode_instruction(text: str, max_len: int = INSTRUCTION_MAX_LEN) -> np.ndarray:
    """ASCII bytes of `text`, zero-padded to `max_len`: a lossless, storable form of the instruction."""
    raw = text.encode("ascii", errors="replace")[:max_len]
    out = np.zeros(max_len, dtype=np.uint8)
    out[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def decode_instruction(codes: np.ndarray) -> str:
    """Inverse of `encode_instruction` (accepts any integer dtype, e.g. float32 from SB3 buffers)."""
    codes = np.asarray(codes).astype(np.uint8).ravel()
    end = np.flatnonzero(codes == 0)
    return codes[: end[0] if end.size else codes.size].tobytes().decode("ascii")
