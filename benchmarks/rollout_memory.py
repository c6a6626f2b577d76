"""Bytes per stored rollout step: `algorithms.LeanRolloutBuffer` vs SB3's `DictRolloutBuffer`, against the
raw size of one `Behavior-R1Pro-v0` observation (target: lean <= 1.1x raw).

One step = one action chunk of one env: the observation (three uint8 cameras, 61-D float32 proprio,
the instruction as 512 uint8 codes, the task id), the chunk's K x 23 actions, and the scalars PPO keeps
(reward, value, return, advantage, episode start; the lean buffer also a loss mask, a trajectory id and
one log-prob per action token). Both buffers are filled with the same random data; "stored" is the
bytes their arrays hold, "peak" the most memory (tracemalloc) the buffer took while being filled and
read for one epoch of minibatches, less the one minibatch the trainer holds at a time (the same for
both; printed apart): SB3's `get()` copies every array once (`swap_and_flatten`, one key at a time, so
its peak is the rollout plus its largest array), the lean buffer hands out views.

    python benchmarks/rollout_memory.py                      # 224 px, chunk 8, 8 envs x 16 steps
    python benchmarks/rollout_memory.py --image-size 128 --chunk 4 --n-envs 4 --n-steps 32
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from gymnasium import spaces  # noqa: E402

from behavior_gym import spaces as S  # noqa: E402


def observation_space(image_size: int, n_tasks: int = 64) -> spaces.Dict:
    """The env's observation space as `SB3ObservationWrapper` hands it to a trainer."""
    space = S.observation_space(image_size, n_tasks)
    return spaces.Dict({k: spaces.Box(0, 127, (S.INSTRUCTION_MAX_LEN,), np.uint8) if k == "instruction" else v
                        for k, v in space.spaces.items()})


def raw_bytes(space: spaces.Dict) -> tuple[int, int]:
    """(image bytes, whole-observation bytes) of one observation in its own dtypes."""
    images = sum(int(np.prod(s.shape)) for k, s in space.spaces.items() if k.endswith("_rgb"))
    total = 0
    for s in space.spaces.values():
        total += 8 if isinstance(s, spaces.Discrete) else int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
    return images, total


def _stored(buffer) -> int:
    names = ("actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages", "masks",
             "trajectory_ids")
    return (sum(v.nbytes for v in buffer.observations.values())
            + sum(getattr(buffer, n).nbytes for n in names if hasattr(buffer, n)))


def measure(kind: str, space: spaces.Dict, chunk: int, n_envs: int, n_steps: int, batch: int,
            seed: int = 0) -> dict[str, float]:
    """Fill a buffer of `kind` ("lean" / "sb3") and read one epoch; bytes per step stored and at peak."""
    from stable_baselines3.common.buffers import DictRolloutBuffer

    from algorithms import LeanRolloutBuffer

    rng = np.random.default_rng(seed)
    action_space = spaces.Box(np.tile(S.ACTION_LOW, chunk), np.tile(S.ACTION_HIGH, chunk), dtype=np.float32)
    tokens = chunk * S.ACTION_DIM
    # one observation batch, made before tracing, re-used for every step (only the buffer is measured)
    obs = {k: (rng.integers(0, s.n, size=n_envs) if isinstance(s, spaces.Discrete)
               else rng.integers(0, 128, size=(n_envs, *s.shape)).astype(s.dtype))
           for k, s in space.spaces.items()}
    actions = rng.uniform(-1, 1, (n_envs, tokens)).astype(np.float32)
    values = th.zeros(n_envs)
    log_probs = th.zeros(n_envs, tokens) if kind == "lean" else th.zeros(n_envs)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    cls = LeanRolloutBuffer if kind == "lean" else DictRolloutBuffer
    buffer = cls(n_steps, space, action_space, device="cpu", n_envs=n_envs)
    for _ in range(n_steps):
        buffer.add(obs, actions, np.zeros(n_envs), np.zeros(n_envs), values, log_probs)
    buffer.compute_returns_and_advantage(last_values=th.zeros(n_envs), dones=np.zeros(n_envs))
    stored = _stored(buffer)
    minibatch = 0
    for mb in buffer.get(batch):  # one epoch, as the trainer reads it
        obs_bytes = sum(t.numel() * t.element_size() for t in mb.observations.values())
        minibatch = max(minibatch, obs_bytes + sum(t.numel() * t.element_size() for t in mb[1:]))
        del mb
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    samples = n_steps * n_envs
    return {"stored": stored / samples, "peak": (peak - base - minibatch) / samples,
            "minibatch": minibatch / samples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=S.IMAGE_SIZE)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--n-steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=16, help="minibatch size of the read-back epoch")
    args = p.parse_args(argv)
    th.set_num_threads(1)

    space = observation_space(args.image_size)
    images, raw = raw_bytes(space)
    print(f"Behavior-R1Pro-v0 observation at {args.image_size} px: {raw:,} bytes raw ({images:,} of them uint8 "
          f"images); chunk {args.chunk} ({args.chunk * S.ACTION_DIM} action tokens), {args.n_envs} envs x "
          f"{args.n_steps} steps, minibatches of {args.batch}")
    print(f"{'buffer':36} {'stored B/step':>14} {'x raw':>6} {'peak B/step':>12} {'x raw':>6}")
    rows = [("LeanRolloutBuffer (per-token log-p)", "lean"), ("SB3 DictRolloutBuffer", "sb3")]
    result = {}
    for label, kind in rows:
        m = measure(kind, space, args.chunk, args.n_envs, args.n_steps, args.batch)
        result[kind] = m
        print(f"{label:36} {m['stored']:>14,.0f} {m['stored'] / raw:>6.3f} {m['peak']:>12,.0f} "
              f"{m['peak'] / raw:>6.3f}")
    float_images = 4 * images + (raw - images)
    print(f"{'(float32 image copy, for scale)':36} {float_images:>14,.0f} {float_images / raw:>6.3f}")
    print(f"plus one minibatch held while reading: {result['lean']['minibatch']:,.0f} B per rollout step")
    worst = max(result["lean"]["stored"], result["lean"]["peak"]) / raw
    ok = worst <= 1.1
    print(f"lean buffer: {worst:.3f} x raw (target <= 1.1): {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
