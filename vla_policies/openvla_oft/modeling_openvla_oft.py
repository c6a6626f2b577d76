"""OpenVLA-OFT: a fused DINOv2 + SigLIP vision backbone, an MLP projector and a Llama language model
that decodes a whole chunk of discrete action tokens in one forward pass.

Sequence layout (reference §1.6, §2.1, §4.1), for each observation:

    [BOS] [256 patches x n_images] [proprio]? [pad ...] [prompt tokens] [A*K zero placeholders] [STOP]?

Prompts are left-padded *after* BOS so that the action positions sit at the same offsets in every
row; positions count only real tokens (`cumsum(mask) - 1`), so padding changes no result. Attention
is bidirectional over the whole sequence (OFT's patched SDPA: the causal mask becomes a key-padding
mask); a batch without padding gets no mask at all, so SDPA runs its flash kernel. The placeholders'
input embeddings are zero: they carry only their position. The hidden states of the last prompt
token and the first A*K-1 placeholders give, through the LM head restricted to the 256 action token
ids, the logits of the A*K action tokens (in float32); the value head reads the last prompt token's
final hidden state. (`config.causal_attention` switches to a causal mask for checkpoints trained
that way.)

The vision towers and the Llama layers are run by this module's own loops (`run_vit_block`,
`run_llama_layer`), which call timm's blocks and transformers' layer submodules: the last Llama
layer computes only the positions that are read out, no mask is built per call, and each layer is
one region for `torch.compile` (`enable_fast_inference`, see `fast_inference.py`).

Numerics: in float32, a sample's logits and log-probs do not depend on the batch it is in or on
the padding of its prompt (tests check 1e-5). In bfloat16 they do, slightly: GEMM and attention
kernels are chosen by shape, so the same row is rounded differently at another batch size or
sequence length, and 32 bfloat16 layers carry that on. Summed over a 184-token chunk, log-probs of
the same sample moved by up to ~0.2 between batch sizes on the random-weight 7.5B model (H100) and
by up to ~0.1 on the small preset (CPU, batch 4 vs 1). The logits are computed in float32 from the
final hidden states, which removes their own bfloat16 rounding (steps of 1/16 near |logit| = 10),
but not the layers' part. For PPO ratios: compute the old log-probs with the same batch composition
as the update (or accept this noise in the ratio, ~1e-3 per token), or run in float32.

Weights use the released key names (`vision_backbone.featurizer.*`, `vision_backbone.fused_featurizer.*`,
`projector.*`, `language_model.*`, LayerScale `scale_factor`), so checkpoints load without renaming.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerScale as TimmLayerScale
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import LlamaForCausalLM

from .action_tokenizer import ActionNormalizer, ActionTokenDistribution, ActionTokenizer
from .configuration_openvla_oft import DEFAULT_LORA_TARGET_MODULES, OpenVLAOFTConfig
from .fp8 import fp8_linear

# ---------------------------------------------------------------------------------------------------------- layers

BlockFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
# (weight [out, in], bias [out] or None), or with FP8 (fp8 weight, bias, float32 scales [1, out]): see fp8.py
FusedLinear = tuple[torch.Tensor, ...]


def run_vit_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One timm ViT block (a function of the block, so that one compiled region serves every block)."""
    return block(x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def run_llama_layer(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    attn_mask: torch.Tensor | None,
    rows: tuple[int, int] | None,
    heads: tuple[int, int, int],
    eager_attention: bool = False,
    qkv: FusedLinear | None = None,
    gate_up: FusedLinear | None = None,
) -> torch.Tensor:
    """One transformers `LlamaDecoderLayer` with OFT's attention, calling its submodules.

    Args:
        layer: the decoder layer (its norms, `self_attn.{q,k,v,o}_proj` and `mlp` are called, so LoRA
            wrappers apply).
        hidden: [B, L, H] input hidden states.
        cos, sin: [B, L, head_dim] rotary tables (the model's `rotary_emb` at the position ids).
        attn_mask: None (every query sees every key: the fast SDPA kernels apply) or a bool mask,
            True = attend, broadcastable to [B, heads, Lq, L].
        rows: (start, count): compute only these query positions (all keys still take part); the
            output is then [B, count, H]. None: all positions.
        heads: (query heads, key/value heads, head dim).
        eager_attention: softmax(QK^T)V written out (transformers' "eager") instead of SDPA.
        qkv, gate_up: (weight, bias) of q/k/v and of gate/up concatenated along the output dimension
            (fast inference, see `fast_inference.FusedProjections`): one GEMM instead of three / two,
            the same products; or (float8 weight, bias, scales) triples (`fp8.FP8Layers`). None: call
            the layer's own projections.

    Same arithmetic as transformers' layer with a 4-D mask, without its mask building and per-call
    bookkeeping, which also makes the layer one clean region for `torch.compile`.
    """
    n_heads, n_kv, head_dim = heads
    attn = layer.self_attn
    b, n, _ = hidden.shape
    x = layer.input_layernorm(hidden)
    if rows is not None:
        start, count = rows
        residual, xq = hidden[:, start:start + count], x[:, start:start + count]
        cos_q, sin_q = cos[:, start:start + count], sin[:, start:start + count]
    else:
        residual, xq, cos_q, sin_q = hidden, x, cos, sin
    if qkv is None:
        q, k, v = attn.q_proj(xq), attn.k_proj(x), attn.v_proj(x)
    else:
        q, k, v = _fused_qkv(qkv, x, xq if rows is not None else None, n_heads * head_dim)
    q = q.view(b, xq.shape[1], n_heads, head_dim).transpose(1, 2)
    k = k.view(b, n, n_kv, head_dim).transpose(1, 2)
    v = v.view(b, n, n_kv, head_dim).transpose(1, 2)
    cos_q, sin_q, cos, sin = cos_q[:, None], sin_q[:, None], cos[:, None], sin[:, None]
    q = q * cos_q + _rotate_half(q) * sin_q
    k = k * cos + _rotate_half(k) * sin
    if n_kv != n_heads:
        k = k.repeat_interleave(n_heads // n_kv, dim=1)
        v = v.repeat_interleave(n_heads // n_kv, dim=1)
    scale = head_dim ** -0.5
    if eager_attention:
        scores = torch.matmul(q, k.transpose(2, 3)) * scale
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    out = out.transpose(1, 2).reshape(b, xq.shape[1], n_heads * head_dim)
    hidden = residual + attn.o_proj(out)
    if gate_up is None:
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    gate, up = _linear(layer.post_attention_layernorm(hidden), gate_up).chunk(2, dim=-1)
    return hidden + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)


def _fused_qkv(qkv: FusedLinear, x: torch.Tensor, xq: torch.Tensor | None, q_width: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # q, k, v from the concatenated weight: one GEMM over all rows, or (xq given: the last layer,
    # queries on fewer rows) q on xq and k, v in one GEMM on x. Splits are views, no copies.
    if xq is None:
        return _split_qkv(_linear(x, qkv), q_width)
    k, v = _linear(x, _output_rows(qkv, q_width, None)).chunk(2, dim=-1)
    return _linear(xq, _output_rows(qkv, 0, q_width)), k, v


def _linear(x: torch.Tensor, proj: FusedLinear) -> torch.Tensor:
    if len(proj) == 3:  # FP8: (weight, bias, scale)
        return fp8_linear(x, proj[0], proj[2], proj[1])
    return F.linear(x, *proj)


def _output_rows(proj: FusedLinear, start: int, end: int | None) -> FusedLinear:
    # the output channels [start:end] of a fused projection (views); FP8 scales are [1, out]
    weight, bias, *scale = proj
    return (weight[start:end], None if bias is None else bias[start:end], *(s[:, start:end] for s in scale))


def _split_qkv(out: torch.Tensor, q_width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kv_width = (out.shape[-1] - q_width) // 2
    return out.split([q_width, kv_width, kv_width], dim=-1)


# ---------------------------------------------------------------------------------------------------------- vision


class LayerScale(nn.Module):
    """timm's LayerScale with its parameter named `scale_factor`.

    transformers (4.x) renames parameters called `gamma` when loading, so the released checkpoints
    store DINOv2's LayerScale as `...ls1.scale_factor` / `...ls2.scale_factor` (reference §1.2).
    """

    def __init__(self, scale_factor: torch.Tensor, inplace: bool = False):
        super().__init__()
        self.scale_factor = nn.Parameter(scale_factor.detach().clone())
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(self.scale_factor) if self.inplace else x * self.scale_factor


def _rename_layer_scales(vit: nn.Module) -> None:
    for name, module in list(vit.named_modules()):
        if isinstance(module, TimmLayerScale):
            parent_name, _, child = name.rpartition(".")
            parent = vit.get_submodule(parent_name) if parent_name else vit
            setattr(parent, child, LayerScale(module.gamma, inplace=getattr(module, "inplace", False)))


def create_vit(model_id: str, image_size: int, act_layer: str | None = None,
               overrides: dict[str, Any] | None = None) -> nn.Module:
    """A randomly initialised timm ViT as OpenVLA builds it (no classifier; nothing is downloaded)."""
    kwargs: dict[str, Any] = dict(overrides or {})
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    try:
        vit = timm.create_model(model_id, pretrained=False, num_classes=0, img_size=image_size, **kwargs)
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise ValueError(f"timm cannot build vision tower {model_id!r} (timm {timm.__version__}): {e}") from e
    _rename_layer_scales(vit)
    for module in vit.modules():  # timm falls back to explicit softmax attention if TIMM_FUSED_ATTN=0
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    return vit


class OpenVLAVisionBackbone(nn.Module):
    """DINOv2 (`featurizer`) and SigLIP (`fused_featurizer`) features of every image, concatenated.

    Input: `pixel_values` [B, n_images * 3 * n_towers, H, W], each image's channels stacked as
    (DINOv2-normalised RGB, SigLIP-normalised RGB), images one after another (OFT's layout).
    Output: [B, n_images * n_patches, sum of tower widths] from the block `vision_feature_layer`
    (second-to-last), without the final norm and without class/register tokens.
    """

    def __init__(self, config: OpenVLAOFTConfig):
        super().__init__()
        overrides = config.timm_model_kwargs or [None] * config.num_vision_towers
        towers = [create_vit(config.timm_model_ids[i], int(config.image_sizes[i]),
                             config.timm_override_act_layers[i], overrides[i])
                  for i in range(config.num_vision_towers)]
        self.featurizer = towers[0]
        self.fused_featurizer = towers[1] if len(towers) > 1 else None
        self.feature_layer = config.vision_feature_layer
        patches = {t.patch_embed.num_patches for t in towers}
        if len(patches) != 1:
            raise ValueError(f"the vision towers give different numbers of patches per image {sorted(patches)}; "
                             "choose image_sizes and patch sizes that agree")
        self.num_patches = patches.pop()
        self.embed_dim = sum(t.embed_dim for t in towers)

    @property
    def towers(self) -> list[nn.Module]:
        return [self.featurizer] + ([self.fused_featurizer] if self.fused_featurizer is not None else [])

    def _features(self, vit: nn.Module, x: torch.Tensor, block_fn: BlockFn) -> torch.Tensor:
        # timm's `forward_intermediates(indices=[index], stop_early=True, norm=False)`, written out so
        # that each block can go through `block_fn` (a compiled region in fast inference) and the
        # blocks after the chosen one are never run.
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        checkpointing = getattr(vit, "grad_checkpointing", False) and torch.is_grad_enabled()
        for blk in vit.blocks[: len(vit.blocks) + self.feature_layer + 1]:
            x = checkpoint(block_fn, blk, x, use_reentrant=False) if checkpointing else block_fn(blk, x)
        return x[:, vit.num_prefix_tokens:]

    def forward(self, pixel_values: torch.Tensor, block_fn: BlockFn | None = None) -> torch.Tensor:
        towers = self.towers
        b, c, h, w = pixel_values.shape
        per_image = 3 * len(towers)
        if c % per_image:
            raise ValueError(f"pixel_values has {c} channels, not a multiple of {per_image} "
                             f"(3 per vision tower per image)")
        n_images = c // per_image
        # all images of all observations go through each tower as one batch
        x = pixel_values.reshape(b * n_images, len(towers), 3, h, w)
        block_fn = block_fn or run_vit_block
        feats = torch.cat([self._features(vit, x[:, i], block_fn) for i, vit in enumerate(towers)], dim=-1)
        return feats.reshape(b, n_images * feats.shape[1], feats.shape[2])


# ---------------------------------------------------------------------------------------------------------- heads


class OpenVLAProjector(nn.Module):
    """Vision features -> language-model embeddings.

    Fused (`no-align+fused-gelu-mlp`): fc1 (D -> 4D), GELU, fc2 (4D -> H), GELU, fc3 (H -> H);
    otherwise fc1 (D -> H), GELU, fc2 (H -> H). Keys `projector.fc1/fc2/fc3`.
    """

    def __init__(self, vision_dim: int, llm_dim: int, fused: bool = True):
        super().__init__()
        self.fused = fused
        if fused:
            initial = 4 * vision_dim
            self.fc1 = nn.Linear(vision_dim, initial)
            self.fc2 = nn.Linear(initial, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
            self.act_fn1, self.act_fn2 = nn.GELU(), nn.GELU()
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.act_fn1 = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act_fn1(self.fc1(features)))
        if self.fused:
            x = self.fc3(self.act_fn2(x))
        return x


class ProprioProjector(nn.Module):
    """Normalised proprioception -> one language-model token: fc1 (P -> H), GELU, fc2 (H -> H) (OFT)."""

    def __init__(self, proprio_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class ValueHead(nn.Module):
    """Chunk-level critic (RLinf): Linear(H, 512), GELU, Linear(512, 128), GELU, Linear(128, 1, no bias).

    Keys `value_head.mlp.{0,2,4}`. Initialised N(0, 0.02) with zero biases, as RLinf's heads end up
    when a checkpoint has none.
    """

    def __init__(self, hidden_size: int, hidden_sizes: Iterable[int] = (512, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        width = hidden_size
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.GELU()]
            width = size
        layers.append(nn.Linear(width, 1, bias=False))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlp(hidden).squeeze(-1)


# ---------------------------------------------------------------------------------------------------------- model


@dataclass
class OpenVLAOFTOutput:
    """Outputs of one parallel-decoding forward pass.

    Attributes:
        action_logits: [B, A*K, n_bins] logits of the action tokens, index j = token `action_token_begin + j`;
            position k*A + d is dimension d of step k of the chunk.
        values: [B] chunk-level value estimates, or None without a value head.
        last_hidden_state: [B, L, H] final hidden states (only with `output_hidden_states=True`).
    """

    action_logits: torch.Tensor
    values: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class OpenVLAOFTForActionPrediction(nn.Module):
    """OpenVLA with OFT parallel decoding of discrete action tokens and a value head.

    Args:
        config: an `OpenVLAOFTConfig` (see `OpenVLAOFTConfig.from_preset`).

    Main entry points: `forward` (logits and values for a batch), `action_distribution`,
    `predict_action` (de-normalised actions), `from_pretrained` / `save_pretrained` (released
    checkpoint layout), `add_lora` / `merge_lora` / `unmerge_lora`.
    """

    def __init__(self, config: OpenVLAOFTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.vision_backbone = OpenVLAVisionBackbone(config)
        self.projector = OpenVLAProjector(self.vision_backbone.embed_dim, config.hidden_size,
                                          fused=config.is_fused_projector)
        self.language_model = LlamaForCausalLM(config.llm_config())
        self.proprio_projector = (ProprioProjector(config.proprio_dim, config.hidden_size)
                                  if config.use_proprio else None)
        self.value_head = (ValueHead(config.hidden_size, config.value_head_hidden_sizes)
                           if config.add_value_head else None)
        self.action_tokenizer = ActionTokenizer(config.n_action_bins, config.vocab_end)
        self._normalizers: dict[tuple[str | None, str], ActionNormalizer] = {}
        llm = self.language_model.config
        n_heads = llm.num_attention_heads
        head_dim = getattr(llm, "head_dim", None) or llm.hidden_size // n_heads
        self._heads = (n_heads, llm.num_key_value_heads or n_heads, head_dim)
        self._gradient_checkpointing = False
        self._fast_inference: Any = None  # a FastInference after enable_fast_inference()
        self.lora_config: Any = None  # the peft LoraConfig of the adapters, once added

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def norm_stats(self) -> dict[str, Any] | None:
        return self.config.norm_stats

    @property
    def num_image_tokens(self) -> int:
        return self.vision_backbone.num_patches * self.config.num_images_in_input

    def set_dtype(self, dtype: torch.dtype) -> OpenVLAOFTForActionPrediction:
        """Cast the weights to `dtype`, keeping computed buffers (RoPE frequencies) in float32.

        `module.to(torch.bfloat16)` would round the rotary `inv_freq` too; transformers'
        `from_pretrained(torch_dtype=...)`, which OFT and RLinf use, keeps it in float32.
        """
        self.to(dtype)
        rebuild_computed_buffers(self)
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (every ViT block and Llama layer) to save memory."""
        self._gradient_checkpointing = True
        for vit in self.vision_backbone.towers:
            vit.set_grad_checkpointing(True)

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    # ------------------------------------------------------------------ forward
    def build_inputs(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The multimodal input embeddings [B, L, H] and the key mask [B, L] (see the module docstring)."""
        self.check_prompt(input_ids, attention_mask)
        return self._embed(pixel_values, input_ids, attention_mask, proprio)

    def check_prompt(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> bool:
        """Check that every prompt starts with BOS (padding after it); return whether any row is padded.

        This is the forward pass's one read from the device, made before any work is queued.
        """
        bos = self.language_model.config.bos_token_id
        checks = []
        if bos is not None:
            first_ok = input_ids[:, 0] == bos
            if attention_mask is not None:
                first_ok = first_ok & (attention_mask[:, 0] != 0)
            checks.append(first_ok.all())
        if attention_mask is not None:
            checks.append((attention_mask != 0).all())
        if not checks:
            return False
        values = torch.stack(checks).tolist()
        if bos is not None and not values[0]:
            raise ValueError(f"every prompt must start with BOS (id {bos}) at index 0, with any padding after it: "
                             f"got first ids {input_ids[:, 0].tolist()}; build prompts with OpenVLAOFTProcessor")
        return attention_mask is not None and not values[-1]

    def _embed(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        proprio: torch.Tensor | None,
        block_fn: BlockFn | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        b = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(input_ids.device, torch.long)
        n_images = pixel_values.shape[1] // (3 * len(self.vision_backbone.towers))
        if n_images != cfg.num_images_in_input:
            raise ValueError(f"the model takes {cfg.num_images_in_input} images per observation "
                             f"(config.num_images_in_input), got {n_images}")
        patches = self.projector(self.vision_backbone(pixel_values.to(self.dtype), block_fn))
        embed = self.language_model.get_input_embeddings()
        tokens = embed(input_ids)
        dev, h = tokens.device, tokens.shape[-1]
        parts = [tokens[:, :1], patches.to(tokens.dtype)]
        masks = [attention_mask[:, :1], attention_mask.new_ones(b, patches.shape[1])]
        if cfg.use_proprio:
            if proprio is None:
                raise ValueError("this model was configured with use_proprio=True; pass proprio [B, proprio_dim]")
            if proprio.shape[-1] != cfg.proprio_dim:
                raise ValueError(f"proprio has {proprio.shape[-1]} values, the model expects {cfg.proprio_dim}")
            parts.append(self.proprio_projector(proprio.to(dev, self.proprio_projector.fc1.weight.dtype))[:, None]
                         .to(tokens.dtype))
            masks.append(attention_mask.new_ones(b, 1))
        parts += [tokens[:, 1:], tokens.new_zeros(b, cfg.num_action_tokens, h)]
        masks += [attention_mask[:, 1:], attention_mask.new_ones(b, cfg.num_action_tokens)]
        if cfg.append_stop_token:
            eos = self.language_model.config.eos_token_id
            eos = eos[0] if isinstance(eos, list) else eos
            parts.append(embed(torch.full((b, 1), int(eos), device=dev, dtype=torch.long)))
            masks.append(attention_mask.new_ones(b, 1))
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> OpenVLAOFTOutput:
        """One forward pass over a batch: logits of all A*K action tokens and the values.

        Args:
            pixel_values: [B, n_images * 3 * n_towers, H, W] from `OpenVLAOFTProcessor`.
            input_ids: [B, Lp] prompt ids, BOS at index 0, left-padded after it (the processor's layout).
            attention_mask: [B, Lp], 1 for real tokens (default all ones).
            proprio: [B, proprio_dim] normalised proprioception (only with `use_proprio`).
            output_hidden_states: also return the final hidden states.

        The action logits are computed in float32 from the final hidden states (see `action_logits`).
        After `enable_fast_inference`, calls without gradients in eval mode go through compiled
        regions and, on CUDA, captured CUDA graphs.
        """
        padded = self.check_prompt(input_ids, attention_mask)
        fast = self._fast_inference
        if fast is not None and not output_hidden_states and fast.applies(self):
            return fast(self, pixel_values, input_ids, attention_mask, proprio, padded)
        return self._forward(pixel_values, input_ids, attention_mask, proprio, padded, output_hidden_states)

    def _forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        proprio: torch.Tensor | None,
        padded: bool,
        output_hidden_states: bool = False,
        block_fn: BlockFn | None = None,
        layer_fn: Callable[..., torch.Tensor] | None = None,
        fused: Sequence[tuple[FusedLinear | None, FusedLinear | None]] | None = None,
    ) -> OpenVLAOFTOutput:
        # No host reads from here on: this is what fast inference compiles and captures.
        # `fused`: per layer, the concatenated (q/k/v, gate/up) weights of fast inference, or None.
        cfg = self.config
        layer_fn = layer_fn or run_llama_layer
        embeds, mask = self._embed(pixel_values, input_ids, attention_mask, proprio, block_fn)
        length, n_act = embeds.shape[1], cfg.num_action_tokens
        start = length - n_act - 1 - int(cfg.append_stop_token)
        # Positions count real tokens only, so a padded row gets the positions it has alone.
        position_ids = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        rows = None if output_hidden_states else (start, n_act)
        full_mask, rows_mask = self._attention_masks(mask, padded, rows)
        lm = self.language_model.model
        cos, sin = lm.rotary_emb(embeds, position_ids)
        hidden = embeds
        layers = lm.layers
        checkpointing = self._gradient_checkpointing and torch.is_grad_enabled()
        eager = cfg.attn_implementation == "eager"
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            # the last layer computes only the positions that are read out (its keys are all positions)
            args = (layer, hidden, cos, sin, rows_mask if last else full_mask, rows if last else None, self._heads,
                    eager, *(fused[i] if fused is not None else ()))
            hidden = checkpoint(layer_fn, *args, use_reentrant=False) if checkpointing else layer_fn(*args)
        if rows is None:
            out_hidden = hidden[:, start:start + n_act]
        else:
            out_hidden = hidden
        normed = self._final_norm_fp32(out_hidden)
        logits = self.action_logits(normed)
        values = None
        if self.value_head is not None:
            values = self.value_head(normed[:, 0].to(self.value_head.mlp[0].weight.dtype))
        return OpenVLAOFTOutput(logits, values, lm.norm(hidden) if output_hidden_states else None)

    def _attention_masks(self, mask: torch.Tensor, padded: bool, rows: tuple[int, int] | None
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        # Bool masks (True = attend) for all queries and for the last layer's query rows.
        # Bidirectional (OFT) without padding: no mask at all, so SDPA can use its flash kernel;
        # with padding: a key-padding mask [B, 1, 1, L], the same for every query.
        keys = mask.bool()[:, None, None, :]
        if not self.config.causal_attention:
            return (keys, keys) if padded else (None, None)
        n = mask.shape[1]
        pos = torch.arange(n, device=mask.device)
        full = keys & (pos[None, :] <= pos[:, None])  # [B, 1, L, L]
        if rows is None:
            return full, full
        return full, full[:, :, rows[0]:rows[0] + rows[1]]

    def _final_norm_fp32(self, hidden: torch.Tensor) -> torch.Tensor:
        # The final RMSNorm of the read-out positions in float32 (transformers rounds to the weights' dtype).
        norm = self.language_model.model.norm
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
        with torch.autocast(hidden.device.type, enabled=False):
            x = hidden.float()
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return x * norm.weight.float()

    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits of the action token ids only, in float32: [..., n_bins].

        Float32, so that the logits are not rounded again to bfloat16 (8 bits of mantissa: steps of
        1/16 near |logit| = 10), which adds to the batch-size dependence of log-probs (module docstring).
        A LoRA-wrapped head is evaluated on the action rows only, adapters included.
        """
        head = self.language_model.get_output_embeddings()
        begin, end = self.action_tokenizer.token_begin, self.action_tokenizer.vocab_end
        base = getattr(head, "base_layer", head)
        if type(base) is not nn.Linear or (head is not base and not _is_plain_lora(head)):
            return head(hidden)[..., begin:end].float()  # an unusual head: run the module, then slice
        with torch.autocast(hidden.device.type, enabled=False):
            x = hidden.float()
            bias = base.bias[begin:end].float() if base.bias is not None else None
            out = F.linear(x, base.weight[begin:end].float(), bias)
            if head is not base and not head.merged and not head.disable_adapters:
                for name in head.active_adapters:
                    if name in head.lora_A:
                        down = F.linear(head.lora_dropout[name](x), head.lora_A[name].weight.float())
                        out = out + F.linear(down, head.lora_B[name].weight[begin:end].float()) * head.scaling[name]
            return out

    # ------------------------------------------------------------------ fast inference
    def enable_fast_inference(self, compile: bool = True, cuda_graphs: bool | None = None, mode: str | None = None,
                              max_graphs: int = 8, fullgraph: bool = False, backend: str = "inductor",
                              fuse_projections: bool = True, cudnn_attention: bool | None = None,
                              fp8: bool = False, fp8_vision: bool = False) -> None:
        """Speed up forward passes without gradients in eval mode (rollouts, evaluation).

        Args:
            compile: `torch.compile` each ViT block and each Llama layer as regions (one compiled
                region serves all layers of a kind; seconds to compile, fused normalisation, RoPE and
                activations).
            cuda_graphs: capture the whole forward pass as a CUDA graph per input shape and replay
                it (no per-kernel launch cost). Default: on for a model on CUDA.
            mode: `torch.compile` mode (None = default; "max-autotune-no-cudagraphs" tunes GEMMs,
                minutes per shape). "reduce-overhead" needs cuda_graphs=False.
            max_graphs: captured shapes kept (least recently used dropped). Each prompt length is a shape.
            fullgraph, backend: passed to `torch.compile` (tests use backend="aot_eager").
            fuse_projections: run each Llama layer's q/k/v and gate/up projections as one GEMM each, on
                concatenated copies of their weights (+8.6 GB on the 7.5B model in bfloat16; kept in step
                with in-place weight updates, see `fast_inference.FusedProjections`; LoRA-wrapped layers
                stay unfused).
            cudnn_attention: prefer cuDNN's attention kernel for attention without a mask (default: on
                CUDA, after checking it against the math kernel; falls back to flash on any failure).
            fp8: replace every Llama layer's q/k/v/o and gate/up/down projections by FP8 layers
                (`fp8.Float8Linear`: float8_e4m3fn weights with one scale per output channel, inputs
                quantized per token, `torch._scaled_mm`; ~2x the GEMM rate of bfloat16 on Hopper).
                Needs CUDA with compute capability >= 8.9 and the model in bfloat16 (or a torch whose
                CPU `_scaled_mm` takes float8, for tests). The action logits (float32 LM head) and the
                value head are not quantized; layers with dimensions not multiples of 16 and
                LoRA-wrapped layers stay as they are. The bfloat16 weights of replaced layers are freed:
                the model is then for inference only (training calls raise; `.to(dtype)` is refused;
                `load_state_dict` with bfloat16 weights quantizes them in place).
            fp8_vision: with fp8, also the ViT blocks' linears (attention qkv/proj, MLP fc1/fc2).

        Outputs equal the eager forward within float rounding (with fp8: within FP8 rounding). Calls
        with gradients (training) run the eager model. Moving the model, `add_lora`, merging and loading
        adapters drop the captured graphs and fused weights; call `disable_fast_inference()` to return
        to eager. Enabling again first disables the current fast path (see there for FP8).
        """
        from .fast_inference import FastInference

        self.disable_fast_inference()  # the old instance's fused weights go before the new ones are made
        self._fast_inference = FastInference(self, compile=compile, cuda_graphs=cuda_graphs, mode=mode,
                                             max_graphs=max_graphs, fullgraph=fullgraph, backend=backend,
                                             fuse_projections=fuse_projections, cudnn_attention=cudnn_attention,
                                             fp8=fp8, fp8_vision=fp8_vision)

    def disable_fast_inference(self) -> None:
        """Back to the eager forward; drops captured CUDA graphs.

        After `fp8=True` the FP8 layers become `nn.Linear`s again in the model's dtype, holding the
        dequantized FP8 weights: the model works in bfloat16 (and can be trained) but its weights carry
        FP8's rounding; the original values are gone (load them again, e.g. `load_state_dict`, where
        exact weights matter).
        """
        if self._fast_inference is not None:
            self._fast_inference.close()
        self._fast_inference = None

    def _drop_cuda_graphs(self) -> None:
        # Captured graphs hold weight addresses and the module structure of their capture; fused
        # projection weights are copies of the layers as they were (rebuilt at the next fast call).
        fast = self.__dict__.get("_fast_inference")
        if fast is not None:
            fast.clear()

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half(), ...
        self._drop_cuda_graphs()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles (deepcopy for FSDP, Ray) start eager: graphs belong to this instance
        state = self.__dict__.copy()
        state["_fast_inference"] = None
        return state

    # ------------------------------------------------------------------ actions
    def action_distribution(self, action_logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                            normalizer: ActionNormalizer | None = None) -> ActionTokenDistribution:
        """The categorical distribution over action bins; `normalizer` marks collapsed dimensions."""
        collapsed = None
        if normalizer is not None:
            collapsed = normalizer.collapsed_dims(self.action_tokenizer).repeat(self.config.num_action_chunks)
        return ActionTokenDistribution(action_logits, temperature=temperature, top_k=top_k, collapsed=collapsed)

    def get_action_normalizer(self, unnorm_key: str | None = None, norm_stats: dict[str, Any] | None = None,
                              key: str = "action") -> ActionNormalizer:
        """Statistics for de-normalising actions (or `key="proprio"`), from `norm_stats` or the config's."""
        stats = norm_stats if norm_stats is not None else self.config.norm_stats
        cache_key = (unnorm_key, key)
        if norm_stats is not None or cache_key not in self._normalizers:
            normalizer = ActionNormalizer.from_norm_stats(stats, unnorm_key, self.config.action_normalization, key)
            if normalizer.dim != self.config.action_dim and key == "action":
                raise ValueError(f"norm_stats {normalizer.name!r} describe {normalizer.dim}-D actions but the model "
                                 f"predicts {self.config.action_dim}-D actions")
            if norm_stats is not None:
                return normalizer
            self._normalizers[cache_key] = normalizer
        return self._normalizers[cache_key]

    @torch.no_grad()
    def predict_action(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        unnorm_key: str | None = None,
        deterministic: bool = True,
        temperature: float = 1.0,
        top_k: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions for a batch: ([B, K, A] de-normalised actions, [B, K*A] action token ids)."""
        out = self(pixel_values, input_ids, attention_mask, proprio)
        normalizer = self.get_action_normalizer(unnorm_key)
        dist = self.action_distribution(out.action_logits, temperature, top_k, normalizer)
        bins = dist.mode() if deterministic else dist.sample()
        actions = normalizer.unnormalize(self.action_tokenizer.decode_bins(bins))
        cfg = self.config
        return actions.view(-1, cfg.num_action_chunks, cfg.action_dim), self.action_tokenizer.bins_to_ids(bins)

    # ------------------------------------------------------------------ LoRA
    def add_lora(self, rank: int = 32, alpha: int | None = None, target_modules: list[str] | str | None = None,
                 dropout: float = 0.0, init_lora_weights: bool | str = "gaussian", lora_config: Any = None) -> None:
        """Wrap linear layers with LoRA adapters (peft) and freeze everything else except the value head.

        Defaults follow RLinf (reference §4.4): alpha = rank, dropout 0, gaussian init (B = 0, so
        outputs do not change), and its target list (every linear layer of ViTs, projector and Llama).
        A peft `LoraConfig` given as `lora_config` is used as it is instead (e.g. one read from an
        adapter's `adapter_config.json`).
        """
        from peft import LoraConfig, inject_adapter_in_model

        if self.has_lora:
            raise RuntimeError("this model already has LoRA adapters; add_lora can be called once per model")
        if lora_config is None:
            lora_config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                                     target_modules=target_modules or list(DEFAULT_LORA_TARGET_MODULES),
                                     init_lora_weights=init_lora_weights, bias="none")
        self._drop_cuda_graphs()
        inject_adapter_in_model(lora_config, self)
        self.lora_config = lora_config
        for name, p in self.named_parameters():
            p.requires_grad = ".lora_" in name
        for head in (self.value_head, self.proprio_projector):
            if head is not None:
                head.requires_grad_(True)

    def save_lora_adapter(self, path: str | os.PathLike, base_model_path: str | None = None) -> None:
        """Write only the adapters (and the value head / proprio projector) in peft's format.

        See `checkpoint.save_lora_adapter`: `adapter_config.json` + `adapter_model.safetensors`.
        """
        from .checkpoint import save_lora_adapter

        save_lora_adapter(self, path, base_model_path=base_model_path)

    def load_lora_adapter(self, path: str | os.PathLike) -> None:
        """Add the adapters saved by `save_lora_adapter` (or peft) to this base model and load them."""
        from .checkpoint import load_lora_adapter

        load_lora_adapter(self, path)

    def _lora_layers(self) -> list[nn.Module]:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.modules() if isinstance(m, LoraLayer)]

    @property
    def has_lora(self) -> bool:
        return any(".lora_" in name for name, _ in self.named_parameters())

    def merge_lora(self) -> None:
        """Add the LoRA updates into the base weights (outputs unchanged; the adapters are kept)."""
        self._drop_cuda_graphs()
        for layer in self._lora_layers():
            if not layer.merged:
                layer.merge()

    def unmerge_lora(self) -> None:
        """Undo `merge_lora`."""
        self._drop_cuda_graphs()
        for layer in self._lora_layers():
            while layer.merged:
                layer.unmerge()

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if ".lora_" in k}

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the released key names, with any LoRA update merged in (the model is not changed)."""
        deltas: dict[str, torch.Tensor] = {}
        lora_layers = set(self._lora_layers())
        for name, module in self.named_modules():
            if module in lora_layers and not module.merged:
                delta = None
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        d = module.get_delta_weight(adapter)
                        delta = d if delta is None else delta + d
                if delta is not None:
                    deltas[f"{name}.weight"] = delta
        out: dict[str, torch.Tensor] = {}
        for key, tensor in self.state_dict().items():
            if ".lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            out[key] = tensor + deltas[key].to(tensor.dtype) if key in deltas else tensor
        return out

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, torch_dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None, strict: bool = True,
                        adapter_path: str | os.PathLike | None = None,
                        **config_overrides: Any) -> OpenVLAOFTForActionPrediction:
        """Load a released OpenVLA / OpenVLA-OFT / RLinf checkpoint directory (see `checkpoint.load_model`),
        then, with `adapter_path`, a LoRA adapter saved by `save_lora_adapter` on top of it."""
        from .checkpoint import load_model

        return load_model(path, torch_dtype=torch_dtype, device=device, strict=strict, adapter_path=adapter_path,
                          **config_overrides)

    def save_pretrained(self, path: str | os.PathLike, processor: Any = None, max_shard_size: int | str = "5GB",
                        torch_dtype: torch.dtype | str | None = None) -> None:
        """Write the released layout atomically (see `checkpoint.save_model`)."""
        from .checkpoint import save_model

        save_model(self, path, processor=processor, max_shard_size=max_shard_size, torch_dtype=torch_dtype)


def _is_plain_lora(module: nn.Module) -> bool:
    # a peft LoRA linear layer without DoRA (its update is B @ A * scaling, sliceable by output rows)
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return (isinstance(module, LoraLayer) and not any(getattr(module, "use_dora", {}).values())
            and all(hasattr(module, a) for a in ("lora_A", "lora_B", "lora_dropout", "scaling", "merged")))


def rebuild_computed_buffers(model: nn.Module) -> None:
    """Re-create the submodules whose buffers are computed, not stored (transformers' rotary embeddings).

    They are rebuilt from their config in float32 on the device of the model's weights; this also
    materialises them after a meta-device build.
    """
    params = [p for p in model.parameters() if not p.is_meta]
    device = params[0].device if params else torch.device("cpu")
    for name, module in list(model.named_modules()):
        computed = [b for b in module._non_persistent_buffers_set if module._buffers.get(b) is not None]
        if not computed or not hasattr(module, "config"):
            continue
        with torch.device(device):
            fresh = type(module)(config=module.config)  # e.g. LlamaRotaryEmbedding
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, fresh)


def build_model(config: OpenVLAOFTConfig, device: torch.device | str | None = None,
                torch_dtype: torch.dtype | None = None) -> OpenVLAOFTForActionPrediction:
    """A randomly initialised model; `device="meta"` builds the structure only (for counting parameters).

    With `torch_dtype` the weights are created in that dtype (a 7.5B model in bfloat16 never exists in
    float32), then the computed RoPE buffers are rebuilt in float32.
    """
    default = torch.get_default_dtype()
    try:
        if torch_dtype is not None:
            torch.set_default_dtype(torch_dtype)
        with torch.device(device or "cpu"):
            model = OpenVLAOFTForActionPrediction(config)
    finally:
        torch.set_default_dtype(default)
    if torch_dtype is not None:
        model.set_dtype(torch_dtype)
    return model
