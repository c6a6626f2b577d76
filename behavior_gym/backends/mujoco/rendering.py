"""Offscreen rendering of several cameras of one MuJoCo model, headless.

The OpenGL platform is chosen once per process: `MUJOCO_GL` if the user set it, else EGL (Mesa's
llvmpipe on a CPU, NVIDIA's driver on a GPU), else OSMesa. A platform that fails to create a
context is skipped; if none works the error says which system packages to install.

All cameras of a frame share one scene update: geometry is collected once (`mjv_updateScene`)
and only the camera is moved for the others (`mjv_updateCamera`). They are drawn side by side
into one framebuffer and read back with a single `glReadPixels`: software rasterisers (Mesa's
llvmpipe) render lazily at read-back, so one wide read lets them work on all cameras at once.
"""

from __future__ import annotations

import atexit
import os
import weakref

import mujoco
import numpy as np

from behavior_gym._gl import INSTALL_HINT as _INSTALL_HINT

_PLATFORMS = ("egl", "osmesa")
_chosen: str | None = None
_LIVE: weakref.WeakSet = weakref.WeakSet()  # renderers not yet closed


def close_all_renderers() -> None:
    """Free the GL contexts of every renderer nobody closed yet, while the GL libraries are still up."""
    for renderer in list(_LIVE):
        try:
            renderer.close()
        except Exception:
            pass


_exit_hook_registered = False


def _register_exit_hook() -> None:
    """Close leftover renderers at exit, before the platform's own exit handler terminates the EGL display.

    Left to garbage collection during interpreter shutdown, an EGL context can be freed after libEGL's
    teardown, and the process segfaults on its way out. `atexit` runs handlers last-in first-out and
    `mujoco.egl` registers its `eglTerminate` when it makes the first context, so ours is registered
    after that (once), not at import: registered first it would run last, on a terminated display.
    """
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(close_all_renderers)
        _exit_hook_registered = True


def _display_alive(platform: str) -> bool:
    """Whether GL calls on this platform's contexts are still safe (the EGL display not yet terminated)."""
    if platform == "egl":
        import mujoco.egl

        return mujoco.egl.EGL_DISPLAY is not None
    return True


def _context_class(platform: str):
    if platform == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
        from mujoco.egl import GLContext
    elif platform == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        from mujoco.osmesa import GLContext
    elif platform == "glfw":
        from mujoco.glfw import GLContext
    else:
        raise ValueError(f"MUJOCO_GL={platform!r} is not a supported platform; use egl, osmesa or glfw")
    return GLContext


def create_gl_context(width: int, height: int):
    """Create and make current an offscreen GL context; returns (context, platform name)."""
    global _chosen
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    candidates = [_chosen] if _chosen else ([requested] if requested else list(_PLATFORMS))
    errors = []
    for platform in candidates:
        try:
            ctx = _context_class(platform)(width, height)
            ctx.make_current()
        except Exception as exc:  # a missing library shows up as ImportError, OSError or a GL error
            errors.append(f"{platform}: {type(exc).__name__}: {exc}")
            continue
        _chosen = platform
        _register_exit_hook()
        return ctx, platform
    raise RuntimeError(
        "No offscreen OpenGL platform works on this machine (" + "; ".join(errors) + "). " + _INSTALL_HINT
    )


class MultiCameraRenderer:
    """Renders named cameras of `model` into preallocated uint8 buffers (channel-first)."""

    def __init__(self, model: mujoco.MjModel, cameras: tuple[str, ...], size: int):
        self.model = model
        self.size = size
        self.camera_ids = []
        for name in cameras:
            cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
            if cid < 0:
                raise ValueError(f"camera {name!r} not in the model")
            self.camera_ids.append(cid)
        width = size * len(cameras)
        if model.vis.global_.offwidth < width or model.vis.global_.offheight < size:
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        self._gl, self.platform = create_gl_context(width, size)
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scene = mujoco.MjvScene(model, maxgeom=2000)
        self._opt = mujoco.MjvOption()
        self._pert = mujoco.MjvPerturb()
        self._cams = []
        for cid in self.camera_ids:
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            cam.fixedcamid = cid
            self._cams.append(cam)
        self._viewports = [mujoco.MjrRect(i * size, 0, size, size) for i in range(len(cameras))]
        self._full = mujoco.MjrRect(0, 0, width, size)
        self._hwc = np.empty((size, width, 3), dtype=np.uint8)
        _LIVE.add(self)

    def render(self, data: mujoco.MjData, out: np.ndarray) -> np.ndarray:
        """Render every camera into `out` of shape [n_cameras, 3, size, size] (uint8)."""
        self._gl.make_current()
        m, scn = self.model, self._scene
        for i, cam in enumerate(self._cams):
            if i == 0:
                mujoco.mjv_updateScene(m, data, self._opt, self._pert, cam, mujoco.mjtCatBit.mjCAT_ALL, scn)
            else:
                mujoco.mjv_updateCamera(m, data, cam, scn)
            mujoco.mjr_render(self._viewports[i], scn, self._con)
        mujoco.mjr_readPixels(self._hwc, None, self._full, self._con)
        s = self.size
        for i in range(len(self._cams)):
            # OpenGL rows run bottom-up; flip and make channel-first in one copy.
            np.copyto(out[i], self._hwc[::-1, i * s:(i + 1) * s].transpose(2, 0, 1))
        return out

    def close(self) -> None:
        """Free the GL objects (in this renderer's own context: another one may be current) and the context."""
        if self._gl is not None:
            gl, self._gl = self._gl, None
            try:
                if _display_alive(self.platform):
                    gl.make_current()
                    self._con.free()
            finally:
                gl.free()
        _LIVE.discard(self)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
