"""Where the time of one OpenVLA-OFT chunk goes: GPU kernel time by kind, and achieved TFLOP/s.

Runs the fast-inference forward pass (compiled regions, fused projections, no CUDA graphs so that the
profiler sees every kernel) of a preset at one batch size under `torch.profiler`, and prints:

- the share of GPU time in GEMMs, attention, compiled (Triton) element-wise kernels and the rest;
- the same for the vision towers alone (ViT blocks), so the Llama part is the difference;
- the GEMM FLOPs of the pass counted from the linear layers' shapes, and the TFLOP/s they ran at;
- the top kernels by total time.

    python benchmarks/profile_policy.py                      # 7.5b, batch 32 (CUDA)
    python benchmarks/profile_policy.py --preset small --batch 8

It answers "is the forward pass compute-bound, and where would more speed come from?" for issue 4.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from vla_policies.openvla_oft import OpenVLAOFTConfig, OpenVLAOFTProcessor, build_model  # noqa: E402

KINDS = (("gemm", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "wgmma")),
         ("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
         ("compiled elementwise", ("triton",)))


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def linear_flops(model: nn.Module, run) -> tuple[float, float]:
    """GEMM FLOPs of one call of `run`, counted by hooks on every nn.Linear: (vision, rest)."""
    counts = {"vision": 0.0, "rest": 0.0}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            part = "vision" if name.startswith("vision_backbone") else "rest"

            def hook(m, inp, out, part=part):
                counts[part] += 2.0 * inp[0].numel() / inp[0].shape[-1] * m.in_features * m.out_features
            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return counts["vision"], counts["rest"]


def kernel_times(run, repeats: int) -> tuple[dict[str, float], dict[str, tuple[float, int]]]:
    """GPU time per kernel kind and per kernel name (ms per call) of `run`, under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            run()
        torch.cuda.synchronize()
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            ms = e.device_time / 1000.0 / repeats
            by_kind[kind_of(e.name)] += ms
            by_name[e.name][0] += ms
            by_name[e.name][1] += 1
    return dict(by_kind), {k: (v[0], v[1] // repeats) for k, v in by_name.items()}


def cuda_ms(run, repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        run()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="7.5b")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_policy.py needs a CUDA device (it profiles GPU kernels)")
    dev, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    config = OpenVLAOFTConfig.from_preset(args.preset)
    model = build_model(config, device=dev, torch_dtype=dtype).eval()
    processor = OpenVLAOFTProcessor.from_config(config)
    images = torch.randint(0, 256, (args.batch, config.num_images_in_input, 3, 224, 224), dtype=torch.uint8)
    inputs = processor(["put the apple on the plate"] * args.batch, images.to(dev), dtype=dtype)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    if config.use_proprio:
        inputs["proprio"] = torch.zeros(args.batch, config.proprio_dim, device=dev)
    vision_flops, rest_flops = linear_flops(model, lambda: model(**inputs))
    model.enable_fast_inference(compile=True, cuda_graphs=False)
    fast = model._fast_inference
    pixel = inputs["pixel_values"].to(dtype)

    def whole():
        with torch.no_grad():
            model(**inputs)

    def vision():
        with torch.no_grad():
            model.vision_backbone(pixel, fast.block_fn)

    for _ in range(3):  # compile and warm up
        whole()
        vision()
    t_whole, t_vision = cuda_ms(whole, args.repeats), cuda_ms(vision, args.repeats)
    kinds, names = kernel_times(whole, args.repeats)
    vkinds, _ = kernel_times(vision, args.repeats)
    gpu = sum(kinds.values())
    print(f"{args.preset} batch {args.batch} on {torch.cuda.get_device_name()}: fast-inference forward "
          f"(compiled, no CUDA graphs) {t_whole:.1f} ms wall, {gpu:.1f} ms of GPU kernels; "
          f"vision towers alone {t_vision:.1f} ms")
    print(f"{'kind':<22}{'whole ms':>10}{'share':>8}{'vision ms':>11}{'rest ms':>9}")
    for kind in [k for k, _ in KINDS] + ["other"]:
        w, v = kinds.get(kind, 0.0), vkinds.get(kind, 0.0)
        print(f"{kind:<22}{w:>10.1f}{w / gpu:>8.1%}{v:>11.1f}{w - v:>9.1f}")
    g_all, g_vis = kinds.get("gemm", 0.0), vkinds.get("gemm", 0.0)
    print(f"GEMM FLOPs per call: vision {vision_flops / 1e12:.1f} T, projector+Llama+heads {rest_flops / 1e12:.1f} T; "
          f"achieved: vision {vision_flops / max(g_vis, 1e-9) / 1e9:.0f} TFLOP/s, rest "
          f"{rest_flops / max(g_all - g_vis, 1e-9) / 1e9:.0f} TFLOP/s, all "
          f"{(vision_flops + rest_flops) / max(g_all, 1e-9) / 1e9:.0f} TFLOP/s of GEMM time; "
          f"{(vision_flops + rest_flops) / t_whole / 1e9:.0f} TFLOP/s of wall time")
    print(f"top {args.top} kernels (ms per call, launches per call):")
    for name, (ms, n) in sorted(names.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"  {ms:8.2f} {n:5d}  {kind_of(name):<20} {name[:110]}")


if __name__ == "__main__":
    main()
