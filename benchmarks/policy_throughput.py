"""Latency and throughput of OpenVLA-OFT action chunks, eager and with fast inference.

One chunk = one parallel-decoding forward pass over 3 images x 256 patches + the prompt + 23 x 8
placeholders, then greedy action tokens and de-normalised actions (everything on the device,
synchronised). For each preset and batch size, and for each variant:

  eager          the plain forward pass;
  graphs         the forward pass captured as one CUDA graph per input shape (CUDA only);
  compiled       `torch.compile`d ViT blocks and Llama layers, plus the CUDA graphs on CUDA;
  compiled-base  compiled without fused q/k/v and gate/up projections and without preferring cuDNN
                 attention (the earlier fast path, for comparison in the same run);
  compiled-fp8   compiled with the Llama layers' projections as FP8 GEMMs (`fp8=True`: float8_e4m3fn
                 weights and per-token activations, rowwise scales; CUDA compute capability >= 8.9);
  compiled-fp8-vit  the same with the ViT blocks' linears in FP8 too (`fp8_vision=True`);

it prints the median latency per chunk over `--repeats` timed calls after `--warmup` calls (p90 too),
actions/s (batch x 8 / latency), peak GPU memory, the time of the first call (compilation and
capture), and for the fast variants the largest logit difference from eager on the same inputs and
the share of equal greedy tokens (for the FP8 variants: the accuracy cost of FP8). Then (CUDA) the
peak memory and time of a LoRA training step (rank 32, gradient checkpointing, micro-batch 4).
Weights are random and built directly in the working dtype on the device (bfloat16 on CUDA: the
7.5B model never exists in float32).

    python benchmarks/policy_throughput.py              # CUDA: 7.5b and small; CPU: tiny
    python benchmarks/policy_throughput.py --quick      # fewer repeats, no extra checks
    python benchmarks/policy_throughput.py --presets 7.5b --batch-sizes 1 32 --variants eager compiled
    python benchmarks/policy_throughput.py --params-only --presets tiny small 7.5b   # parameter counts
    python benchmarks/policy_throughput.py --targets-only   # 7.5b, batch 1 and 32: eager, compiled-base, compiled,
                                                            # compiled-fp8, compiled-fp8-vit

Targets (issue 4, 7.5b on one H100, bf16): <= 30 ms per chunk at batch 1, >= 350 actions/s at batch 32.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from vla_policies.openvla_oft import (  # noqa: E402
    OpenVLAOFTConfig,
    OpenVLAOFTForActionPrediction,
    OpenVLAOFTProcessor,
    build_model,
)

INSTRUCTION = "turn on the radio receiver that's on the table in the living room"
OTHER_INSTRUCTIONS = ["go", "pick up the red cup", "open the top drawer of the kitchen cabinet and put the spoon in it"]
TARGET_MS_BATCH_1 = 30.0
TARGET_ACTIONS_BATCH_32 = 350.0
# fast variants must give eager's logits up to bf16 rounding through the network: a relative bound
RELATIVE_LOGIT_TOLERANCE = 5e-2
# FP8 variants round weights and activations to 3 mantissa bits: a bound on gross errors only
FP8_RELATIVE_LOGIT_TOLERANCE = 0.3
VARIANTS = ["eager", "graphs", "compiled", "compiled-base", "compiled-fp8", "compiled-fp8-vit"]


@dataclass
class Row:
    preset: str
    variant: str
    batch: int
    median_ms: float = math.nan
    p90_ms: float = math.nan
    actions_per_s: float = math.nan
    peak_gb: float = math.nan
    first_call_s: float = math.nan
    max_logit_diff: float = math.nan
    rel_logit_diff: float = math.nan
    greedy_equal: float = math.nan
    note: str = ""


HEADER = (f"{'preset':>6} {'variant':>16} {'batch':>5} {'ms/chunk':>9} {'p90':>8} {'actions/s':>10} {'peak GB':>8} "
          f"{'1st call s':>10} {'max|dlogit|':>11} {'rel':>7} {'greedy=':>7}  note")


def format_row(r: Row) -> str:
    def f(x, spec):
        return format(x, spec) if not math.isnan(x) else "-".rjust(int(spec.split(".")[0].lstrip(">") or 1))

    return (f"{r.preset:>6} {r.variant:>16} {r.batch:>5} {f(r.median_ms, '>9.1f')} {f(r.p90_ms, '>8.1f')} "
            f"{f(r.actions_per_s, '>10.1f')} {f(r.peak_gb, '>8.2f')} {f(r.first_call_s, '>10.1f')} "
            f"{f(r.max_logit_diff, '>11.4f')} {f(r.rel_logit_diff, '>7.4f')} {f(r.greedy_equal, '>7.3f')}  {r.note}")


def count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def describe_params(model: OpenVLAOFTForActionPrediction) -> str:
    parts = {"vision": model.vision_backbone, "projector": model.projector, "llm": model.language_model,
             "value_head": model.value_head}
    detail = ", ".join(f"{k} {count(v) / 1e6:,.1f}M" for k, v in parts.items())
    return f"{model.num_parameters() / 1e6:,.1f}M ({detail})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def make_inputs(model, processor, batch: int, instructions: list[str] | None, device, dtype) -> dict:
    # the same generator for every batch size: row i holds the same images at any batch size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, model.config.num_images_in_input, 3, 224, 224), generator=g,
                           dtype=torch.uint8).to(device)
    texts = instructions or [INSTRUCTION] * batch
    return processor([texts[i % len(texts)] for i in range(batch)], images, dtype=dtype)


def replaced_weights(model) -> dict[str, torch.Tensor]:
    """CPU copies of the weights that FP8 replaces (Llama layers, ViT blocks): FP8 frees the originals
    and `disable_fast_inference` gives back FP8-rounded ones, so later variants get these back."""
    return {k: v.to("cpu", copy=True) for k, v in model.state_dict().items() if ".layers." in k or ".blocks." in k}


def to_eager(model, originals: dict[str, torch.Tensor] | None) -> None:
    fp8 = getattr(model._fast_inference, "fp8", False)
    model.disable_fast_inference()
    if fp8:
        model.load_state_dict(originals, strict=False)


def configure(model, variant: str, compile_mode: str | None, originals: dict[str, torch.Tensor] | None) -> None:
    to_eager(model, originals)
    if variant == "graphs":
        model.enable_fast_inference(compile=False, cuda_graphs=True)
    elif variant == "compiled":
        model.enable_fast_inference(compile=True, mode=compile_mode)
    elif variant == "compiled-base":
        model.enable_fast_inference(compile=True, mode=compile_mode, fuse_projections=False, cudnn_attention=False)
    elif variant in ("compiled-fp8", "compiled-fp8-vit"):
        model.enable_fast_inference(compile=True, mode=compile_mode, fp8=True, fp8_vision=variant.endswith("-vit"))


def compare(row: Row, logits: torch.Tensor, reference: torch.Tensor) -> None:
    tolerance = FP8_RELATIVE_LOGIT_TOLERANCE if "fp8" in row.variant else RELATIVE_LOGIT_TOLERANCE
    ref = reference.to(logits.device).float()
    diff = (logits.float() - ref).abs().max().item()
    row.max_logit_diff = diff
    row.rel_logit_diff = diff / max(ref.abs().max().item(), 1e-6)
    row.greedy_equal = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
    if not row.rel_logit_diff <= tolerance:
        row.note += f"MISMATCH vs eager (rel {row.rel_logit_diff:.3g} > {tolerance}) "


def batch_noise(row_logits: torch.Tensor, reference: torch.Tensor) -> str:
    """How much row 0 (the same observation) differs from its result at the smallest batch size (eager):
    float rounding that depends on the batch shape, the scale against which fast variants are judged."""
    greedy = reference.argmax(-1)
    logp = [torch.log_softmax(x.float(), -1).gather(-1, greedy[:, None]).sum().item() for x in (row_logits, reference)]
    return (f"row 0 vs smallest batch: max|dlogit| {(row_logits - reference).abs().max().item():.4f}, "
            f"|d sum log-prob| {abs(logp[0] - logp[1]):.4f} ")


def measure(model, normalizer, inputs: dict, row: Row, args, device) -> torch.Tensor:
    """Time one chunk (forward, greedy tokens, de-normalised actions); returns the logits of the first call."""
    cfg = model.config

    def chunk():
        out = model(**inputs)
        bins = out.action_logits.argmax(-1)
        actions = normalizer.unnormalize(model.action_tokenizer.decode_bins(bins))
        return out, actions.view(-1, cfg.num_action_chunks, cfg.action_dim)

    reset_peak(device)
    with torch.no_grad():
        sync(device)
        start = time.perf_counter()
        first, _ = chunk()
        sync(device)
        row.first_call_s = time.perf_counter() - start
        for _ in range(args.warmup):
            chunk()
        times = []
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            chunk()
            sync(device)
            times.append(time.perf_counter() - start)
    row.median_ms = statistics.median(times) * 1e3
    row.p90_ms = sorted(times)[max(0, math.ceil(0.9 * len(times)) - 1)] * 1e3
    row.actions_per_s = row.batch * cfg.num_action_chunks / (row.median_ms / 1e3)
    row.peak_gb = peak_gb(device)
    return first.action_logits


def padded_check(model, processor, eager_logits, row: Row, device, dtype) -> None:
    """Prompts of different lengths (a key-padding mask) through the fast path, against eager."""
    inputs = make_inputs(model, processor, len(OTHER_INSTRUCTIONS), OTHER_INSTRUCTIONS, device, dtype)
    with torch.no_grad():
        compare(row, model(**inputs).action_logits, eager_logits)


def lora_step(model, processor, args, device, dtype) -> str:
    """Peak memory and time of a LoRA PPO-style step: forward, loss, backward, AdamW, micro-batch `--lora-batch`."""
    from vla_policies.openvla_oft import ActionTokenDistribution

    model.disable_fast_inference()
    model.add_lora(rank=args.lora_rank)
    model.enable_gradient_checkpointing()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    inputs = make_inputs(model, processor, args.lora_batch, None, device, dtype)
    reset_peak(device)
    times = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        out = model(**inputs)
        dist = ActionTokenDistribution(out.action_logits)
        bins = dist.sample()
        loss = -dist.log_prob(bins).sum(-1).mean() + out.values.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    trainable = model.num_parameters(only_trainable=True)
    model.eval()
    return (f"LoRA step (rank {args.lora_rank}, {trainable / 1e6:.1f}M trainable, gradient checkpointing, "
            f"micro-batch {args.lora_batch}): {min(times[1:]) * 1e3:.0f} ms"
            + (f", peak {peak_gb(device):.1f} GB" if device.type == "cuda" else ""))


def bench_preset(name: str, args, device, dtype, rows: list[Row], notes: list[str]) -> None:
    config = OpenVLAOFTConfig.from_preset(name)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(config, device=device, torch_dtype=dtype).eval()
    print(f"\n{name}: {describe_params(model)}, built in {time.perf_counter() - start:.1f} s on {device} "
          f"({str(dtype).removeprefix('torch.')}); sequence {model.num_image_tokens} image + prompt + "
          f"{config.num_action_tokens} action tokens", flush=True)
    processor = OpenVLAOFTProcessor.from_config(config)
    stats = {"random": {"action": {"q01": [-1.0] * config.action_dim, "q99": [1.0] * config.action_dim}}}
    normalizer = model.get_action_normalizer(norm_stats=stats)
    inputs = {b: make_inputs(model, processor, b, None, device, dtype) for b in args.batch_sizes}
    eager_logits: dict[int, torch.Tensor] = {}
    originals = None
    print(HEADER, flush=True)
    for variant in args.variants:
        try:
            if "fp8" in variant and originals is None:
                originals = replaced_weights(model)
            configure(model, variant, args.compile_mode, originals)
        except Exception as e:  # e.g. no CUDA for graphs
            print(f"{name:>6} {variant:>16}  skipped: {e}", flush=True)
            continue
        for b in args.batch_sizes:
            row = Row(name, variant, b)
            try:
                logits = measure(model, normalizer, inputs[b], row, args, device)
                if variant == "eager":
                    eager_logits[b] = logits.float().cpu()
                    if b != min(eager_logits):
                        row.note += batch_noise(eager_logits[b][0], eager_logits[min(eager_logits)][0])
                elif b in eager_logits:
                    compare(row, logits, eager_logits[b])
            except torch.OutOfMemoryError:
                row.note += "out of memory"
            except Exception as e:
                row.note += f"FAILED: {type(e).__name__}: {e}"
                traceback.print_exc(limit=6)
            rows.append(row)
            print(format_row(row), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if variant not in ("eager", "compiled-base") and not args.quick:
            row = Row(name, variant, len(OTHER_INSTRUCTIONS), note="padded prompts: correctness only")
            try:
                to_eager(model, originals)
                with torch.no_grad():
                    padded_eager = model(**make_inputs(model, processor, len(OTHER_INSTRUCTIONS), OTHER_INSTRUCTIONS,
                                                       device, dtype)).action_logits
                configure(model, variant, args.compile_mode, originals)
                padded_check(model, processor, padded_eager, row, device, dtype)
            except Exception as e:
                row.note += f" FAILED: {type(e).__name__}: {e}"
                traceback.print_exc(limit=6)
            rows.append(row)
            print(format_row(row), flush=True)
        to_eager(model, originals)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.lora_step:
        try:
            notes.append(f"{name}: {lora_step(model, processor, args, device, dtype)}")
        except torch.OutOfMemoryError:
            notes.append(f"{name}: LoRA step: out of memory")
        except Exception as e:
            notes.append(f"{name}: LoRA step FAILED: {type(e).__name__}: {e}")
            traceback.print_exc(limit=6)
        print(notes[-1], flush=True)
    del model, inputs, originals
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def targets(rows: list[Row]) -> list[str]:
    out = []
    for variant in dict.fromkeys(r.variant for r in rows if r.preset == "7.5b"):
        by_batch = {r.batch: r for r in rows if r.preset == "7.5b" and r.variant == variant and "padded" not in r.note}
        parts = []
        if 1 in by_batch and not math.isnan(by_batch[1].median_ms):
            ok = by_batch[1].median_ms <= TARGET_MS_BATCH_1
            parts.append(f"batch 1 {by_batch[1].median_ms:.1f} ms ({'meets' if ok else 'misses'} <= 30 ms)")
        if 32 in by_batch and not math.isnan(by_batch[32].actions_per_s):
            ok = by_batch[32].actions_per_s >= TARGET_ACTIONS_BATCH_32
            parts.append(f"batch 32 {by_batch[32].actions_per_s:.0f} actions/s "
                         f"({'meets' if ok else 'misses'} >= 350)")
        if parts:
            out.append(f"7.5b {variant}: " + "; ".join(parts))
    return out


def params_only(presets: list[str]) -> None:
    for name in presets:
        with torch.device("meta"):
            model = OpenVLAOFTForActionPrediction(OpenVLAOFTConfig.from_preset(name))
        print(f"{name:>5}  params {describe_params(model)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=None, help="default: 7.5b small on CUDA, tiny on CPU")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                        help="default: eager graphs compiled on CUDA, eager compiled on CPU")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), bfloat16, float32")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 10, --quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls after the first (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats; no padded-prompt check, no LoRA step")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: inductor's default)")
    parser.add_argument("--lora-step", action=argparse.BooleanOptionalAction, default=None,
                        help="time a LoRA training step after the chunks (default: on CUDA, not with --quick)")
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--lora-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--params-only", action="store_true", help="print parameter counts (meta build) and exit")
    parser.add_argument("--targets-only", action="store_true",
                        help="only what the targets need: 7.5b at batch 1 and 32, variants eager compiled-base "
                             "compiled compiled-fp8 compiled-fp8-vit, no LoRA step (explicit "
                             "--presets/--batch-sizes/--variants still win)")
    args = parser.parse_args()
    if args.targets_only:
        args.presets = args.presets or ["7.5b"]
        args.batch_sizes = args.batch_sizes if "--batch-sizes" in sys.argv else [1, 32]
        args.variants = args.variants or ["eager", "compiled-base", "compiled", "compiled-fp8", "compiled-fp8-vit"]
        args.lora_step = False if args.lora_step is None else args.lora_step

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.params_only:
        params_only(args.presets or ["tiny", "small", "7.5b"])
        return
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    on_cuda = device.type == "cuda"
    dtype = (torch.bfloat16 if on_cuda else torch.float32) if args.dtype == "auto" else getattr(torch, args.dtype)
    args.presets = args.presets or (["7.5b", "small"] if on_cuda else ["tiny"])
    args.variants = args.variants or (["eager", "graphs", "compiled"] if on_cuda else ["eager", "compiled"])
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.lora_step is None:
        args.lora_step = on_cuda and not args.quick
    if on_cuda:
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    import timm
    import transformers

    print(f"OpenVLA-OFT chunks (3 images, 8 x 23 action tokens) on {where}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, timm {timm.__version__}; median of {args.repeats} after "
          f"{args.warmup} warm-up calls", flush=True)
    start = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    for name in args.presets:
        bench_preset(name, args, device, dtype, rows, notes)
    print(f"\nSummary ({time.perf_counter() - start:.0f} s):")
    print(HEADER)
    for r in rows:
        print(format_row(r))
    for line in notes + targets(rows):
        print(line)


if __name__ == "__main__":
    main()
