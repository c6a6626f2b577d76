"""FP8 linear layers for fast inference: float8_e4m3fn weights and activations, rowwise scales.

At batch 32 the 7.5B model's forward pass is compute-bound in bfloat16 GEMMs (~460 TFLOP per chunk);
Hopper's FP8 tensor cores run twice as many FLOP/s. A replaced `nn.Linear` keeps its weight as
float8_e4m3fn with one float32 scale per output channel (quantized once), and quantizes its input
per token (one scale per row, from the row's amax) inside the compiled region; `torch._scaled_mm`
multiplies the two and applies both scales and the bias in its epilogue, in bfloat16 out:

    y = (a_fp8 @ w_fp8.T) * scale_a[M, 1] * scale_b[1, N] + bias

Rowwise scales make a fused q/k/v or gate/up weight the concatenation of its parts' quantized rows,
so a fused FP8 weight can be shared with the three (two) per-projection layers as views.

Requirements of `torch._scaled_mm` on CUDA (torch 2.5 to 2.14): compute capability 8.9 or newer
(Ada, Hopper, Blackwell); the first operand row-major, the second column-major (`w_fp8.t()` of a
contiguous [N, K] weight); K and N multiples of 16; float32 scales of shapes [M, 1] and [1, N], both
contiguous; bfloat16 output (and bias) for rowwise scaling. Layers whose dimensions are not
multiples of 16 stay in bfloat16. On CPU, torch's own `_scaled_mm` (float32 reference kernels)
serves the tests.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

FP8_DTYPE = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(FP8_DTYPE).max  # 448
# A zero row gets this amax: its scale stays finite and its values quantize to 0.
AMAX_EPS = 1e-12
# cuBLAS/CUTLASS "fast accumulation": FP8 products summed in the tensor cores' own precision without
# periodic promotion to float32; what torchao's float8 inference uses. Its error is far below FP8's
# own rounding (3 mantissa bits).
FAST_ACCUM = True


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize each row (last dimension) of `x` to float8_e4m3fn with its own scale.

    Returns `(x_fp8, scale)`, `scale` float32 of shape `x.shape[:-1] + (1,)`, so that
    `x_fp8.float() * scale` approximates `x`: the row's largest |value| maps to 448 (e4m3's max),
    values are clamped to +-448 (e4m3fn has no infinity; the clamp makes saturation explicit
    rather than left to the cast), and a zero row gets zeros.
    """
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=AMAX_EPS) / E4M3_MAX
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE), scale


def dequantize_rowwise(x_fp8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of `quantize_rowwise`: `x_fp8 * scale` in `dtype`."""
    return (x_fp8.float() * scale).to(dtype)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
               emulate: bool = False) -> torch.Tensor:
    """`F.linear(x, weight * scale.T, bias)` with an FP8 weight [N, K] and its scales [1, N]; `x` is
    quantized per row here. `emulate`: the same quantization, then a float32 matmul of the dequantized
    operands (a reference for tests; no FP8 kernel needed). Output in `x`'s dtype."""
    shape = x.shape
    x_fp8, x_scale = quantize_rowwise(x.reshape(-1, shape[-1]))
    if emulate:
        out = dequantize_rowwise(x_fp8, x_scale) @ dequantize_rowwise(weight, scale.t()).t()
        out = out + bias.float() if bias is not None else out
    else:
        out = torch._scaled_mm(x_fp8, weight.t(), scale_a=x_scale, scale_b=scale,
                               bias=bias.to(x.dtype) if bias is not None else None, out_dtype=x.dtype,
                               use_fast_accum=FAST_ACCUM)
    return out.to(x.dtype).reshape(*shape[:-1], weight.shape[0])


class Float8Linear(nn.Module):
    """An inference-only `nn.Linear` with a float8_e4m3fn weight and per-output-channel scales.

    Buffers: `weight` [out, in] float8_e4m3fn, `weight_scale` [1, out] float32, `bias` [out] (the
    layer's dtype) or None. `weight` and `weight_scale` may be views of a fused q/k/v or gate/up
    weight (`FP8Layers`). `load_state_dict` with a high-precision `weight` (and no `weight_scale`)
    quantizes it into the existing buffers, in place, so that weight syncs keep captured CUDA graphs
    valid. Moving or casting the model while FP8 layers are in it is refused: return to
    `nn.Linear` first (`to_linear`, or `disable_fast_inference()` on the model).
    """

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 emulate: bool = False):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)
        self.emulate = emulate

    @classmethod
    def from_linear(cls, linear: nn.Linear, emulate: bool = False) -> Float8Linear:
        weight, scale = quantize_rowwise(linear.weight.detach())
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls(weight, scale.t().contiguous(), bias, emulate)

    def to_linear(self, dtype: torch.dtype) -> nn.Linear:
        """A plain `nn.Linear` holding the dequantized weight (FP8-rounded: not the original values)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(dequantize_rowwise(self.weight, self.weight_scale.t()))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("FP8 layers are inference-only (no gradients): call disable_fast_inference() "
                               "on the model before training it")
        return fp8_linear(x, self.weight, self.weight_scale, self.bias, self.emulate)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, emulate={self.emulate}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dtype != FP8_DTYPE and prefix + "weight_scale" not in state_dict:
            weight, scale = quantize_rowwise(state_dict[key].to(self.weight.device))
            state_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
            state_dict[key], state_dict[prefix + "weight_scale"] = weight, scale.t()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, recurse=True):
        probe = torch.empty(0, device=self.weight.device, dtype=torch.bfloat16)
        moved = fn(probe)
        if moved.device != probe.device or moved.dtype != probe.dtype:
            raise RuntimeError(f"cannot move or cast FP8 layers (to {moved.device}, {moved.dtype}): call "
                               "disable_fast_inference() on the model first, then enable it again")
        return self


def fp8_unsupported_reason(device: torch.device) -> str | None:
    """Why `torch._scaled_mm` with float8_e4m3fn cannot run on `device` (None: it can)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return (f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}; FP8 GEMMs need "
                    "8.9 or newer (Ada, Hopper, Blackwell)")
        return None
    if device.type == "cpu":
        try:  # torch's CPU reference kernel (recent torch versions): used by the tests
            x = torch.ones(16, 16, dtype=FP8_DTYPE)
            torch._scaled_mm(x, x.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.float32)
            return None
        except (RuntimeError, NotImplementedError, TypeError) as e:
            return f"this torch ({torch.__version__}) has no CPU float8 _scaled_mm ({type(e).__name__}: {e})"
    return f"FP8 GEMMs are supported here on CUDA (compute capability >= 8.9) only, not on {device.type}"


def check_fp8_device(device: torch.device, dtype: torch.dtype) -> None:
    """Raise a ValueError naming the requirement if FP8 inference cannot run on `device` in `dtype`."""
    reason = fp8_unsupported_reason(device)
    if reason is not None:
        raise ValueError(f"fp8=True needs a CUDA GPU of compute capability 8.9 or newer: {reason}. "
                         "Use enable_fast_inference() without fp8")
    if torch.device(device).type == "cuda" and dtype != torch.bfloat16:
        raise ValueError(f"fp8=True needs the model in bfloat16 on CUDA (rowwise-scaled FP8 GEMMs give bfloat16 "
                         f"out); it is in {dtype}. Call model.set_dtype(torch.bfloat16) first")


def _quantizable(linear: nn.Module) -> bool:
    # plain nn.Linear only (LoRA wrappers stay as they are); _scaled_mm needs K, N multiples of 16
    return (type(linear) is nn.Linear and not linear.weight.is_meta
            and linear.in_features % 16 == 0 and linear.out_features % 16 == 0)


def _wraps_a_layer(module: nn.Module) -> bool:
    # a peft adapter layer (LoRA): its `base_layer` and adapters are plain nn.Linears, but peft casts the
    # input to the adapters' weight dtype (float8 would break it) and merges into the base weight, so the
    # whole wrapped layer stays as it is
    return isinstance(getattr(module, "base_layer", None), nn.Module)


FP8Fused = tuple[torch.Tensor, "torch.Tensor | None", torch.Tensor]  # (weight fp8 [N, K], bias, scale [1, N])


class FP8Layers:
    """The model's Llama layers (and optionally its ViT blocks) with their `nn.Linear`s replaced by
    `Float8Linear`s, and the way back.

    Replaced: in every Llama layer q/k/v/o and gate/up/down projections; with `vision=True` also
    every `nn.Linear` in the ViT blocks (attention qkv and proj, MLP fc1 and fc2). Not replaced: the
    LM head (action logits are computed in float32), the value head, the projectors, the ViTs'
    patch embeddings, layers wrapped by LoRA (neither their base layer nor their adapters: adapter
    syncs then load as they do into the eager model), and layers whose dimensions are not multiples
    of 16.
    With `fuse=True` the q/k/v and gate/up layers of a Llama layer are quantized together;
    `layers[i]` holds `(qkv, gate_up)` as `(weight_fp8, bias, scale)` triples for `run_llama_layer`
    (None where a group could not be fused), and the per-projection layers are views of them.

    `restore()` puts `nn.Linear`s back with the dequantized weights: the model runs in bfloat16
    again, with weights that carry FP8's rounding (relative error up to 1/16 per weight), not the
    original values: load the original weights again (`load_state_dict`, a checkpoint) when exact
    weights matter.
    """

    def __init__(self, model: nn.Module, vision: bool = False, fuse: bool = True, emulate: bool = False):
        self.emulate = emulate
        self.dtype = model.dtype
        self._replaced: list[tuple[nn.Module, str]] = []  # (parent, attribute) of every Float8Linear
        self.layers: list[tuple[FP8Fused | None, FP8Fused | None]] = []
        for layer in model.language_model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = self._fuse(attn, ["q_proj", "k_proj", "v_proj"]) if fuse else None
            gate_up = self._fuse(mlp, ["gate_proj", "up_proj"]) if fuse else None
            self.layers.append((qkv, gate_up))
            self._replace_all(layer)
        if vision:
            for vit in model.vision_backbone.towers:
                for block in vit.blocks:
                    self._replace_all(block)
        logger.info("FP8 inference: %d linear layers in float8_e4m3fn (%d fused groups)", len(self._replaced),
                    sum(f is not None for pair in self.layers for f in pair))
        if not self._replaced:
            logger.warning("FP8 inference replaced no layer: every candidate is LoRA-wrapped or has dimensions "
                           "that are not multiples of 16, so FP8 changes nothing in this model")

    @property
    def num_replaced(self) -> int:
        return len(self._replaced)

    def _set(self, parent: nn.Module, name: str, layer: Float8Linear) -> None:
        setattr(parent, name, layer)
        self._replaced.append((parent, name))

    def _fuse(self, parent: nn.Module, names: list[str]) -> FP8Fused | None:
        modules = [getattr(parent, n, None) for n in names]
        if not all(m is not None and _quantizable(m) for m in modules):
            return None
        if len({(m.weight.dtype, m.weight.device, m.in_features, m.bias is None) for m in modules}) != 1:
            return None
        with torch.no_grad():  # rowwise scales: quantizing the concatenation = concatenating the quantized parts
            weight, scale = quantize_rowwise(torch.cat([m.weight for m in modules]))
            scale = scale.t().contiguous()
            bias = torch.cat([m.bias for m in modules]) if modules[0].bias is not None else None
        start = 0
        for name, m in zip(names, modules):
            end = start + m.out_features
            self._set(parent, name, Float8Linear(weight[start:end], scale[:, start:end],
                                                 bias[start:end] if bias is not None else None, self.emulate))
            start = end
        return weight, bias, scale

    def _replace_all(self, root: nn.Module) -> None:
        for name, child in list(root.named_children()):
            if _quantizable(child):
                with torch.no_grad():
                    self._set(root, name, Float8Linear.from_linear(child, self.emulate))
            elif not _wraps_a_layer(child):
                self._replace_all(child)

    def restore(self) -> None:
        """Put `nn.Linear`s (dequantized weights, the model's dtype) back in place of the FP8 layers."""
        for parent, name in self._replaced:
            layer = getattr(parent, name)
            if isinstance(layer, Float8Linear):
                setattr(parent, name, layer.to_linear(self.dtype))
        self._replaced.clear()
        self.layers = []

