import faulthandler
import os
import sys

import pytest

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


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    """Free the GL contexts of renderers still open while every library is loaded (not at exit)."""
    _EXIT_STATUS.append(int(exitstatus))
    try:
        from behavior_gym.backends.mujoco.rendering import close_all_renderers
    except ImportError:
        return
    close_all_renderers()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process with the tests' own status, skipping the interpreter's teardown.

    The CI machine once exited 139 after "497 passed": a native library segfaulted while the interpreter
    tore itself down. A likely cause is mended (renderers left open were freed after mujoco.egl had
    terminated the EGL display; tests/env/test_contract.py checks the order and a clean exit of a user
    process with envs left open). Others cannot be ruled out from here (the suite starts and stops Ray
    several times, which Ray documents as unsafe for its core worker's threads), and this process's exit
    code must be the tests' result. `BEHAVIOR_RL_TEST_NATIVE_EXIT=1` keeps the normal exit (with
    faulthandler on, a crash there prints its stacks).
    """
    if _EXIT_STATUS and os.environ.get("BEHAVIOR_RL_TEST_NATIVE_EXIT") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
