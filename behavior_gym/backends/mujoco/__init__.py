"""The embedded MuJoCo backend: the R1 Pro model, offscreen multi-camera rendering, physics loop."""
