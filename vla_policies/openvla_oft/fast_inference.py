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

Only calls without gradients in eval mode take this path; training runs the eager model.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from .modeling_openvla_oft import OpenVLAOFTOutput, run_llama_layer, run_vit_block

logger = logging.getLogger(__name__)

# Compiled regions are shared by all models of the process: Dynamo keys them by the function's code.
_COMPILED: dict[tuple, Any] = {}


def compiled_regions(mode: str | None = None, fullgraph: bool = False, backend: str = "inductor"
                     ) -> tuple[Any, Any]:
    """`torch.compile`d (`run_vit_block`, `run_llama_layer`) for these settings."""
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
                 warmup: int = 2):
        on_cuda = model.device.type == "cuda"
        if cuda_graphs is None:
            cuda_graphs = on_cuda
        if cuda_graphs and not on_cuda:
            raise ValueError(f"CUDA graphs need the model on a CUDA device; it is on {model.device}. "
                             "Move it first or pass cuda_graphs=False")
        if cuda_graphs and mode is not None and "reduce-overhead" in mode:
            raise ValueError("mode='reduce-overhead' makes torch.compile capture its own CUDA graphs per region; "
                             "use it with cuda_graphs=False, or keep the whole-forward graphs with mode=None")
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.block_fn, self.layer_fn = (compiled_regions(mode, fullgraph, backend) if compile
                                        else (run_vit_block, run_llama_layer))
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._pool: Any = None

    @staticmethod
    def applies(model: torch.nn.Module) -> bool:
        """Inference only: no gradients, eval mode (dropout and checkpointing never matter then)."""
        return not torch.is_grad_enabled() and not model.training

    def clear(self) -> None:
        """Drop the captured graphs (and with them their memory pool)."""
        self._graphs.clear()
        self._pool = None

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, model: Any, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None, proprio: torch.Tensor | None, padded: bool) -> OpenVLAOFTOutput:
        if not self.cuda_graphs:
            return model._forward(pixel_values, input_ids, attention_mask, proprio, padded,
                                  block_fn=self.block_fn, layer_fn=self.layer_fn)
        dev = model.device
        inputs = {"pixel_values": pixel_values.to(dev, model.dtype), "input_ids": input_ids.to(dev, torch.long),
                  "attention_mask": (attention_mask if attention_mask is not None else torch.ones_like(input_ids))
                  .to(dev, torch.long)}
        if proprio is not None:
            inputs["proprio"] = proprio.to(dev)
        key = (padded, _autocast_state(dev), *((k, tuple(v.shape), v.dtype) for k, v in inputs.items()))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(model, inputs, padded)
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

    def _capture(self, model: Any, inputs: dict[str, torch.Tensor], padded: bool) -> _Graph:
        static = {k: v.clone() for k, v in inputs.items()}

        def run() -> OpenVLAOFTOutput:
            return model._forward(static["pixel_values"], static["input_ids"], static["attention_mask"],
                                  static.get("proprio"), padded, block_fn=self.block_fn, layer_fn=self.layer_fn)

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
