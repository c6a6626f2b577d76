"""OmniGibson observations and infos -> the Behavior-R1Pro-v0 contract.

OmniGibson gives RGBA HWC images (numpy or torch, possibly on the GPU) under
`obs[robot][sensor]["rgb"]` (or flattened `robot::sensor::rgb` keys), the proprioception as a
flat vector in `proprio_obs` order or as a dict, and success under `info["done"]["success"]`.
"""

from __future__ import annotations

import numpy as np

from behavior_gym.backends.omnigibson.config import HEAD_CAMERA, PROPRIO_KEYS, ROBOT_NAME, WRIST_CAMERAS
from behavior_gym.spaces import PROPRIO_DIM, PROPRIO_FIELDS


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _find(obs: dict, robot: str, sensor: str, modality: str):
    flat = f"{robot}::{sensor}::{modality}"
    if flat in obs:
        return obs[flat]
    try:
        return obs[robot][sensor][modality]
    except (KeyError, TypeError):
        raise KeyError(
            f"OmniGibson observation has no {flat!r} (nor obs[{robot!r}][{sensor!r}][{modality!r}]); "
            f"robot keys present: {sorted(obs.get(robot, {}) if isinstance(obs.get(robot), dict) else obs)[:12]}. "
            "The robot must be named 'robot_r1' with obs_modalities including 'rgb'."
        ) from None


def rgba_to_chw(image, size: int | None = None) -> np.ndarray:
    """RGBA (or RGB) HWC uint8/float -> RGB CHW uint8."""
    img = _to_numpy(image)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HWC RGB(A) image, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if size is not None and img.shape[:2] != (size, size):
        raise ValueError(f"camera image is {img.shape[:2]}, expected ({size}, {size}); set the camera size in "
                         "robots[0].sensor_config before constructing the env")
    return np.ascontiguousarray(img[..., :3].transpose(2, 0, 1))


def map_images(obs: dict, out: np.ndarray, robot: str = ROBOT_NAME) -> np.ndarray:
    """Head, left wrist, right wrist RGB into `out` [3, 3, H, W]."""
    size = out.shape[-1]
    for i, sensor in enumerate((HEAD_CAMERA, *WRIST_CAMERAS)):
        out[i] = rgba_to_chw(_find(obs, robot, sensor, "rgb"), size)
    return out


def map_proprio(proprio, robot: str = ROBOT_NAME) -> np.ndarray:
    """The 61-D proprio from OmniGibson's proprioception (flat vector in PROPRIO_KEYS order, or a dict)."""
    if isinstance(proprio, dict) and robot in proprio:
        proprio = proprio[robot]
    if isinstance(proprio, dict):
        if "proprio" in proprio:
            return map_proprio(proprio["proprio"], robot)
        parts = []
        for (ours, n), og_key in zip(PROPRIO_FIELDS, PROPRIO_KEYS):
            if og_key not in proprio:
                raise KeyError(f"proprioception dict lacks {og_key!r} (for {ours}); "
                               f"set robots[0].proprio_obs to {list(PROPRIO_KEYS)}")
            v = _to_numpy(proprio[og_key]).reshape(-1)
            if v.size != n:
                raise ValueError(f"proprioception {og_key!r} has {v.size} values, expected {n}")
            parts.append(v)
        return np.concatenate(parts).astype(np.float32)
    v = _to_numpy(proprio).reshape(-1).astype(np.float32)
    if v.size != PROPRIO_DIM:
        raise ValueError(f"proprio vector has {v.size} values, expected {PROPRIO_DIM} — the robot's proprio_obs "
                         f"must be exactly {list(PROPRIO_KEYS)} (BEHAVIOR's 2026 standard-track layout)")
    return v


def proprio_from_obs(obs: dict, robot: str = ROBOT_NAME) -> np.ndarray:
    flat = f"{robot}::proprio"
    if flat in obs:
        return map_proprio(obs[flat], robot)
    if robot in obs and isinstance(obs[robot], dict) and "proprio" in obs[robot]:
        return map_proprio(obs[robot]["proprio"], robot)
    raise KeyError(f"OmniGibson observation has no proprioception ({flat!r}); add 'proprio' to obs_modalities")


def success_from_info(info: dict) -> bool:
    """`info["done"]["success"]`, with the termination-condition fallback some builds need."""
    done = info.get("done", {}) if isinstance(info, dict) else {}
    if "success" in done:
        return bool(done["success"])
    conds = done.get("termination_conditions", {})
    pred = conds.get("predicate", {})
    return bool(pred.get("success", False) or pred.get("done", False))


def goal_status_names(status: dict | None, names: list[str] | None) -> tuple[list[str], list[str]]:
    """Predicate indices -> readable names (the task's natural-language goal conditions when known)."""
    status = status or {"satisfied": [], "unsatisfied": []}

    def name(i):
        return names[i] if names and 0 <= i < len(names) else f"goal[{i}]"

    return [name(i) for i in status.get("satisfied", [])], [name(i) for i in status.get("unsatisfied", [])]
