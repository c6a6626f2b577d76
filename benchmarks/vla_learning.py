"""Can an OpenVLA-OFT preset learn? Supervised action tokens that depend on instruction, image and position.

Each sample has one of three instructions and a dark or bright head camera (random images otherwise);
the target bin of action token n (step k, dimension d = n mod 23) is
`(60 * instruction + 2 * d + 30 * bright) mod 256`, so the model must read the prompt, look at the
image and tell the 184 parallel-decoded positions apart. Prints loss and token accuracy during
training and the greedy accuracy on fresh samples per (instruction, brightness).

    python benchmarks/vla_learning.py                        # "small" on a CUDA GPU (about a minute on an H100)
    python benchmarks/vla_learning.py --preset tiny --steps 200 --batch-size 6   # a slow CPU run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEXTS = ["pick up the red cup", "open the top drawer of the kitchen cabinet", "stack the blocks"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from vla_policies.openvla_oft import OpenVLAOFTConfig, build_model
    from vla_policies.openvla_oft.processing_openvla_oft import OpenVLAOFTProcessor

    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.manual_seed(0)
    cfg = OpenVLAOFTConfig.from_preset(args.preset)
    model = build_model(cfg, device=dev).train()
    proc = OpenVLAOFTProcessor.from_config(cfg)
    dim = torch.arange(cfg.num_action_tokens, device=dev) % cfg.action_dim
    print(f"{args.preset}: {model.num_parameters() / 1e6:.1f}M parameters on {dev}")

    def batch(n: int):
        inst = torch.randint(0, len(TEXTS), (n,), device=dev)
        bright = torch.randint(0, 2, (n,), device=dev)
        images = torch.randint(0, 128, (n, cfg.num_images_in_input, 3, 224, 224), device=dev, dtype=torch.uint8)
        images[:, 0] += (bright * 127).to(torch.uint8)[:, None, None, None]
        target = (inst[:, None] * 60 + dim[None] * 2 + 30 * bright[:, None]) % cfg.n_action_bins
        return proc([TEXTS[i] for i in inst.tolist()], images), target, inst, bright

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        inputs, target, _, _ = batch(args.batch_size)
        with autocast:
            logits = model(**inputs).action_logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, args.steps // 8) == 0:
            acc = (logits.argmax(-1) == target).float().mean().item()
            elapsed = time.perf_counter() - start
            print(f"step {step:5d}  loss {loss.item():.3f}  token accuracy {acc:.3f}  {elapsed:.0f} s", flush=True)
    model.eval()
    with torch.no_grad(), autocast:
        inputs, target, inst, bright = batch(4 * args.batch_size)
        acc = (model(**inputs).action_logits.argmax(-1) == target).float().mean(-1)
    groups = {f"instruction {i}, {'bright' if b else 'dark'}": round(acc[(inst == i) & (bright == b)].mean().item(), 3)
              for i in range(len(TEXTS)) for b in range(2)}
    print(f"fresh samples, greedy token accuracy {acc.mean().item():.3f}: {groups}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
