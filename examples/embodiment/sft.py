"""Supervised fine-tuning (behaviour cloning) of OpenVLA-OFT on expert demonstrations.

    python examples/embodiment/sft.py --config-name sft_openvlaoft_embedded [key=value ...]

Resumable: a rerun with the same `out_dir` continues from `out_dir/sft_state.pt` (use
`train.max_minutes` to cut a long run into pieces). At the end `out_dir/model/` is a released-layout
OpenVLA-OFT checkpoint with the demonstrations' norm_stats under `behavior_embedded`; the RL configs
load it with `actor.model.model_path=<out_dir>/model actor.model.unnorm_key=behavior_embedded`.
TensorBoard: `tensorboard --logdir <out_dir>` (sft/loss, sft/token_accuracy).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import hydra
from omegaconf import DictConfig

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.join(os.path.dirname(__file__), "..", "..")]
from stage_utils import fail, typed_config  # noqa: E402

from algorithms.sft import SFTConfig  # noqa: E402


@dataclass
class SFTModelConfig:
    preset: str = "small-p28"
    use_proprio: bool = True
    num_action_chunks: int = 8
    image_size: int = 224  # env image size the policy reads


@dataclass
class SFTRunConfig:
    demos: list[str] = field(default_factory=lambda: ["data/demos"])
    tasks: list[str] | None = None  # None: every task in the demonstrations
    frame_stride: int = 1
    max_episodes_per_task: int | None = None
    load_workers: int = 1  # processes reading the HDF5 files
    cache_demos: bool = True  # keep decoded samples in <out_dir>/demo_cache: resumed pieces start in seconds
    model: SFTModelConfig = field(default_factory=SFTModelConfig)
    train: SFTConfig = field(default_factory=SFTConfig)
    out_dir: str = "runs/sft"
    device: str = "auto"


@hydra.main(version_base="1.3", config_path="config", config_name="sft_openvlaoft_embedded")
def main(cfg: DictConfig) -> None:
    import logging

    import torch

    from algorithms.sft import load_demos, sft_policy, train_sft

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    c = typed_config(cfg, SFTRunConfig, "sft")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if c.device == "auto" else c.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("sft", "device", f"{device!r} was asked for but CUDA is not available; use device=cpu or auto")
    try:
        demos = load_demos(c.demos, chunk=c.model.num_action_chunks, frame_stride=c.frame_stride, tasks=c.tasks,
                           max_episodes_per_task=c.max_episodes_per_task, workers=c.load_workers,
                           cache_dir=os.path.join(c.out_dir, "demo_cache") if c.cache_demos else None)
    except (FileNotFoundError, ValueError) as e:
        fail("sft", "demos", str(e))
    print(f"{demos.episodes} episodes, {len(demos)} samples ({demos.nbytes / 2**30:.2f} GiB) of {demos.tasks}")
    torch.manual_seed(c.train.seed)
    policy = sft_policy(demos, preset=c.model.preset, device=device, use_proprio=c.model.use_proprio,
                        image_size=c.model.image_size)
    n = sum(p.numel() for p in policy.parameters())
    print(f"OpenVLA-OFT preset {c.model.preset}: {n / 1e6:.1f}M parameters on {device}")
    summary = train_sft(policy, demos, c.train, c.out_dir)
    with open(os.path.join(c.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
