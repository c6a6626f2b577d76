import faulthandler
import os

# A crash in native code prints the Python stacks, also at interpreter exit: pytest re-enables the
# handler after its session when it was on before it started.
faulthandler.enable()

# Headless rendering everywhere in the tests (EGL: Mesa on CPUs, NVIDIA on GPUs).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

# torch, timm and torchvision before any test makes an EGL context: loading them (triton's native
# module) once Mesa's EGL is up segfaults, e.g. in `pytest tests/experts` alone, where the first
# import of torch came from benchmarks/bc_clonability.py after the expert tests had rendered.
try:
    import timm  # noqa: F401  (imports torch and torchvision)
except ImportError:  # the env-only install: no torch
    pass


def pytest_sessionfinish(session, exitstatus):
    """Free the GL contexts of renderers still open while every library is loaded (not at exit)."""
    try:
        from behavior_gym.backends.mujoco.rendering import close_all_renderers
    except ImportError:
        return
    close_all_renderers()
