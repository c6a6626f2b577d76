"""Configuration of OpenVLA-OFT: the released OpenVLA `config.json` fields plus the OFT/RL settings.

A released checkpoint's `config.json` (`model_type: openvla`, written by transformers 4.40 from
`OpenVLAConfig`) loads as it is: its fields map one to one, unknown fields are kept and written back.
The OFT fields (action dimension, chunk length, number of images, proprio, value head) are not in
released configs; their defaults are the Behavior setting (23-D actions, chunks of 8, 3 images,
no proprio, a chunk-level value head) and can be overridden at load time.

This is a plain dataclass rather than a `transformers.PretrainedConfig`: the latter changed its
construction model between transformers 4 and 5, and nothing here needs its machinery. The
language model's settings stay a dict (`text_config`) and become a `LlamaConfig` on demand.

Presets: `OpenVLAOFTConfig.from_preset("tiny" | "small" | "small-p28" | "7.5b", **overrides)`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from transformers import LlamaConfig

CONFIG_NAME = "config.json"
MODEL_TYPE = "openvla"

# timm ids of the fused "dinosiglip-vit-so-224px" backbone; ORDER MATTERS: 0 = DINOv2 = `featurizer`,
# 1 = SigLIP = `fused_featurizer` (reference §1.2).
DINOSIGLIP_TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]

# Keys of a serialised LlamaConfig that describe how it was saved, not the network.
_TEXT_CONFIG_BOOKKEEPING = ("torch_dtype", "dtype", "_name_or_path", "transformers_version", "architectures",
                            "model_type")

# Default LoRA targets: RLinf's list (reference §4.4): every linear layer of the ViTs, projector and Llama.
DEFAULT_LORA_TARGET_MODULES = [
    "proj", "qkv", "fc1", "fc2", "q", "kv", "fc3", "out_proj",
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
]


def _llama2_7b_text_config() -> dict[str, Any]:
    # As in released OpenVLA checkpoints: transformers' default LlamaConfig (hence rms_norm_eps 1e-6,
    # max_position_embeddings 2048) with the vocabulary grown by the <PAD> region to 32064 (reference §1.5).
    return dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
                rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu", pad_token_id=32000,
                bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=0.02)


_TEXT_CONFIG_CORE = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings", "rms_norm_eps")


def _complete_text_config(text_config: dict[str, Any]) -> dict[str, Any]:
    # A saved text_config may hold only the values that differ from LlamaConfig's defaults; fill the
    # shape-defining ones from those defaults (what transformers would do), so they can be read here.
    out = dict(text_config)
    if all(out.get(k) is not None for k in _TEXT_CONFIG_CORE):
        return out
    defaults = LlamaConfig()
    for k in _TEXT_CONFIG_CORE:
        if out.get(k) is None:
            out[k] = getattr(defaults, k)
    if text_config.get("num_key_value_heads") is None:  # Llama: no grouped-query attention by default
        out["num_key_value_heads"] = out["num_attention_heads"]
    return out


@dataclass
class OpenVLAOFTConfig:
    """Settings of an OpenVLA-OFT model.

    Released OpenVLA fields (reference §3.1):
        vision_backbone_id, llm_backbone_id, arch_specifier, hf_llm_id, llm_max_length: identity of the
            Prismatic VLM; `arch_specifier` containing "fused" selects the 3-layer projector.
        use_fused_vision_backbone: DINOv2 + SigLIP (True) or a single ViT.
        timm_model_ids: timm model names of the vision towers (DINOv2 first).
        timm_override_act_layers: per-tower activation override (None keeps timm's).
        image_sizes: input resolution per tower.
        image_resize_strategy: "resize-naive" (squash to the input size).
        pad_token_id, pad_to_multiple_of: the <PAD> token and the padding region of the vocabulary;
            action tokens are the `n_action_bins` ids just below `text_config.vocab_size - pad_to_multiple_of`.
        text_config: the Llama language model's settings (a LlamaConfig dict).
        norm_stats: `{dataset: {"action": {q01, q99, min, max, mask, ...}, "proprio": {...}}}`.
        n_action_bins: number of action tokens (256).
        architectures: class names recorded for transformers' remote code (kept as released).

    OFT / RL fields (this project; defaults = the Behavior setting):
        timm_model_kwargs: per-tower overrides passed to `timm.create_model` (embed_dim, depth,
            num_heads, mlp_ratio, ...) for smaller models of the same structure; None = timm's sizes.
        vision_feature_layer: which block's output is used (-2: the second-to-last, as OpenVLA).
        num_images_in_input: images per observation (Behavior: head, left wrist, right wrist).
        action_dim: action dimensions per step (Behavior R1 Pro: 23).
        num_action_chunks: steps per chunk decoded in one forward pass (8).
        use_proprio, proprio_dim: project proprioception into one extra token after the images.
        add_value_head, value_head_hidden_sizes: the chunk-level critic on the last prompt token.
        append_stop_token: keep the STOP token after the action placeholders (original OFT inference);
            RLinf's RL models drop it (False).
        action_normalization: "bounds_q99" (q01/q99) or "bounds" (min/max).
        attn_implementation: "sdpa" or "eager" (both run the bidirectional mask; flash-attention cannot).
        causal_attention: use a causal mask instead of OFT's bidirectional attention. OFT's
            parallel decoding is bidirectional (its transformers fork patches SDPA only); RLinf's
            configs ask for flash_attention_2, which that fork leaves causal, so a checkpoint trained
            that way may need True.
        torch_dtype: dtype the weights are stored in.
        extra: fields of a loaded config.json that this class does not know; written back unchanged.
    """

    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "no-align+fused-gelu-mlp"
    use_fused_vision_backbone: bool = True
    timm_model_ids: list[str] = field(default_factory=lambda: list(DINOSIGLIP_TIMM_IDS))
    timm_override_act_layers: list[str | None] = field(default_factory=lambda: [None, None])
    image_sizes: list[int] = field(default_factory=lambda: [224, 224])
    image_resize_strategy: str = "resize-naive"
    hf_llm_id: str = "meta-llama/Llama-2-7b-hf"
    llm_max_length: int = 2048
    pad_token_id: int = 32000
    pad_to_multiple_of: int = 64
    output_projector_states: bool = False
    text_config: dict[str, Any] = field(default_factory=_llama2_7b_text_config)
    norm_stats: dict[str, Any] | None = None
    n_action_bins: int = 256
    architectures: list[str] = field(default_factory=lambda: ["OpenVLAForActionPrediction"])

    timm_model_kwargs: list[dict[str, Any]] | None = None
    vision_feature_layer: int = -2
    num_images_in_input: int = 3
    action_dim: int = 23
    num_action_chunks: int = 8
    use_proprio: bool = False
    proprio_dim: int = 61
    add_value_head: bool = True
    value_head_hidden_sizes: list[int] = field(default_factory=lambda: [512, 128])
    append_stop_token: bool = False
    action_normalization: str = "bounds_q99"
    attn_implementation: str = "sdpa"
    causal_attention: bool = False
    torch_dtype: str = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived values
    @property
    def num_vision_towers(self) -> int:
        return 2 if self.use_fused_vision_backbone else 1

    @property
    def vocab_end(self) -> int:
        """First id after the action tokens (32000 for Llama-2): the vocabulary without its padding region."""
        return int(self.text_config.get("vocab_size", 32000)) - self.pad_to_multiple_of

    @property
    def action_token_begin(self) -> int:
        return self.vocab_end - self.n_action_bins

    @property
    def num_action_tokens(self) -> int:
        """Action tokens decoded per forward pass: action_dim x num_action_chunks (23 x 8 = 184)."""
        return self.action_dim * self.num_action_chunks

    @property
    def hidden_size(self) -> int:
        return int(self.text_config["hidden_size"])

    @property
    def is_fused_projector(self) -> bool:
        return "fused" in self.arch_specifier

    def llm_config(self) -> LlamaConfig:
        """The language model's `LlamaConfig` (missing fields take transformers' defaults)."""
        kwargs = {k: v for k, v in self.text_config.items() if k not in _TEXT_CONFIG_BOOKKEEPING}
        cfg = LlamaConfig(**kwargs)
        cfg._attn_implementation = self.attn_implementation
        return cfg

    def validate(self) -> None:
        """Raise ValueError for settings that cannot build a model."""
        n = self.num_vision_towers
        for name in ("timm_model_ids", "timm_override_act_layers", "image_sizes"):
            if len(getattr(self, name)) < n:
                raise ValueError(f"{name} needs {n} entries (one per vision tower), got {getattr(self, name)!r}")
        if self.timm_model_kwargs is not None and len(self.timm_model_kwargs) < n:
            raise ValueError(f"timm_model_kwargs needs {n} entries (one per vision tower), "
                             f"got {self.timm_model_kwargs!r}")
        for name in ("num_images_in_input", "action_dim", "num_action_chunks", "n_action_bins"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vision_feature_layer >= 0:
            raise ValueError(f"vision_feature_layer counts from the end (-1 = last block, -2 = second-to-last), "
                             f"got {self.vision_feature_layer}")
        if "hidden_size" not in self.text_config:
            raise ValueError("text_config must give the language model's hidden_size")
        if self.vocab_end < self.n_action_bins:
            raise ValueError(f"text_config.vocab_size ({self.text_config.get('vocab_size')}) minus pad_to_multiple_of "
                             f"({self.pad_to_multiple_of}) leaves {self.vocab_end} ids, fewer than the "
                             f"{self.n_action_bins} action tokens")
        if self.action_normalization not in ("bounds_q99", "bounds"):
            raise ValueError(f"action_normalization must be 'bounds_q99' or 'bounds', "
                             f"got {self.action_normalization!r}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager' (OFT's bidirectional attention needs "
                             f"an explicit mask), got {self.attn_implementation!r}")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> OpenVLAOFTConfig:
        """Build from a config.json dict; unknown keys go to `extra`, `overrides` win (text_config merges)."""
        data = copy.deepcopy(dict(data))
        model_type = data.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"config.json has model_type {model_type!r}; this loader reads OpenVLA / OpenVLA-OFT "
                             f"checkpoints (model_type {MODEL_TYPE!r})")
        for key, value in overrides.items():
            if key == "text_config" and isinstance(value, dict):
                data["text_config"] = {**data.get("text_config", {}), **value}
            else:
                data[key] = value
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        extra = {**data.get("extra", {}), **{k: v for k, v in data.items() if k not in names}}
        if "text_config" in known:
            known["text_config"] = _complete_text_config(known["text_config"])
        if "value_head_hidden_sizes" in known:
            known["value_head_hidden_sizes"] = list(known["value_head_hidden_sizes"])
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The config.json content: released fields, OFT fields, then preserved unknown fields."""
        out: dict[str, Any] = {"model_type": MODEL_TYPE}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = copy.deepcopy(getattr(self, f.name))
        for key, value in self.extra.items():
            out.setdefault(key, copy.deepcopy(value))
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> OpenVLAOFTConfig:
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> OpenVLAOFTConfig:
        """Read `config.json` from a checkpoint directory."""
        file = os.path.join(os.fspath(path), CONFIG_NAME)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no {CONFIG_NAME} in {os.fspath(path)!r}; an OpenVLA checkpoint directory holds "
                                    "config.json, model*.safetensors and the tokenizer files")
        return cls.from_json_file(file, **overrides)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(os.fspath(path), CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def replace(self, **overrides: Any) -> OpenVLAOFTConfig:
        """A copy with some fields changed (text_config merges)."""
        return type(self).from_dict(self.to_dict(), **overrides)

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> OpenVLAOFTConfig:
        """A named configuration: "tiny" (tests), "small" (~75M, one GPU), "small-p28" (small with
        28-px patches: 64 tokens per image), "7.5b" (OpenVLA-OFT 7B)."""
        key = name.lower()
        if key not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict(PRESETS[key](), **overrides)


def _small_vision(dino: dict[str, Any], siglip: dict[str, Any]) -> dict[str, Any]:
    # Same towers as the 7.5B model (DINOv2 with 4 registers and LayerScale; SigLIP with no class token
    # and an attention-pool head), re-sized through timm's constructor arguments.
    return {"timm_model_ids": list(DINOSIGLIP_TIMM_IDS), "timm_model_kwargs": [dino, siglip]}


def _preset_tiny() -> dict[str, Any]:
    # About a million parameters: builds in well under a second, for tests on a CPU.
    return {
        **_small_vision({"embed_dim": 64, "depth": 2, "num_heads": 2},
                        {"embed_dim": 64, "depth": 2, "num_heads": 2}),
        "text_config": dict(vocab_size=704, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                            rms_norm_eps=1e-6, rope_theta=10000.0, pad_token_id=640, bos_token_id=1,
                            eos_token_id=2, tie_word_embeddings=False),
        "pad_token_id": 640,
        "value_head_hidden_sizes": [32, 16],
        "hf_llm_id": "",
        "llm_backbone_id": "llama-tiny",
        "torch_dtype": "float32",
    }


def _preset_small() -> dict[str, Any]:
    # ~75M parameters: two 12-block 384-wide ViTs and an 8-layer 512-wide Llama; learns on one GPU.
    return {
        **_small_vision({"embed_dim": 384, "depth": 12, "num_heads": 6},
                        {"embed_dim": 384, "depth": 12, "num_heads": 6}),
        "text_config": dict(vocab_size=704, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                            num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                            rms_norm_eps=1e-6, rope_theta=10000.0, pad_token_id=640, bos_token_id=1,
                            eos_token_id=2, tie_word_embeddings=False),
        "pad_token_id": 640,
        "value_head_hidden_sizes": [256, 64],
        "hf_llm_id": "",
        "llm_backbone_id": "llama-small",
        "torch_dtype": "bfloat16",
    }


def _preset_small_p28() -> dict[str, Any]:
    # "small" with 28-pixel patches: 8 x 8 = 64 tokens per 224-px image instead of 256, so the Llama
    # sequence is ~400 tokens instead of ~980. Same towers, projector, Llama and OFT decoding; a
    # training step costs ~3.7x less (CPU, batch 2), which is what lets behaviour cloning converge
    # within a GPU session (the learning runs use it). Not for released checkpoints (patch 14).
    config = _preset_small()
    for kwargs in config["timm_model_kwargs"]:
        kwargs["patch_size"] = 28
    return config


def _preset_7_5b() -> dict[str, Any]:
    # OpenVLA-7B (prism-dinosiglip-224px+7b) with OFT parallel decoding in the Behavior setting.
    return {}


PRESETS = {"tiny": _preset_tiny, "small": _preset_small, "small-p28": _preset_small_p28, "7.5b": _preset_7_5b}
