"""Demonstration loading: seconds and peak memory of `algorithms.sft.load_demos` on a folder of demos.

Every SFT run on a fresh machine decodes its demonstrations once (the lzf-compressed HDF5 files of
`collect_demos.py`) before the first step, and on a lent GPU those seconds come out of RL's minutes.
Each mode runs in a fresh process (its peak resident memory is its own):

    python examples/embodiment/collect_demos.py tasks=[pick_and_place,open_drawer] \
        episodes_per_task=24 out_dir=/tmp/demos
    python benchmarks/demo_loading.py /tmp/demos --workers 2

Modes: `cache` decodes into a fresh cache entry (what sft.py does, `cache_demos=true`), `memory` reads
into memory (no cache), `cached` maps an existing entry (a resumed SFT piece).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _one(folder: str, mode: str, workers: int, cache: str) -> dict:
    from algorithms.sft import load_demos

    t = time.perf_counter()
    demos = load_demos([folder], chunk=8, workers=workers, cache_dir=None if mode == "memory" else cache)
    total = int(demos.head.sum(dtype="int64") % 7)  # touch every image byte, as training does over an epoch
    seconds = time.perf_counter() - t
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"mode": mode, "samples": len(demos), "gib": demos.nbytes / 2**30, "seconds": seconds,
            "peak_rss_gib": own, "peak_child_rss_gib": children, "check": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--modes", nargs="+", default=["cache", "memory", "cached"])
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode in this process
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(_one(a.folder, a.one, a.workers, a.cache)))
        return
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.folder))) as cache:
        for mode in a.modes:
            out = subprocess.run([sys.executable, __file__, a.folder, "--workers", str(a.workers), "--one", mode,
                                  "--cache", cache], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['mode']:7s} {r['samples']:7d} samples {r['gib']:6.2f} GiB  {r['seconds']:6.1f} s "
                  f"({r['gib'] / r['seconds']:.2f} GiB/s)  peak memory: loader {r['peak_rss_gib']:.2f} GiB, "
                  f"largest reader {r['peak_child_rss_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
