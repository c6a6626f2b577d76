"""Fixtures for the vla_policies tests: the tiny preset, its model and processor."""

from __future__ import annotations

import pytest
import torch

from vla_policies import OpenVLAOFTConfig, OpenVLAOFTProcessor, build_model

torch.set_num_threads(1)  # two cores shared with other work


@pytest.fixture
def tiny_config() -> OpenVLAOFTConfig:
    return OpenVLAOFTConfig.from_preset("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config).eval()


@pytest.fixture
def processor(tiny_config) -> OpenVLAOFTProcessor:
    return OpenVLAOFTProcessor.from_config(tiny_config)
