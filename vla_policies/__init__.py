"""Vision-language-action policies for behavior-rl: OpenVLA-OFT and its Stable-Baselines3 adapter.

    from vla_policies import OpenVLAOFTPolicy, OpenVLAOFTConfig, OpenVLAOFTForActionPrediction
"""

from .openvla_oft import (
    ActionNormalizer,
    ActionTokenDistribution,
    ActionTokenizer,
    OpenVLAOFTConfig,
    OpenVLAOFTForActionPrediction,
    OpenVLAOFTOutput,
    build_model,
)
from .openvla_oft.processing_openvla_oft import OpenVLAOFTProcessor, PromptTokenizer, build_fallback_tokenizer
from .sb3_policy import OpenVLAOFTPolicy

__all__ = [
    "ActionNormalizer",
    "ActionTokenDistribution",
    "ActionTokenizer",
    "OpenVLAOFTConfig",
    "OpenVLAOFTForActionPrediction",
    "OpenVLAOFTOutput",
    "OpenVLAOFTPolicy",
    "OpenVLAOFTProcessor",
    "PromptTokenizer",
    "build_fallback_tokenizer",
    "build_model",
]
