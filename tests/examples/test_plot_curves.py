"""examples/embodiment/plot_curves.py draws the README's curves from real TensorBoard event files."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment"))


def _write_run(path, adv_type: str, per_task: bool):
    from stable_baselines3.common.logger import configure

    os.makedirs(path)
    with open(os.path.join(path, "config.yaml"), "w") as f:
        f.write(f"algorithm: {{adv_type: {adv_type}}}\nactor: {{model: {{num_action_chunks: 8}}}}\n")
    logger = configure(str(path), ["tensorboard"])
    for step in range(1, 6):
        logger.record("env/success_once", 0.1 * step)
        logger.record("rollout/returns_mean", 0.2 * step)
        if per_task:
            logger.record("env/success_once/pick_and_place", 0.05 * step)
            logger.record("env/success_once/open_drawer", 0.15 * step)
        logger.dump(step * 64)
    logger.close()


@pytest.mark.parametrize("per_task", [False, True])
def test_rl_curves_from_event_files(tmp_path, per_task):
    import plot_curves

    _write_run(tmp_path / "logs" / "20261203-000000-ppo", "gae", per_task)
    _write_run(tmp_path / "logs" / "20261203-000100-grpo", "grpo", per_task)
    runs = plot_curves.rl_runs(str(tmp_path / "logs"))
    assert set(runs) == {"PPO", "GRPO"}
    xs, ys = zip(*runs["PPO"]["env/success_once"])
    assert xs == (512, 1024, 1536, 2048, 2560)  # chunk steps x 8 = env steps
    assert ys == pytest.approx((0.1, 0.2, 0.3, 0.4, 0.5))
    assert ("env/success_once/open_drawer" in runs["GRPO"]) == per_task
    plot_curves.main(["--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "png")])
    from PIL import Image

    with Image.open(tmp_path / "png" / "learning_rl_curves.png") as im:
        width = im.size[0]
    assert width == (1815 if per_task else 1210)  # a third panel, per task, where the runs logged it
