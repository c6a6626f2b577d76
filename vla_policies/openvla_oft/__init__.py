"""OpenVLA-OFT in the transformers layout: configuration, model, processor, action tokens, checkpoints."""

from .action_tokenizer import ActionNormalizer, ActionTokenDistribution, ActionTokenizer
from .checkpoint import load_model, save_model
from .configuration_openvla_oft import DEFAULT_LORA_TARGET_MODULES, PRESETS, OpenVLAOFTConfig
from .modeling_openvla_oft import OpenVLAOFTForActionPrediction, OpenVLAOFTOutput, build_model
from .processing_openvla_oft import OpenVLAOFTProcessor, PromptTokenizer, build_fallback_tokenizer

__all__ = [
    "DEFAULT_LORA_TARGET_MODULES",
    "PRESETS",
    "ActionNormalizer",
    "ActionTokenDistribution",
    "ActionTokenizer",
    "OpenVLAOFTConfig",
    "OpenVLAOFTForActionPrediction",
    "OpenVLAOFTOutput",
    "OpenVLAOFTProcessor",
    "PromptTokenizer",
    "build_fallback_tokenizer",
    "build_model",
    "load_model",
    "save_model",
]
