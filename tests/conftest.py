import os

# Headless rendering everywhere in the tests (EGL: Mesa on CPUs, NVIDIA on GPUs).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
