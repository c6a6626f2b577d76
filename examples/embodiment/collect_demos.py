"""Record scripted-expert demonstrations (HDF5) for SFT, in parallel processes.

    python examples/embodiment/collect_demos.py --config-name collect_demos_embedded [key=value ...]

Each task gets `episodes_per_task` episodes with seeds (and instance ids) seed0, seed0+1, ...; only
successful ones are kept unless successful_only=false. Writes `<out_dir>/<task>_<k>.hdf5` and
prints one line per task (episodes kept, expert success).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

import hydra
from omegaconf import DictConfig

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.join(os.path.dirname(__file__), "..", "..")]
from stage_utils import fail, typed_config  # noqa: E402


@dataclass
class CollectConfig:
    tasks: list[str] = field(default_factory=lambda: ["pick_and_place"])
    episodes_per_task: int = 100
    seed0: int = 0
    image_size: int = 224
    num_workers: int = 2
    successful_only: bool = True
    recovery_offset: float = 0.0  # metres; > 0: drives sometimes displaced and driven back (not labels)
    layout: str | None = None  # skill tasks: "tabletop" (null: the default) or "mobile"
    out_dir: str = "data/demos"


@hydra.main(version_base="1.3", config_path="config", config_name="collect_demos_embedded")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    c = typed_config(cfg, CollectConfig, "collect_demos")
    from behavior_gym.experts import EXPERTS
    from behavior_gym.experts.recorder import record_parallel
    from behavior_gym.tasks.skills import LAYOUTS

    for t in c.tasks:
        if t not in EXPERTS:
            fail("collect_demos", "tasks", f"no scripted expert for {t!r}; experts exist for {', '.join(EXPERTS)}")
    if not 0.0 <= c.recovery_offset <= 0.3:
        fail("collect_demos", "recovery_offset", f"must be between 0 and 0.3 m, got {c.recovery_offset}")
    if c.layout is not None and c.layout not in LAYOUTS:
        fail("collect_demos", "layout", f"{c.layout!r} is not a skill layout; choose one of {list(LAYOUTS)} or null")
    if c.episodes_per_task < 1:
        fail("collect_demos", "episodes_per_task", f"must be >= 1, got {c.episodes_per_task}")
    t0 = time.perf_counter()
    shards = record_parallel(c.tasks, c.episodes_per_task, c.out_dir, workers=c.num_workers, seed0=c.seed0,
                             image_size=c.image_size, successful_only=c.successful_only,
                             recovery_offset=c.recovery_offset, layout=c.layout)
    dt = time.perf_counter() - t0
    summary = {}
    for t in c.tasks:
        rows = [s for s in shards if s["task"] == t]
        summary[t] = {k: sum(r[k] for r in rows) for k in ("episodes", "written", "successes")}
        print(f"{t:<28} {summary[t]['written']:>4} episodes kept, expert success "
              f"{summary[t]['successes'] / summary[t]['episodes']:.0%}")
    summary["seconds"] = round(dt, 1)
    with open(os.path.join(c.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"demonstrations in {c.out_dir} ({dt:.0f} s)")


if __name__ == "__main__":
    main()
