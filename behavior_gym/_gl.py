"""Choose MuJoCo's OpenGL platform before MuJoCo is imported.

`import mujoco` binds PyOpenGL to the platform named by `MUJOCO_GL` (GLFW when unset, which
needs a display). A headless machine needs EGL or OSMesa, so when the user has not chosen,
pick the first whose library is present. Imported first by `behavior_gym/__init__.py`.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

INSTALL_HINT = (
    "Install an offscreen OpenGL platform: on Debian/Ubuntu `apt-get install libegl1 libgl1-mesa-dri` "
    "(EGL, CPU or NVIDIA GPU) or `apt-get install libosmesa6` (OSMesa), then set MUJOCO_GL=egl or "
    "MUJOCO_GL=osmesa."
)
_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"}


def select_platform() -> str | None:
    """Set MUJOCO_GL / PYOPENGL_PLATFORM for headless rendering unless already decided."""
    if "mujoco" in sys.modules or os.environ.get("MUJOCO_GL"):
        return os.environ.get("MUJOCO_GL")
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None  # a desktop: MuJoCo's default (GLFW) works and allows on-screen viewers
    for platform, lib in _LIBRARIES.items():
        if ctypes.util.find_library(lib):
            os.environ["MUJOCO_GL"] = platform
            os.environ.setdefault("PYOPENGL_PLATFORM", platform)
            return platform
    return None


def import_mujoco():
    select_platform()
    try:
        import mujoco
    except Exception as exc:
        raise ImportError(
            f"MuJoCo could not load its OpenGL platform MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
            f"({type(exc).__name__}: {exc}). {INSTALL_HINT}"
        ) from exc
    return mujoco
