"""Latency of one OpenVLA-OFT action chunk, and parameter counts, per model size.

For each preset it prints the parameter count (vision towers, projector, Llama, value head), then the
median wall time of
  - `forward`: one parallel-decoding pass (3 images x 256 patches + prompt + 23 x 8 placeholders)
    from preprocessed inputs to action logits and values;
  - `step`: what a rollout does per chunk: image preprocessing and prompt tokenisation (cached),
    the forward pass, sampling 184 tokens and de-normalising them;
at batch 1 and batch 8. Weights are random (no download). "7.5b" is run only on a CUDA GPU, in
bfloat16; on a CPU its parameter count comes from a meta-device build.

    python benchmarks/vla_latency.py                      # tiny and small on this machine
    python benchmarks/vla_latency.py --presets tiny small 7.5b --device cuda
    python benchmarks/vla_latency.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def describe_params(model) -> str:
    parts = {"vision": model.vision_backbone, "projector": model.projector, "llm": model.language_model,
             "value_head": model.value_head}
    detail = ", ".join(f"{k} {count(v) / 1e6:,.1f}M" for k, v in parts.items())
    return f"{model.num_parameters() / 1e6:,.1f}M ({detail})"


def timed(fn, device, repeats: int, warmup: int) -> list[float]:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def bench_preset(name: str, device, dtype, batch_sizes, repeats: int, warmup: int) -> None:
    import torch

    from vla_policies.openvla_oft import OpenVLAOFTConfig, OpenVLAOFTForActionPrediction, build_model
    from vla_policies.openvla_oft.processing_openvla_oft import OpenVLAOFTProcessor

    config = OpenVLAOFTConfig.from_preset(name)
    if name == "7.5b" and device.type != "cuda":
        with torch.device("meta"):
            meta = OpenVLAOFTForActionPrediction(config)
        print(f"{name:>5}  params {describe_params(meta)}  (meta-device build; latency needs a CUDA GPU)")
        return
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(config, device=device, torch_dtype=dtype).eval()
    build_s = time.perf_counter() - start
    processor = OpenVLAOFTProcessor.from_config(config)
    norm_stats = {"random": {"action": {"q01": [-1.0] * config.action_dim, "q99": [1.0] * config.action_dim}}}
    normalizer = model.get_action_normalizer(norm_stats=norm_stats)
    print(f"{name:>5}  params {describe_params(model)}  built in {build_s:.1f} s on {device} ({dtype})")
    instruction = "turn on the radio receiver that's on the table in the living room"
    for b in batch_sizes:
        try:
            measure(model, processor, normalizer, b, instruction, device, dtype, repeats, warmup)
        except torch.OutOfMemoryError:
            print(f"       batch {b:>2}: out of memory")
            torch.cuda.empty_cache()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(model, processor, normalizer, b: int, instruction: str, device, dtype, repeats: int, warmup: int) -> None:
    import torch

    config = model.config
    g = torch.Generator().manual_seed(b)
    images = torch.randint(0, 256, (b, config.num_images_in_input, 3, 224, 224), generator=g,
                           dtype=torch.uint8).to(device)
    inputs = processor([instruction] * b, images, dtype=dtype)

    @torch.inference_mode()
    def forward():
        return model(**inputs)

    @torch.inference_mode()
    def step():
        x = processor([instruction] * b, images, dtype=dtype)
        out = model(**x)
        bins = model.action_distribution(out.action_logits, 1.0, 0, normalizer).sample()
        return normalizer.unnormalize(model.action_tokenizer.decode_bins(bins)), out.values

    fwd = timed(forward, device, repeats, warmup)
    stp = timed(step, device, repeats, warmup)
    med, p90 = statistics.median(fwd), sorted(fwd)[max(0, math.ceil(0.9 * len(fwd)) - 1)]
    step_med = statistics.median(stp)
    seq = inputs["input_ids"].shape[1] + model.num_image_tokens + config.num_action_tokens
    print(f"       batch {b:>2}: forward {med * 1e3:9.1f} ms (p90 {p90 * 1e3:.1f})  step {step_med * 1e3:9.1f} ms  "
          f"{b / step_med:8.2f} chunks/s  {b * config.num_action_chunks / step_med:8.1f} actions/s  "
          f"(sequence {seq} tokens)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "7.5b"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), bfloat16, float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = (torch.bfloat16 if device.type == "cuda" else torch.float32) if args.dtype == "auto" \
        else getattr(torch, args.dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    print(f"OpenVLA-OFT latency: one chunk of 8 x 23 actions from 3 images; {where}; torch {torch.__version__}")
    for name in args.presets:
        bench_preset(name, device, dtype, args.batch_sizes, args.repeats, args.warmup)


if __name__ == "__main__":
    main()
