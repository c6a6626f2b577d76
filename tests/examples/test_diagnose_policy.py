"""examples/embodiment/diagnose_policy.py: open- and closed-loop failure measurements of a cloned policy."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import timm  # noqa: F401  (timm pulls in triton, whose native library crashes once an EGL context exists)
import torch

from algorithms.sft import SFTConfig, load_demos, sft_policy, train_sft

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment"))


def test_forward_kinematics_of_action_targets_matches_the_settled_arm():
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym
    import mujoco
    from diagnose_policy import _eef

    import behavior_gym  # noqa: F401
    from behavior_gym.experts import make_expert
    from behavior_gym.wrappers.shaping import moved_and_target

    env = gym.make("Behavior-R1Pro-v0", task="stacking", instance_id=1, image_size=32)
    expert = make_expert(env)
    obs, _ = env.reset(seed=1)
    expert.reset()
    for _ in range(40):  # into the carry pose and holding it
        a = expert.act(obs)
        obs, *_ = env.step(a)
    b = env.unwrapped.backend
    eef = _eef(b, mujoco.MjData(b.model), b.data.qpos.copy(), a)
    for arm in ("left", "right"):
        assert np.linalg.norm(eef[arm] - b.data.site_xpos[b.idx.eef_site[arm]]) < 0.02
    assert moved_and_target(b.task) == ("cube.n.05_1", "cube.n.05_2")
    env.close()


def test_diagnosis_of_a_tiny_cloned_policy(tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    from diagnose_policy import main

    from behavior_gym.experts.recorder import record_parallel

    record_parallel(["pick_and_place"], 1, tmp_path / "demos", workers=1, image_size=32)
    torch.manual_seed(0)
    demos = load_demos([str(tmp_path / "demos")], chunk=8, frame_stride=4)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    model = train_sft(policy, demos, SFTConfig(steps=2, batch_size=4, warmup_steps=1, random_shift=0),
                      str(tmp_path / "sft"))["model_path"]
    out = tmp_path / "diag"
    assert main([model, "--tasks", "pick_and_place", "--episodes", "2", "--open-loop", "1", "--image-size", "32",
                 "--out", str(out), "--device", "cpu"]) == 0
    d = json.loads((out / "diagnosis.json").read_text())["pick_and_place"]
    assert set(d["open_loop"]["action_abs_err"]) >= {"base", "torso", "left_arm", "right_arm"}
    assert d["open_loop"]["eef_err_cm"] > 0
    cl = d["closed_loop"]
    assert len(cl["episodes"]) == 2 and cl["success"] == 0.0  # two SFT steps do not solve the task
    assert all(0 < e["closest_eef_cm"] < 200 and e["steps"] > 0 for e in cl["episodes"])
    assert (out / "pick_and_place_0.png").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), "--out", str(out)])
