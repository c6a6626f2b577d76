"""Training curves (PNG) from the TensorBoard logs of the learning pipeline.

    python examples/embodiment/plot_curves.py --logs runs/learning/logs --sft runs/learning/sft --out docs

Writes `learning_rl_curves.png` (success and mean chunk return against env steps, PPO and GRPO;
runs continued with `runner.resume_dir` are joined; a third panel splits success by task where the
runs logged `env/success_once/<task>`) and `learning_sft_curves.png` (SFT loss and
token accuracy against optimizer steps; with the auxiliary position loss also its error in cm).
"""

from __future__ import annotations

import argparse
import glob
import os
from collections import defaultdict

import yaml


def scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in `run_dir`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out[tag] += [(e.step, e.value) for e in acc.Scalars(tag)]
    return {k: sorted(dict(v).items()) for k, v in out.items()}


def rl_runs(logs: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Algorithm name -> joined scalars of its runs (x = env steps: chunk steps x chunk length)."""
    joined: dict[str, dict[str, dict[int, float]]] = {}
    for run in sorted(glob.glob(os.path.join(logs, "*-*"))):
        cfg_path = os.path.join(run, "config.yaml")
        if not os.path.exists(cfg_path):
            continue
        with open(cfg_path) as f:
            cfg = yaml.safe_load(f)
        name = "GRPO" if cfg["algorithm"]["adv_type"] == "grpo" else "PPO"
        k = int(cfg["actor"]["model"]["num_action_chunks"])
        for tag, points in scalars(run).items():
            joined.setdefault(name, {}).setdefault(tag, {}).update({s * k: v for s, v in points})
    return {n: {t: sorted(p.items()) for t, p in tags.items()} for n, tags in joined.items()}


def smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-window:]
        out.append(sum(acc) / len(acc))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logs", required=True, help="the RL runs' log_path")
    p.add_argument("--sft", default=None, help="the SFT out_dir")
    p.add_argument("--out", default="docs")
    p.add_argument("--smooth", type=int, default=5)
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    steps_fmt = EngFormatter(sep="")  # 200k, 1.2M: plain integers run into each other on the axis
    os.makedirs(a.out, exist_ok=True)
    runs = rl_runs(a.logs)
    if runs:
        prefix = "env/success_once/"
        tasks = sorted({t[len(prefix):] for tags in runs.values() for t in tags if t.startswith(prefix)})
        fig, axes = plt.subplots(1, 3 if tasks else 2, figsize=(16.5 if tasks else 11, 4))
        for ax, tag, label in ((axes[0], "env/success_once", "success (episodes ending in the rollout)"),
                               (axes[1], "rollout/returns_mean", "mean return per chunk")):
            for name, tags in sorted(runs.items()):
                if tag in tags:
                    xs, ys = zip(*tags[tag])
                    ax.plot(xs, smooth(list(ys), a.smooth), label=name)
            ax.set_xlabel("env steps")
            ax.xaxis.set_major_formatter(steps_fmt)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        if tasks:  # one colour per task, one line style per algorithm
            ax = axes[2]
            for (name, tags), style in zip(sorted(runs.items()), ("-", "--", ":", "-.")):
                for i, task in enumerate(tasks):
                    if prefix + task in tags:
                        xs, ys = zip(*tags[prefix + task])
                        ax.plot(xs, smooth(list(ys), a.smooth), style, color=f"C{i}", label=f"{name} {task}")
            ax.set_xlabel("env steps")
            ax.xaxis.set_major_formatter(steps_fmt)
            ax.set_ylabel("success per task (episodes ending in the rollout)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        trained = f", {len(tasks)} task{'s' * (len(tasks) > 1)}: {', '.join(tasks)}" if tasks else ""
        fig.suptitle(f"RL from the SFT checkpoint (embedded backend{trained})")
        fig.tight_layout()
        path = os.path.join(a.out, "learning_rl_curves.png")
        fig.savefig(path, dpi=110)
        print(f"wrote {path}")
    if a.sft and os.path.isdir(a.sft):
        tags = scalars(a.sft)
        panels = ["sft/loss", "sft/token_accuracy"] + (["sft/aux_position_error_cm"]
                                                       if "sft/aux_position_error_cm" in tags else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
        for ax, tag in zip(axes, panels):
            if tag in tags:
                xs, ys = zip(*tags[tag])
                ax.plot(xs, ys)
            ax.set_xlabel("optimizer steps")
            ax.set_ylabel(tag)
            ax.grid(alpha=0.3)
        fig.suptitle("SFT (behaviour cloning on expert demonstrations)")
        fig.tight_layout()
        path = os.path.join(a.out, "learning_sft_curves.png")
        fig.savefig(path, dpi=110)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
