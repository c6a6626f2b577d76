"""Can OmniGibson run here? Each check says what is wrong and what to do.

Supported installs (BEHAVIOR-1K from its repository; PyPI's omnigibson 1.1.1 is too old, it has
no R1Pro): v3.7.x with Isaac Sim 4.5 on Python 3.10, and v3.8+ with Isaac Sim 5.1 on Python 3.11.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from behavior_gym.backends.omnigibson.config import CHALLENGE_FOLDER

ASSET_FOLDERS = ("behavior-1k-assets", "omnigibson-robot-assets")
INSTALL = ("install BEHAVIOR-1K from https://github.com/StanfordVL/BEHAVIOR-1K with "
           "`./setup.sh --new-env --omnigibson --bddl --joylo --dataset`")
# Data-centre GPUs without RT cores render Isaac Sim scenes with artefacts (RLinf, NVIDIA's RTX support table).
NON_RTX = ("A100", "A800", "H100", "H800", "H200", "B200", "V100", "A30", "A10G")


class OmniGibsonUnavailable(RuntimeError):
    """OmniGibson cannot run on this machine; the message says why and what to do."""


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    fatal: bool = True


def supported_version(version: str, python: tuple[int, int]) -> str | None:
    """None when (omnigibson version, Python) is a supported pair, else the reason."""
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return f"cannot parse omnigibson version {version!r}"
    if (major, minor) < (3, 7):
        return (f"omnigibson {version} is too old (no R1Pro robot; PyPI's 1.1.1 is not BEHAVIOR-1K); "
                f"{INSTALL} (v3.7.x or newer)")
    if (major, minor) == (3, 7) and python != (3, 10):
        return f"omnigibson 3.7.x runs on Isaac Sim 4.5 with Python 3.10, this is Python {python[0]}.{python[1]}"
    if (major, minor) >= (3, 8) and python < (3, 11):
        return f"omnigibson {version} needs Isaac Sim 5.1 and Python 3.11+, this is Python {python[0]}.{python[1]}"
    return None


def check_package() -> Check:
    if importlib.util.find_spec("omnigibson") is None:
        return Check("omnigibson", False, f"the omnigibson package is not installed: {INSTALL}")
    try:
        version = importlib.metadata.version("omnigibson")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    why = supported_version(version, sys.version_info[:2]) if version != "unknown" else None
    return Check("omnigibson", why is None, why or f"omnigibson {version} on Python {sys.version.split()[0]}")


def check_data_path(env: dict | None = None) -> Check:
    env = os.environ if env is None else env
    path = env.get("OMNIGIBSON_DATA_PATH")
    if not path:
        return Check("OMNIGIBSON_DATA_PATH", False,
                     "OMNIGIBSON_DATA_PATH is not set: export OMNIGIBSON_DATA_PATH=/path/to/BEHAVIOR-1K/datasets "
                     "(the folder holding behavior-1k-assets/ and omnigibson-robot-assets/)")
    root = Path(path)
    missing = [f for f in ASSET_FOLDERS if not (root / f).is_dir()]
    if missing:
        return Check("OMNIGIBSON_DATA_PATH", False,
                     f"OMNIGIBSON_DATA_PATH={path} lacks {', '.join(missing)}: download them with "
                     "`python -m omnigibson.utils.asset_utils --download_omnigibson_robot_assets "
                     "--download_behavior_1k_assets --accept_license` (30+ GB)")
    if not (root / CHALLENGE_FOLDER).is_dir():
        return Check("OMNIGIBSON_DATA_PATH", True,
                     f"{path}: assets present; {CHALLENGE_FOLDER}/ missing, so only instance 0 of each task "
                     "loads (download_2025_challenge_task_instances() adds the 200 training instances)", fatal=False)
    return Check("OMNIGIBSON_DATA_PATH", True, f"{path}: assets and challenge task instances present")


def check_isaac(env: dict | None = None) -> Check:
    env = os.environ if env is None else env
    if importlib.util.find_spec("isaacsim") is not None:
        return Check("Isaac Sim", True, "isaacsim is installed as a Python package")
    isaac = env.get("ISAAC_PATH")
    if not isaac:
        return Check("Isaac Sim", False, "Isaac Sim not found: pip-install it with BEHAVIOR-1K's setup.sh, or set "
                                          "ISAAC_PATH to a standalone Isaac Sim folder")
    if not Path(isaac).is_dir():
        return Check("Isaac Sim", False, f"ISAAC_PATH={isaac} does not exist")
    return Check("Isaac Sim", True, f"standalone Isaac Sim at {isaac}")


def gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def check_gpu(names: list[str] | None = None) -> Check:
    names = gpu_names() if names is None else names
    if not names:
        return Check("GPU", False, "no NVIDIA GPU found (nvidia-smi): Isaac Sim needs an RTX GPU")
    bad = [n for n in names if any(tag in n for tag in NON_RTX)]
    if bad:
        return Check("GPU", True, f"{bad[0]} has no RT cores: Isaac Sim runs but renders with visible artefacts; "
                                  "prefer an RTX GPU (RTX 30/40/50, L40, A6000) for training images", fatal=False)
    return Check("GPU", True, f"{names[0]}")


def run_checks() -> list[Check]:
    return [check_package(), check_data_path(), check_isaac(), check_gpu()]


def require_omnigibson() -> None:
    """Raise `OmniGibsonUnavailable` listing every blocking problem."""
    problems = [c.message for c in run_checks() if c.fatal and not c.ok]
    if problems:
        raise OmniGibsonUnavailable("The OmniGibson backend cannot run here:\n  - " + "\n  - ".join(problems)
                                    + "\nThe embedded backend (backend='mujoco') runs anywhere.")
