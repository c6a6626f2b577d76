"""examples/embodiment/evaluate.py: its fast-inference keys fail before the model loads, naming the key."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment"))


@pytest.mark.parametrize("settings,key,match", [
    ({"fp8": True}, "fp8", "the policy runs on the CPU"),
    ({"fp8": True, "fast_inference": False}, "fp8", "fast_inference=false turns off"),
    ({"fp8_vision": True}, "fp8_vision", "needs fp8=true"),
])
def test_fast_inference_problems_exit_with_the_key(capsys, settings, key, match):
    from evaluate import EvalConfig, check_fast_inference

    with pytest.raises(SystemExit) as e:
        check_fast_inference(EvalConfig(model_path="m", **settings), "cpu")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"evaluate: config key {key}: " in err and match in err


def test_fp8_on_a_gpu_without_fp8_gemms(capsys, monkeypatch):
    import torch
    from evaluate import EvalConfig, check_fast_inference

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(SystemExit):
        check_fast_inference(EvalConfig(model_path="m", fp8=True), "cuda")
    assert "A100 has compute capability 8.0" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_fast_inference(EvalConfig(model_path="m", fp8=True), "cuda")  # fine on an H100
    check_fast_inference(EvalConfig(model_path="m"), "cpu")  # the defaults are fine anywhere


def test_the_config_file_has_the_keys():
    from evaluate import EvalConfig
    from omegaconf import OmegaConf

    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment", "config",
                        "evaluate_embedded.yaml")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    assert raw["fast_inference"] is None and raw["fp8"] is False and raw["fp8_vision"] is False
    assert {"fast_inference", "fp8", "fp8_vision"} <= set(EvalConfig.__dataclass_fields__)


def test_modes_name_their_temperature_and_top_k():
    from evaluate import mode_sampling

    assert mode_sampling("greedy", 1.0) is None
    assert mode_sampling("sampled", 0.8) == (0.8, 0)
    assert mode_sampling("sampled", 0.8, 5) == (0.8, 5)
    assert mode_sampling("sampled:0.5", 1.0, 5) == (0.5, 0)  # a mode's own T samples every token
    assert mode_sampling("sampled:1:3", 0.5) == (1.0, 3)
    for bad in ("sampled:0", "sampled:x", "sampled:-1", "greedy:0.5", "beam", "sampled:1:0", "sampled:1:x",
                "sampled:1:2:3", "sampled:"):
        with pytest.raises(ValueError, match="sampled:T"):
            mode_sampling(bad, 1.0)
