"""Fast inference for OpenVLA-OFT: compiled layer regions and CUDA-graph replay of whole forward passes.

Where the time goes in an eager forward pass of the 7.5B model (one chunk = ~1000 tokens per
observation): at batch 1 the GEMMs need ~15 TFLOP, ~20 ms on an H100, and the rest is ~3000 kernel
launches from Python plus unfused element-wise work (RMSNorm in float32, RoPE, SiLU*up, residuals);
at batch 32 the GEMMs dominate and the element-wise passes over [32k, 4096]-sized tensors cost
about a quarter of the time. So:

- `torch.compile` runs on each ViT block and each Llama layer (`run_vit_block`, `run_llama_layer`),
  not on the whole model: Dynamo traces one layer, and the same compiled code serves all 32 layers
  (their parameters are graph inputs), so compiling takes seconds instead of minutes per shape, and
  inductor fuses the element-wise work around cuBLAS GEMMs and SDPA.
- On CUDA the whole forward pass (vision towers, projector, Llama, heads) is captured once per input
  shape as a CUDA graph and replayed: no Python and no launch gaps. Inputs are copied into static
  buffers; outputs are copied out, so a later replay does not overwrite them.
- At batch 32 the pass is compute-bound (~450 TFLOP), so the rest is about kernel choice: the q/k/v
  and gate/up projections of each Llama layer run as one GEMM each on concatenated copies of their
  weights (`FusedProjections`: fewer, wider GEMMs, the activations read once), and attention without
  a mask prefers cuDNN's fused attention over FlashAttention-2 (faster on Hopper; shapes cuDNN
  cannot run fall through to flash, and a cuDNN failure switches the instance back to flash).
- Opt-in (`fp8=True`, CUDA compute capability >= 8.9): the Llama layers' projections (and with
  `fp8_vision=True` the ViT blocks' linears) run as FP8 GEMMs with rowwise scales (`fp8.py`),
  twice the tensor-core rate of bfloat16 on Hopper, at the cost of FP8 rounding of weights and
  activations (the LM head and value head stay in float32 / bfloat16).

Only calls without gradients in eval mode take this path; training runs the eager model.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .fp8 import FP8Layers, check_fp8_device
from .modeling_openvla_oft import FusedLinear, OpenVLAOFTOutput, run_llama_layer, run_vit_block

logger = logging.getLogger(__name__)

# Compiled regions are shared by all models of the process: Dynamo keys them by the function's code.
_COMPILED: dict[tuple, Any] = {}
# The attention kernel is chosen when a region is traced and Dynamo does not guard on that choice:
# regions traced with cuDNN preferred are dropped before tracing them without (and the reverse).
_COMPILED_CUDNN: list[bool] = []


def compiled_regions(mode: str | None = None, fullgraph: bool = False, backend: str = "inductor",
                     cudnn_attention: bool = False) -> tuple[Any, Any]:
    """`torch.compile`d (`run_vit_block`, `run_llama_layer`) for these settings."""
    if _COMPILED_CUDNN and _COMPILED_CUDNN[0] != cudnn_attention:
        torch._dynamo.reset()
        _COMPILED.clear()
    _COMPILED_CUDNN[:] = [cudnn_attention]
    key = (mode, fullgraph, backend)
    if key not in _COMPILED:
        _raise_recompile_limit(64)
        kwargs: dict[str, Any] = {"fullgraph": fullgraph, "backend": backend}
        if mode is not None:
            kwargs["mode"] = mode
        _COMPILED[key] = (torch.compile(run_vit_block, **kwargs), torch.compile(run_llama_layer, **kwargs))
    return _COMPILED[key]


def _raise_recompile_limit(limit: int) -> None:
    # Each (tower, batch size, padded or not, last layer or not) is one more compiled variant of a
    # region; Dynamo's default limit of 8 would silently fall back to eager beyond it.
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.6
        if hasattr(dynamo_config, name) and getattr(dynamo_config, name) < limit:
            setattr(dynamo_config, name, limit)


def _autocast_state(device: torch.device) -> tuple[bool, torch.dtype | None]:
    # a graph replays the kernels (and dtypes) of its capture, so autocast is part of its key
    try:
        enabled = torch.is_autocast_enabled(device.type)
        return enabled, torch.get_autocast_dtype(device.type) if enabled else None
    except (TypeError, AttributeError):  # torch < 2.4
        return torch.is_autocast_enabled(), None


class FusedProjections:
    """Concatenated q/k/v and gate/up weights of a model's Llama layers, kept equal to the layers' own.

    They are copies: the layers keep their parameters, so state dicts, checkpoints, LoRA and training
    see the model as it is (the 7.5B model holds 8.6 GB more in bfloat16). `sync()` runs before every
    fast call and compares each source tensor's version counter and address with those at the last copy:
    an in-place change (`load_state_dict`, `copy_`, an optimizer step) bumps the version and that
    group is copied again in place (same addresses: captured CUDA graphs stay valid); a replaced tensor
    (`load_state_dict(assign=True)`, `.data = ...`) is reported, so that the caller rebuilds. Writes
    through `.data` (`p.data.copy_(...)`) bypass version counters and are not seen: write with
    `p.copy_(...)` under `torch.no_grad()`. The model drops this object when LoRA adapters are added,
    merged or loaded and when it is moved or cast.

    Layers whose projections are not plain `nn.Linear` (LoRA-wrapped) stay unfused: `layers[i]` holds
    `(qkv, gate_up)`, each a `(weight, bias)` pair or None.
    """

    def __init__(self, model: nn.Module):
        self._groups: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # (fused copy, its sources)
        self.layers: list[tuple[FusedLinear | None, FusedLinear | None]] = []
        for layer in model.language_model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append((self._fuse([getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj")]),
                                self._fuse([getattr(mlp, n, None) for n in ("gate_proj", "up_proj")])))
        self._state = [self._read(sources) for _, sources in self._groups]

    @property
    def num_fused(self) -> int:
        """How many (q/k/v or gate/up) groups run as one GEMM."""
        return sum(f is not None for pair in self.layers for f in pair)

    def _fuse(self, modules: list[Any]) -> FusedLinear | None:
        if not all(type(m) is nn.Linear for m in modules):  # LoRA wrappers, quantised layers: unfused
            return None
        weights, biases = [m.weight for m in modules], [m.bias for m in modules]
        if len({(w.dtype, w.device, w.shape[1]) for w in weights}) != 1 or any(w.is_meta for w in weights):
            return None
        if any(b is None for b in biases) != all(b is None for b in biases):
            return None
        with torch.no_grad():
            weight = torch.cat(weights)
            bias = torch.cat(biases) if biases[0] is not None else None
        self._groups.append((weight, weights))
        if bias is not None:
            self._groups.append((bias, biases))
        return weight, bias

    @staticmethod
    def _read(sources: list[torch.Tensor]) -> list[tuple[int, int]]:
        return [(t._version, t.data_ptr()) for t in sources]

    def sync(self) -> bool:
        """Re-copy the groups whose sources changed in place; False if a source tensor was replaced."""
        for i, (fused, sources) in enumerate(self._groups):
            now = self._read(sources)
            if now == self._state[i]:
                continue
            if any(a[1] != b[1] for a, b in zip(now, self._state[i])):
                return False
            with torch.no_grad():
                torch.cat(sources, out=fused)
            self._state[i] = now
        return True


def cudnn_attention_agrees(device: torch.device, dtype: torch.dtype, shapes: list[tuple[int, int, int]]) -> bool:
    """Whether cuDNN's attention gives the math kernel's result on random inputs of these
    (heads, sequence length, head size), batch 2 (False: it is wrong or fails for a shape it accepts;
    shapes it rejects are skipped, SDPA falls through to the next kernel for them)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device=device).manual_seed(0)
    for heads, length, d in sorted(set(shapes)):
        q, k, v = (torch.randn(2, heads, length, d, device=device, dtype=dtype, generator=g) for _ in range(3))
        expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        try:
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                got = F.scaled_dot_product_attention(q, k, v)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except RuntimeError as e:
            if "No available kernel" in str(e) or "No viable backend" in str(e):  # cuDNN declined the shape
                continue
            logger.warning("cuDNN attention fails for shape %s (%s): fast inference uses flash attention",
                           (heads, length, d), e)
            return False
        if not torch.allclose(got.float(), expected, atol=3e-2, rtol=3e-2):
            logger.warning("cuDNN attention differs from the math kernel for shape %s (max %.3g): fast inference "
                           "uses flash attention", (heads, length, d), (got.float() - expected).abs().max().item())
            return False
    return True


def _prefer_cudnn_attention() -> contextlib.AbstractContextManager:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def _supports_attention_priority() -> bool:
    import inspect

    from torch.nn.attention import sdpa_kernel

    try:
        return "set_priority" in inspect.signature(sdpa_kernel).parameters
    except (TypeError, ValueError):
        return False


def _attention_shapes(model: nn.Module) -> list[tuple[int, int, int]]:
    # (heads, sequence length, head size) of the model's attention: each ViT's, the Llama's with a
    # typical prompt
    n_heads, _, head_dim = model._heads
    shapes = [(n_heads, model.num_image_tokens + 32 + model.config.num_action_tokens, head_dim)]
    for vit in model.vision_backbone.towers:
        attn = getattr(vit.blocks[0], "attn", None)
        if hasattr(attn, "head_dim") and hasattr(attn, "num_heads"):
            shapes.append((attn.num_heads, vit.patch_embed.num_patches + vit.num_prefix_tokens, attn.head_dim))
    return shapes


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    output: OpenVLAOFTOutput


class FastInference:
    """Compiled regions and per-shape CUDA graphs for an `OpenVLAOFTForActionPrediction`.

    Made by `model.enable_fast_inference(...)`; see there for the arguments.
    """

    def __init__(self, model: torch.nn.Module, compile: bool = True, cuda_graphs: bool | None = None,
                 mode: str | None = None, max_graphs: int = 8, fullgraph: bool = False, backend: str = "inductor",
                 warmup: int = 2, fuse_projections: bool = True, cudnn_attention: bool | None = None,
                 fp8: bool = False, fp8_vision: bool = False):
        on_cuda = model.device.type == "cuda"
        if fp8_vision and not fp8:
            raise ValueError("fp8_vision=True quantizes the ViT blocks in addition to the Llama layers: "
                             "it needs fp8=True")
        if fp8:
            check_fp8_device(model.device, model.dtype)
        if cuda_graphs is None:
            cuda_graphs = on_cuda
        if cuda_graphs and not on_cuda:
            raise ValueError(f"CUDA graphs need the model on a CUDA device; it is on {model.device}. "
                             "Move it first or pass cuda_graphs=False")
        if cuda_graphs and mode is not None and "reduce-overhead" in mode:
            raise ValueError("mode='reduce-overhead' makes torch.compile capture its own CUDA graphs per region; "
                             "use it with cuda_graphs=False, or keep the whole-forward graphs with mode=None")
        if cudnn_attention is None:
            cudnn_attention = on_cuda
        if cudnn_attention and not (on_cuda and _supports_attention_priority()
                                    and cudnn_attention_agrees(model.device, model.dtype, _attention_shapes(model))):
            cudnn_attention = False
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.fuse_projections = fuse_projections
        self.cudnn_attention = cudnn_attention
        self._compile_args = (mode, fullgraph, backend)
        self._set_regions()
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._pool: Any = None
        # FP8 replaces the layers' weights (no bfloat16 copies are kept) until `close()`
        self._fp8 = FP8Layers(model, vision=fp8_vision, fuse=fuse_projections) if fp8 else None
        self._fused: FusedProjections | None = (FusedProjections(model) if fuse_projections and not fp8
                                                else None)

    def _set_regions(self) -> None:
        self.block_fn, self.layer_fn = (compiled_regions(*self._compile_args, cudnn_attention=self.cudnn_attention)
                                        if self.compile else (run_vit_block, run_llama_layer))

    @staticmethod
    def applies(model: torch.nn.Module) -> bool:
        """Inference only: no gradients, eval mode (dropout and checkpointing never matter then)."""
        return not torch.is_grad_enabled() and not model.training

    def clear(self) -> None:
        """Drop the captured graphs (and with them their memory pool) and the fused weights (rebuilt at
        the next call from the model's layers as they are then)."""
        self._graphs.clear()
        self._pool = None
        self._fused = None

    def close(self) -> None:
        """`clear()`, and FP8 layers back to `nn.Linear` with their dequantized weights (see `FP8Layers`)."""
        self.clear()
        if self._fp8 is not None:
            self._fp8.restore()
            self._fp8 = None

    @property
    def fp8(self) -> bool:
        return self._fp8 is not None

    def fused_layers(self, model: Any) -> list[tuple[FusedLinear | None, FusedLinear | None]] | None:
        """The fused projections, brought up to date with the model's weights (see `FusedProjections`);
        with FP8 the fused FP8 weights (updated in place by `load_state_dict`, see `fp8.Float8Linear`)."""
        if not self.fuse_projections:
            return None
        if self._fp8 is not None:
            return self._fp8.layers
        if self._fused is not None and not self._fused.sync():
            logger.info("weights were replaced: rebuilding the fused projections and dropping the CUDA graphs")
            self.clear()
        if self._fused is None:
            self._fused = FusedProjections(model)
        return self._fused.layers

    def _attention(self, model: Any, padded: bool) -> contextlib.AbstractContextManager:
        # cuDNN only for mask-free attention (no padding, bidirectional): its masked paths are not needed
        if self.cudnn_attention and not padded and not model.config.causal_attention:
            return _prefer_cudnn_attention()
        return contextlib.nullcontext()

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, model: Any, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None, proprio: torch.Tensor | None, padded: bool) -> OpenVLAOFTOutput:
        fused = self.fused_layers(model)
        try:
            with self._attention(model, padded):
                return self._run(model, pixel_values, input_ids, attention_mask, proprio, padded, fused)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as e:
            if not (self.cudnn_attention and not padded):
                raise
            # cuDNN is chosen per shape when a region is traced; a failure there must not end a rollout
            logger.warning("fast inference with cuDNN attention failed (%s: %s); continuing with flash attention",
                           type(e).__name__, e)
            self.cudnn_attention = False
            self._graphs.clear()
            self._pool = None
            self._set_regions()
            return self._run(model, pixel_values, input_ids, attention_mask, proprio, padded, fused)

    def _run(self, model: Any, pixel_values: torch.Tensor, input_ids: torch.Tensor,
             attention_mask: torch.Tensor | None, proprio: torch.Tensor | None, padded: bool,
             fused: list | None) -> OpenVLAOFTOutput:
        if not self.cuda_graphs:
            return model._forward(pixel_values, input_ids, attention_mask, proprio, padded,
                                  block_fn=self.block_fn, layer_fn=self.layer_fn, fused=fused)
        dev = model.device
        inputs = {"pixel_values": pixel_values.to(dev, model.dtype), "input_ids": input_ids.to(dev, torch.long),
                  "attention_mask": (attention_mask if attention_mask is not None else torch.ones_like(input_ids))
                  .to(dev, torch.long)}
        if proprio is not None:
            inputs["proprio"] = proprio.to(dev)
        key = (padded, _autocast_state(dev), *((k, tuple(v.shape), v.dtype) for k, v in inputs.items()))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(model, inputs, padded, fused)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            for name, x in inputs.items():
                entry.inputs[name].copy_(x, non_blocking=True)
        entry.graph.replay()
        out = entry.output
        return OpenVLAOFTOutput(out.action_logits.clone(), None if out.values is None else out.values.clone())

    def _capture(self, model: Any, inputs: dict[str, torch.Tensor], padded: bool, fused: list | None) -> _Graph:
        static = {k: v.clone() for k, v in inputs.items()}

        def run() -> OpenVLAOFTOutput:
            return model._forward(static["pixel_values"], static["input_ids"], static["attention_mask"],
                                  static.get("proprio"), padded, block_fn=self.block_fn, layer_fn=self.layer_fn,
                                  fused=fused)

        # Warm up on a side stream (compiles the regions, lets kernels pick their configurations)
        # so that the capture records only kernel launches.
        stream = torch.cuda.Stream(device=model.device)
        stream.wait_stream(torch.cuda.current_stream(model.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                run()
        torch.cuda.current_stream(model.device).wait_stream(stream)
        torch.cuda.synchronize(model.device)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # One memory pool for all shapes: replays run one at a time on one stream and their outputs
        # stay allocated, so the graphs can share the space of their intermediate tensors.
        with torch.cuda.graph(graph, pool=self._pool):
            output = run()
        logger.info("captured a CUDA graph for input shapes %s (padded=%s)",
                    {k: tuple(v.shape) for k, v in static.items()}, padded)
        return _Graph(graph, static, output)
