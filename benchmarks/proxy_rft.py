"""Is there anything to learn in the proxy's own sampled rollouts? Rejection-sampling fine-tuning (RFT) on the CPU.

`proxy_rl.py` shows PPO and GRPO keeping a cloned pick skill without raising it. This script asks whether
the signal is there at all: it samples the clone's own episodes (top-k tokens, as the RL rollouts), keeps
the successful ones and fine-tunes the clone on their tokens with plain supervised cross-entropy (the
clone's smoothed targets) - no ratios, no clipping, no advantages: the filtered behaviour cloning of
expert iteration / ReST. If held-out greedy success rises, the rollouts hold a learnable improvement and
the RL objective is what fails to take it; if it does not, the rollouts' successes are luck the policy
cannot be taught from.

    python benchmarks/proxy_rft.py --clone runs/clone_weak.pt --rounds 3 --episodes-per-round 400

Each round: `--episodes-per-round` sampled episodes on fresh training seeds (never the held-out 100000+),
the successful ones added to the kept set, `--steps` fine-tuning steps on the kept set (from the last
round's weights), then `--episodes` held-out episodes greedy and with `--eval-decode`. Prints one line per
round and writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("MUJOCO_GL", "egl")

import bc_clonability as B  # noqa: E402  (imports torch before any GL context)
import torch  # noqa: E402

from algorithms.sft import soft_token_targets  # noqa: E402
from vla_policies.openvla_oft.action_tokenizer import ActionTokenDistribution  # noqa: E402

RFT_SEED = 1_000  # first training seed of the sampled episodes (the clones' demonstrations use 0..N-1)


def _rollout(job: tuple) -> dict:
    """One episode of the clone at `path`, tokens sampled at (temperature, top_k), executing each chunk open
    loop as `bc_clonability._evaluate` does; returns its inputs and tokens per chunk and whether it succeeded."""
    task, seed, path, temperature, top_k, *start = job  # start: the episode's start seed (default: `seed`)
    torch.manual_seed(seed)
    clone = B._load_clone(path)
    env, obs, expert = B._make(task, start[0] if start else seed, "standoff")
    probe = B._Probe(env, expert)
    xs, bins, info, steps, done = [], [], {}, 0, False
    while not done:
        y, p = probe.features()
        y = np.r_[y, B._time_feature(steps)]
        x = B._inputs(obs["proprio"][None], y[None], p[None], clone["mu"], clone["sd"], 0.0, None)
        with torch.no_grad():
            b = ActionTokenDistribution(clone["model"](x), temperature, top_k).sample()
        xs.append(x[0].numpy())
        bins.append(b[0].numpy().astype(np.uint8))
        act = clone["norm"].unnormalize(clone["tok"].decode_bins(b)).numpy().reshape(B.K, 23)
        for a in act:
            obs, _, terminated, truncated, info = env.step(a)
            steps += 1
            if terminated or truncated:
                done = True
                break
    env.close()
    return {"seed": seed, "success": bool(info.get("success_once")), "steps": steps, "x": np.stack(xs),
            "bins": np.stack(bins)}


def _finetune(model: torch.nn.Module, x: np.ndarray, bins: np.ndarray, steps: int, lr: float, batch: int,
              sigma: float, seed: int) -> float:
    """`steps` AdamW steps of the clone's loss on (x, bins); returns the last loss."""
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    xt, bt = torch.as_tensor(x), torch.as_tensor(bins.astype(np.int64))
    loss = float("nan")
    for _ in range(steps):
        i = torch.as_tensor(gen.integers(0, len(xt), batch))
        logits = model(xt[i])
        if sigma > 0:
            ce = -(soft_token_targets(bt[i], B.N_BINS, sigma) * torch.log_softmax(logits, -1)).sum(-1).mean()
        else:
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, B.N_BINS), bt[i].reshape(-1))
        opt.zero_grad(set_to_none=True)
        ce.backward()
        opt.step()
        loss = ce.item()
    model.eval()
    return loss


def main(argv=None) -> int:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from tempfile import TemporaryDirectory

    from proxy_rl import _decodes_line, evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="pick_and_place")
    ap.add_argument("--clone", required=True, help="a clone saved by `proxy_rl.py --save-clone`")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes-per-round", type=int, default=400, help="sampled training episodes per round")
    ap.add_argument("--rollout-decode", default="sampled:1:3", type=B._decode_mode,
                    help="how the training episodes draw their tokens (the RL rollouts': top-3 at temperature 1)")
    ap.add_argument("--start", type=int, default=None, help="every training episode from this one start seed "
                    "(instance and placement; e.g. a held-out seed the clone fails on), tokens drawn anew")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps per round")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sigma", type=float, default=2.0, help="Gaussian token targets of this many bins (as the clone "
                    "was trained: `proxy_rl.py --sigma`; 0: one-hot cross-entropy)")
    ap.add_argument("--episodes", type=int, default=100, help="held-out episodes per evaluation")
    ap.add_argument("--eval-decode", nargs="+", default=["sampled:1:3"], type=B._decode_mode)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/proxy_rft.json")
    a = ap.parse_args(argv)
    os.environ["BC_LAYOUT"] = "tabletop"
    temperature, top_k = B._sampling(a.rollout_decode)
    if temperature <= 0:
        raise SystemExit("--rollout-decode must sample (sampled, sampled:T or sampled:T:K), not greedy")
    clone = torch.load(a.clone, weights_only=False)
    model = copy.deepcopy(clone["model"]).float().eval()
    torch.set_num_threads(1)
    rows, kept_x, kept_bins, env_steps = [], [], [], 0
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers, mp_context=get_context("forkserver")) as pool, TemporaryDirectory() as tmp:
        rows.append({"round": 0, "env_steps": 0, **evaluate(pool, a.task, clone, model, a.episodes, tmp,
                                                           tuple(a.eval_decode))})
        print(f"round 0  greedy {rows[-1]['success']:.0%}" + _decodes_line(rows[-1]), flush=True)
        for r in range(1, a.rounds + 1):
            path = os.path.join(tmp, f"policy_{r}.pt")
            torch.save({**clone, "model": model}, path)
            seeds = RFT_SEED + (r - 1) * a.episodes_per_round + np.arange(a.episodes_per_round)
            start = () if a.start is None else (a.start,)
            eps = list(pool.map(_rollout, [(a.task, int(s), path, temperature, top_k, *start) for s in seeds],
                                chunksize=4))
            env_steps += sum(e["steps"] for e in eps)
            wins = [e for e in eps if e["success"]]
            kept_x += [e["x"] for e in wins]
            kept_bins += [e["bins"] for e in wins]
            loss = float("nan")
            if kept_x:
                loss = _finetune(model, np.concatenate(kept_x), np.concatenate(kept_bins), a.steps, a.lr, a.batch,
                                 a.sigma, a.seed + r)
            if a.start is not None:  # the greedy episode from that start, after this round's fine-tuning
                tuned = os.path.join(tmp, f"tuned_{r}.pt")  # a new file: loaded clones are cached by path
                torch.save({**clone, "model": model}, tuned)
                ep = B._evaluate((a.task, a.start, "standoff", tuned, 0.0, B.K, 0.0))
                extra = {"start_greedy": ep}
            else:
                extra = {}
            row = {"round": r, **extra, "env_steps": env_steps, "rollout_success": len(wins) / len(eps),
                   "kept_episodes": len(kept_x), "kept_chunks": int(sum(len(x) for x in kept_x)), "loss": loss,
                   **evaluate(pool, a.task, clone, model, a.episodes, tmp, tuple(a.eval_decode))}
            rows.append(row)
            print(f"round {r}  env steps {env_steps:>7}  rollout success {row['rollout_success']:.0%}  kept "
                  f"{row['kept_episodes']} episodes ({row['kept_chunks']} chunks)  loss {loss:.3f}  greedy "
                  f"{row['success']:.0%}" + _decodes_line(row)
                  + (f"  start {a.start} greedy {'success' if extra['start_greedy']['success'] else 'failure'}"
                     if extra else "") + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"args": vars(a), "evaluations": rows}
    B.write_record(a.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
