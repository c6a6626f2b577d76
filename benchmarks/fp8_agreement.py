"""How much FP8 inference changes a trained policy's actions: bfloat16 vs `enable_fast_inference(fp8=True)`.

`policy_throughput.py` measures FP8's precision cost on random weights, where logits are nearly flat
and any perturbation flips the argmax. This script measures it where it matters: a trained
checkpoint (e.g. the SFT stage's `model/`) on frames of the demonstrations it was trained on. For
the same inputs it prints the share of equal greedy action tokens, how many bins the unequal ones
move (median, p90, max), the largest change of a de-normalised action per part, and the relative
L2 difference of the logits.

    python benchmarks/fp8_agreement.py runs/learning/sft/model --demos runs/learning/demos --frames 512

Needs CUDA with compute capability >= 8.9 (FP8 GEMMs); bfloat16 weights.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_path", help="a released-layout checkpoint folder (the SFT stage's model/)")
    ap.add_argument("--demos", nargs="+", required=True, help="HDF5 demo files or folders (frames to run on)")
    ap.add_argument("--frames", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--episodes-per-task", type=int, default=8,
                    help="demo episodes read per task (the frames come from these)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda", help="cuda (FP8 GEMMs need compute capability >= 8.9); cpu for a "
                    "smoke run where this torch's CPU `_scaled_mm` takes float8")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fp8_agreement: no CUDA GPU here (FP8 GEMMs need compute capability >= 8.9); --device cpu "
                         "runs it on the CPU where torch allows")

    import gymnasium as gym

    from algorithms.sft import load_demos
    from behavior_gym.spaces import ACTION_HIGH, ACTION_LOW, ACTION_PART, observation_space
    from behavior_gym.wrappers.sb3 import sb3_observation_space
    from vla_policies import OpenVLAOFTPolicy
    from vla_policies.openvla_oft import OpenVLAOFTConfig
    from vla_policies.sb3_policy import make_lr_schedule

    demos = load_demos(a.demos, chunk=8, max_episodes_per_task=a.episodes_per_task)
    rng = np.random.default_rng(a.seed)
    idx = np.sort(rng.choice(len(demos), size=min(a.frames, len(demos)), replace=False))
    k = OpenVLAOFTConfig.from_pretrained(a.model_path).num_action_chunks
    action_space = gym.spaces.Box(np.tile(ACTION_LOW, k), np.tile(ACTION_HIGH, k), dtype=np.float32)
    policy = OpenVLAOFTPolicy(sb3_observation_space(observation_space(demos.head.shape[-1])), action_space,
                              make_lr_schedule(0.0), model_path=a.model_path, model_device=dev).to(dev)
    policy.set_training_mode(False)
    model = policy.model

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, bins, acts = [], [], []
        for s in range(0, len(idx), a.batch):
            i = idx[s:s + a.batch]
            head = torch.from_numpy(demos.head[i]).to(dev)
            wrist = torch.from_numpy(demos.wrist[i]).to(dev)
            batch = {"head_rgb": head, "wrist_rgb": wrist, "proprio": torch.from_numpy(demos.proprio[i]).to(dev),
                     "instruction": [demos.instructions[k] for k in demos.instruction[i]]}
            with torch.no_grad():
                dist = policy.get_distribution(batch)
                mode = dist.mode()
                logits.append(dist.logits.float().cpu())
                bins.append(mode.cpu())
                acts.append(policy._bins_to_actions(mode).float().cpu())
        return torch.cat(logits), torch.cat(bins), torch.cat(acts)

    ref_logits, ref_bins, ref_act = run()
    model.enable_fast_inference(compile=False, cuda_graphs=False, fp8=True)
    fp8_logits, fp8_bins, fp8_act = run()
    live = ~policy._collapsed.cpu()
    d = (fp8_bins - ref_bins).abs()[:, live]
    moved = d[d > 0].float()
    rel = float((fp8_logits - ref_logits).norm() / ref_logits.norm())
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"{a.model_path}: {len(idx)} frames, {int(live.sum())} live action tokens each ({where})")
    share = {n: float((d <= n).float().mean()) for n in (0, 1, 2)}
    print(f"greedy tokens equal: {share[0]:.4f}; within 1 bin: {share[1]:.4f}; within 2 bins: {share[2]:.4f}")
    if len(moved):
        print(f"moved tokens: median {moved.median():.0f} bins, p90 {moved.quantile(0.9):.0f}, max {moved.max():.0f}")
    print(f"logits: relative L2 difference {rel:.4f} (|fp8 - bf16| / |bf16| over all action logits)")
    k = ref_act.shape[-1] // 23
    diff = (fp8_act - ref_act).abs().view(len(idx), k, 23)
    print("largest action change per part: " + ", ".join(
        f"{name} {float(diff[:, :, part.slice].max()):.4f}" for name, part in ACTION_PART.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
