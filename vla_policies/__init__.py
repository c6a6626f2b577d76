"""Vision-language-action policies for behavior-rl: OpenVLA-OFT and its Stable-Baselines3 adapter.

    from vla_policies import OpenVLAOFTPolicy, OpenVLAOFTConfig, OpenVLAOFTForActionPrediction

The model needs only torch, transformers, timm, peft, safetensors and tokenizers; `OpenVLAOFTPolicy`
also needs Stable-Baselines3 and behavior_gym, and is imported on first use.
"""

from typing import Any

from .openvla_oft import (
    ActionNormalizer,
    ActionTokenDistribution,
    ActionTokenizer,
    OpenVLAOFTConfig,
    OpenVLAOFTForActionPrediction,
    OpenVLAOFTOutput,
    OpenVLAOFTProcessor,
    PromptTokenizer,
    build_fallback_tokenizer,
    build_model,
)


def __getattr__(name: str) -> Any:
    if name == "OpenVLAOFTPolicy":
        from .sb3_policy import OpenVLAOFTPolicy

        return OpenVLAOFTPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
