"""OpenVLA-OFT in the transformers layout: configuration, model, processor, action tokens, checkpoints."""

from .action_tokenizer import ActionNormalizer, ActionTokenDistribution, ActionTokenizer
from .configuration_openvla_oft import DEFAULT_LORA_TARGET_MODULES, PRESETS, OpenVLAOFTConfig
from .modeling_openvla_oft import OpenVLAOFTForActionPrediction, OpenVLAOFTOutput, build_model

__all__ = [
    "DEFAULT_LORA_TARGET_MODULES",
    "PRESETS",
    "ActionNormalizer",
    "ActionTokenDistribution",
    "ActionTokenizer",
    "OpenVLAOFTConfig",
    "OpenVLAOFTForActionPrediction",
    "OpenVLAOFTOutput",
    "build_model",
]
