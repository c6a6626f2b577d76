"""Can an OFT-style policy clone a scripted expert? A cheap proxy for SFT, on the CPU, in minutes.

OpenVLA-OFT predicts a chunk of K actions as K x 23 tokens of 256 bins, each decoded on its own
(parallel decoding). Demonstrations whose action, at a given state, could be one of two quite
different motions (say, the left or the right arm reaching for the object) are bimodal per joint,
and per-joint argmax can mix the two modes into a motion that is neither. This script measures how
well such a policy clones each expert when perception is not the problem:

1. records expert demonstrations (held-in seeds 0..N-1, instance = seed), without rendering;
2. trains a small MLP on privileged state - proprio plus the moved object's and the target's
   positions and yaws in the robot's frame, with optional Gaussian noise on those positions
   (`--noise`, metres: a stand-in for a vision policy's uncertainty about where the object is) -
   with OFT's factorisation: one 256-way cross-entropy per action dimension and chunk step, targets
   binned with q01/q99 `norm_stats` (`vla_policies`' own tokenizer and normaliser);
3. runs it closed loop on held-out seeds (100000+), executing each decoded chunk open loop, greedy
   (argmax per token; `--decode sampled`: sampled at temperature 1, `sampled:0.5` at 0.5), and reports success, how many
   episodes came within 5 cm of the object, lifted
   it 2 cm, and how often a chunk moved both arms (a sign of mixed modes).

Expert variants (`--arms`): `standoff` is the shipped skill expert (always the left arm, every pick
and place from the standoff in front of the shoulder); `standoff_yaw` the same with the hand always
turned along the robot's heading; `standoff_nowait` the same without the still steps after each
drive (`ScriptedExpert.drive_settle_steps = 0`); `standoff_nosettle` neither those nor the steps
held after each arm move while the joints catch up (`joint_settle_max = 0`); `one` the expert of
runs 3-5 (left arm, reaching from where the robot stands when it can); `side` that one choosing
the arm by the object's side, as `ScriptedExpert.arm_for` does; `servo` the closed-loop expert of
`behavior_gym.experts.servo` (left arm, re-planned every step).

    python benchmarks/bc_clonability.py --tasks pick_and_place --arms one side --noise 0 0.03

`--layout` picks the skill tasks' start layout: `tabletop` (default since 2026-12-03: the object and
its target in front of the left arm, the experts never drive; there the `standoff*` variants are the
shipped experts reaching from where they stand) or `mobile` (objects anywhere on the table, the
layout of every record before `tabletop.json`). `--execute` sets how many of each chunk's actions
run before the next prediction (0: ACT's temporal ensemble), `--decode` greedy or sampled tokens.
Prints one line per (task, arms, actions, noise, execute, decode) and writes `--out` (JSON, every
episode).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import types
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("MUJOCO_GL", "egl")

# torch, timm and torchvision before any GL context: importing them after EGL is up segfaults.
import torch  # noqa: E402

from algorithms.sft import _GRIPPERS, _chunks, soft_token_targets  # noqa: E402  (imports vla_policies, timm, torchvision)
from behavior_gym.spaces import ACTION_PART, PROPRIO_SLICES  # noqa: E402
from vla_policies.openvla_oft.action_tokenizer import (  # noqa: E402
    ActionNormalizer,
    ActionTokenDistribution,
    ActionTokenizer,
    sampling_mode,
)

K = 8  # chunk length, as in the learning runs
# Torso and arm joint targets, and where the proprio holds those joints' positions (delta actions).
JOINT_ACT = np.r_[ACTION_PART["torso"].slice, ACTION_PART["left_arm"].slice, ACTION_PART["right_arm"].slice]
JOINT_PROPRIO = np.r_[PROPRIO_SLICES["trunk_qpos"], PROPRIO_SLICES["left_joint_qpos"],
                      PROPRIO_SLICES["right_joint_qpos"]]
N_BINS = 256
EVAL_SEED = 100_000
ENSEMBLE_M = 0.01  # `--execute 0`: ACT's temporal-ensemble weights exp(-m * i), i = 0 for the oldest chunk


def _time_feature(step: int) -> np.ndarray:
    """With `--time-feature` (read from the environment, so pool workers see it) the clone also gets
    the episode's step count: a diagnostic of phase ambiguity, where one state is demonstrated with
    different actions at different times (a policy without memory cannot tell them apart)."""
    return np.array([step / 300.0], np.float32) if os.environ.get("BC_TIME_FEATURE") == "1" else np.zeros(0, np.float32)


def _layout() -> str:
    """The skill layout (`--layout`, read from the environment so pool workers see it)."""
    return os.environ.get("BC_LAYOUT", "tabletop")


def _make(task: str, seed: int, arms: str):
    import gymnasium as gym

    import behavior_gym  # noqa: F401  (registers the env)
    from behavior_gym.experts import make_expert
    from behavior_gym.experts.base import ScriptedExpert
    from behavior_gym.tasks.skills import SKILLS

    kw = {"layout": _layout()} if task in SKILLS else {}
    env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, obs_every=10**9, image_size=16, **kw)
    obs, _ = env.reset(seed=seed)
    if arms == "servo":
        from behavior_gym.experts.servo import SERVO_EXPERTS

        expert = SERVO_EXPERTS[task](env)
    else:
        expert = make_expert(env)
    if arms == "side":
        expert.arm_for = types.MethodType(ScriptedExpert.arm_for, expert)
    if arms in ("one", "side"):  # reach from where the robot stands when the arm reaches (runs 3-5's experts)
        expert.always_standoff = False
    # No still steps after a drive: a still state that the expert leaves after a few steps is one a
    # deterministic clone may never leave.
    if arms == "standoff_nowait":
        expert.drive_settle_steps = 0
    # Nor after the arm's moves (the next starts from the commanded joints at once): no still states
    # at all for a clone to stall in while it holds the object.
    if arms == "standoff_nosettle":
        expert.drive_settle_steps, expert.joint_settle_max = 0, 0
    if arms == "standoff_slow":  # a longer, gentler end to each drive (see `--arms` in the module doc)
        expert.drive_gain, expert.drive_min_speed = 1.5, 0.05
    if arms == "standoff_jitter":  # standoffs drawn +-5 cm around the nominal one (`standoff_jitter`)
        expert.standoff_jitter = 0.05
        expert.rng = np.random.default_rng(2 * 10**6 + seed)
    if arms == "standoff_place_here":  # no carry drive where the target is within reach after the pick
        expert.place_from_standoff = False
    if arms == "standoff_yaw":  # and grasp with the hand along the heading (assisted grasping holds it anyway)
        expert.grasp_yaw = types.MethodType(lambda self, name: self.base_pose()[2], expert)
    expert.reset()
    return env, obs, expert


class _Probe:
    """The privileged state a clone gets for `task`: the task's points in the robot's frame (those
    SFT's auxiliary loss regresses, `behavior_gym.experts.privileged.TaskPoints`), for open_drawer
    also the cabinet's centre, and the yaws of those objects relative to the heading; and how far the
    episode came (closest hand-object distance, lift)."""

    def __init__(self, env, expert):
        from behavior_gym.experts.privileged import TaskPoints
        from behavior_gym.wrappers.shaping import SkillProgress, supports

        self.expert = expert
        self.points = TaskPoints(env)
        backend = env.unwrapped.backend
        self.bodies = tuple(name for kind, name in self.points.names if kind == "body")
        self.skill = SkillProgress(backend) if supports(env.unwrapped.task) else None
        self.handle = None
        if self.skill is None:
            cab = next((o for o in backend.task.scene.objects.values() if o.openables), None)
            if cab is None:
                raise SystemExit(f"{env.unwrapped.task}: no clone features for this task (pick-style skills and "
                                 "open_drawer only)")
            self.bodies = (cab.name,)
            self.handle = backend.model.geom(self.points.names[0][1]).id

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(yaw features, positions in the robot frame) of this state."""
        e = self.expert
        byaw = e.base_pose()[2]
        yaws = []
        for name in self.bodies:
            d = e.body_yaw(name) - byaw
            yaws += [math.sin(2 * d), math.cos(2 * d), math.sin(4 * d), math.cos(4 * d)]
        pts, mask = self.points()
        pos = pts[mask].reshape(-1)
        if self.handle is not None:
            pos = np.r_[pos, e.to_robot(e.center(self.bodies[0]))]
        return np.asarray(yaws, np.float32), pos.astype(np.float32)

    def progress(self) -> tuple[float, float, float]:
        """(closest hand's distance to the object or handle, the object's lift, its xy distance to the
        target) in metres; 0 for what does not apply."""
        if self.skill is not None:
            return self.skill()
        e, h = self.expert, self.expert.data.geom_xpos[self.handle]
        reach = min(float(np.linalg.norm(e.data.site_xpos[e.idx.eef_site[arm]] - h)) for arm in ("left", "right"))
        return reach, 0.0, 0.0


def _record(job: tuple[str, int, str, float, float]) -> dict | None:
    """One expert episode's states and chunk targets. With `dart` > 0 the executed torso and arm
    targets get Gaussian noise of that many radians while the recorded labels stay the expert's
    (DART, Laskey et al. 2017): the demonstrations then show the way back from states a little off
    the expert's path, where a clone's own errors take it. With `recover` > 0 the expert's drives are
    sometimes followed by a displacement of the base and a drive back (`ScriptedExpert.drive_to`);
    chunks holding displacement actions are left out."""
    task, seed, arms, dart, recover = job
    env, obs, expert = _make(task, seed, arms)
    if recover > 0:
        expert.recovery_offset = recover
        expert.rng = np.random.default_rng(10**6 + seed)
    probe = _Probe(env, expert)
    gen = np.random.default_rng(seed)
    proprio, yaws, pos, actions, perturbing = [], [], [], [], []
    info = {}
    for t in range(env.unwrapped.max_episode_steps):
        y, p = probe.features()
        y = np.r_[y, _time_feature(t)]
        a = expert.act(obs)
        proprio.append(obs["proprio"].copy())
        yaws.append(y)
        pos.append(p)
        actions.append(a)
        perturbing.append(expert.perturbing)
        if dart > 0:
            a = a.copy()
            a[JOINT_ACT] += gen.normal(0.0, dart, len(JOINT_ACT)).astype(np.float32)
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    env.close()
    if not info.get("success_once"):
        return None
    # A chunk is a label only if none of its K actions is a displacement.
    keep = ~_chunks(np.asarray(perturbing)[:, None], K)[:, :, 0].any(1)
    return {"proprio": np.stack(proprio)[keep], "yaws": np.stack(yaws)[keep], "pos": np.stack(pos)[keep],
            "chunks": _chunks(np.stack(actions), K)[keep], "perturbed_steps": int(np.sum(perturbing))}


class Clone(torch.nn.Module):
    """MLP trunk -> one E-dim state per action token (K x 23) -> a shared 256-way head: OFT's parallel
    decoding, where every action position's final hidden state goes through the same LM head and is
    decoded independently."""

    def __init__(self, n_in: int, hidden: int = 512, per_token: int = 48):
        super().__init__()
        self.per_token = per_token
        self.trunk = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.GELU(),
                                         torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                                         torch.nn.Linear(hidden, K * 23 * per_token))
        self.head = torch.nn.Sequential(torch.nn.GELU(), torch.nn.Linear(per_token, N_BINS))

    def forward(self, x):
        return self.head(self.trunk(x).view(-1, K * 23, self.per_token))


def _inputs(proprio, yaws, pos, mu, sd, noise: float, gen: np.random.Generator | None) -> torch.Tensor:
    if noise > 0:
        pos = pos + gen.normal(0.0, noise, pos.shape).astype(np.float32)
    x = np.concatenate([proprio, yaws, pos], -1)
    return torch.as_tensor((x - mu) / sd, dtype=torch.float32)


def train(demos: list[dict], noise: float, steps: int, batch: int, seed: int, delta: bool = False,
          sigma: float = 0.0):
    """Fit a clone. `delta`: the torso and arm targets are learned relative to the joints' positions
    at the chunk's first frame (an action parameterisation of the policy; the env action stays the
    absolute target). Every 10th episode is held out for the token accuracies per action part."""
    held = np.concatenate([np.full(len(d["chunks"]), k % 10 == 9) for k, d in enumerate(demos)])
    proprio = np.concatenate([d["proprio"] for d in demos])
    yaws = np.concatenate([d["yaws"] for d in demos])
    pos = np.concatenate([d["pos"] for d in demos])
    chunks = np.concatenate([d["chunks"] for d in demos])
    if delta:
        chunks = chunks.copy()
        chunks[:, :, JOINT_ACT] -= proprio[:, None, JOINT_PROPRIO]
    flat = chunks[~held].reshape(-1, 23)
    mask = np.ones(23, bool)
    mask[list(_GRIPPERS)] = False
    norm = ActionNormalizer(np.quantile(flat, 0.01, 0), np.quantile(flat, 0.99, 0), mask)
    tok = ActionTokenizer(N_BINS)
    bins = tok.encode_bins(norm.normalize(torch.as_tensor(chunks.reshape(len(chunks), -1)))).long()
    x_all = np.concatenate([proprio, yaws, pos], -1)
    mu, sd = x_all.mean(0), x_all.std(0) + 1e-3
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    model = Clone(x_all.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    acc = loss = float("nan")
    fit = np.flatnonzero(~held)
    for _ in range(steps):
        i = fit[gen.integers(0, len(fit), batch)]
        logits = model(_inputs(proprio[i], yaws[i], pos[i], mu, sd, noise, gen))
        if sigma > 0:
            ce = -(soft_token_targets(bins[i], N_BINS, sigma) * torch.log_softmax(logits, -1)).sum(-1).mean()
        else:
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, N_BINS), bins[i].reshape(-1))
        opt.zero_grad(set_to_none=True)
        ce.backward()
        opt.step()
        sched.step()
        loss = ce.item()
        acc = float((logits.argmax(-1) == bins[i]).float().mean())
    model.eval()
    val = {}
    v = np.flatnonzero(held)
    if len(v):
        with torch.no_grad():
            pred = model(_inputs(proprio[v], yaws[v], pos[v], mu, sd, noise, gen)).argmax(-1).view(len(v), K, 23)
        err = (pred - bins[v].view(len(v), K, 23)).abs()
        val = {"token_accuracy": float((err == 0).float().mean()),
               "within_2_bins": {name: float((err[:, :, part.slice] <= 2).float().mean())
                                 for name, part in ACTION_PART.items()}}
    return {"model": model, "norm": norm, "tok": tok, "mu": mu, "sd": sd, "loss": loss, "token_accuracy": acc,
            "samples": len(chunks), "delta": delta, "val": val}


_LOADED: dict[str, dict] = {}  # the clone a pool worker evaluates, by file


def _load_clone(path: str) -> dict:
    """The clone saved at `path`, loaded once per pool worker (one torch thread: workers run side by side)."""
    torch.set_num_threads(1)
    if path not in _LOADED:
        _LOADED.clear()
        _LOADED[path] = torch.load(path, weights_only=False)
    return _LOADED[path]


def temporal_ensemble(chunks: list[tuple[int, np.ndarray]], step: int, m: float = ENSEMBLE_M) -> np.ndarray:
    """ACT's temporal ensemble: the action for `step` as the mean of every chunk's action for it,
    `chunks` = [(step it was predicted at, [K, 23])] oldest first, weighted exp(-m * i) (oldest most)."""
    live = [(t, c) for t, c in chunks if 0 <= step - t < len(c)]
    w = np.exp(-m * np.arange(len(live)))
    return np.sum([wi * c[step - t] for wi, (t, c) in zip(w, live)], axis=0) / w.sum()


def _evaluate(job: tuple) -> dict:
    from behavior_gym.experts.base import ARM

    task, seed, arms, path, noise, execute, temperature, *rest = job  # temperature 0: argmax tokens
    top_k = rest[0] if rest else 0  # sample among the top_k most likely tokens (0: all)
    torch.manual_seed(seed)
    clone = _load_clone(path)
    env, obs, expert = _make(task, seed, arms)
    probe = _Probe(env, expert)
    gen = np.random.default_rng(seed)
    closest, lift, both, chunks, steps, first_lift, to_target, info = 1e9, -1e9, 0, 0, 0, None, 0.0, {}
    done = False
    recent: list[tuple[int, np.ndarray]] = []  # (step predicted at, chunk) for the temporal ensemble
    while not done:
        y, p = probe.features()
        y = np.r_[y, _time_feature(steps)]
        x = _inputs(obs["proprio"][None], y[None], p[None], clone["mu"], clone["sd"], noise, gen)
        with torch.no_grad():
            logits = clone["model"](x)
            b = (ActionTokenDistribution(logits, temperature, top_k).sample() if temperature > 0
                 else logits.argmax(-1))
        act = clone["norm"].unnormalize(clone["tok"].decode_bins(b)).numpy().reshape(K, 23)
        if clone["delta"]:
            act[:, JOINT_ACT] += obs["proprio"][JOINT_PROPRIO]
        span = [np.ptp(act[:, ARM[arm]], axis=0).max() for arm in ("left", "right")]
        both += int(min(span) > 0.05)
        chunks += 1
        if execute == 0:
            recent = (recent + [(steps, act)])[-K:]  # one chunk a step: the last K are the live ones
            act = temporal_ensemble(recent, steps)[None]
        for a in act[:max(execute, 1)]:
            obs, _, terminated, truncated, info = env.step(a)
            r, lf, to_target = probe.progress()
            closest, lift = min(closest, r), max(lift, lf)
            first_lift = first_lift if first_lift is not None or lf < 0.02 else steps
            steps += 1
            if terminated or truncated:
                done = True
                break
    env.close()
    return {"seed": seed, "success": bool(info.get("success_once")), "closest_cm": 100 * closest,
            "lift_cm": 100 * lift, "first_lift_step": first_lift, "final_to_target_cm": 100 * to_target,
            "steps": steps, "both_arms_chunks": both / max(chunks, 1)}


def _expert_through_tokens(job: tuple) -> dict:
    """The expert itself, each action passed through the clone's 256-bin tokenizer (normalise ->
    bin -> de-normalise): what a perfect OFT clone of it would at best achieve."""
    task, seed, arms, path = job
    clone = _load_clone(path)
    env, obs, expert = _make(task, seed, arms)
    info = {}
    for _ in range(env.unwrapped.max_episode_steps):
        a = expert.act(obs)
        if clone["delta"]:
            a = a.copy()
            a[JOINT_ACT] -= obs["proprio"][JOINT_PROPRIO]
        x = torch.as_tensor(np.tile(a, K)[None], dtype=torch.float32)
        q = clone["norm"].unnormalize(clone["tok"].decode_bins(clone["tok"].encode_bins(clone["norm"].normalize(x))))
        a = q.numpy().reshape(K, 23)[0]
        if clone["delta"]:
            a[JOINT_ACT] += obs["proprio"][JOINT_PROPRIO]
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    env.close()
    return {"seed": seed, "success": bool(info.get("success_once"))}


def _summary(clone: dict, eps: list[dict]) -> dict:
    return {"samples": clone["samples"], "token_accuracy": clone["token_accuracy"], "loss": clone["loss"],
            "val": clone["val"], "success": float(np.mean([e["success"] for e in eps])),
            "reached_5cm": float(np.mean([e["closest_cm"] < 5 for e in eps])),
            "lifted_2cm": float(np.mean([e["lift_cm"] > 2 for e in eps])),
            "median_closest_cm": float(np.median([e["closest_cm"] for e in eps])),
            "both_arms_chunks": float(np.mean([e["both_arms_chunks"] for e in eps]))}


def _line(r: dict) -> str:
    sec = r["seconds"]
    return (f"{r['task']:<15} arms={r['arms']:<4} {r['actions']:<8} exec {r['execute']} {r.get('decode', 'greedy')}  "
            f"noise={100 * r['noise_m']:3.0f} cm  dart {r['dart_rad']:.2f}  recover {r.get('recover_m', 0):.2f}  "
            f"sigma {r.get('sigma_bins', 0):.0f}  "
            f"demos {r['demos']:3d}  "
            f"tok.acc {r['token_accuracy']:.2f} (held-out {r['val'].get('token_accuracy', 0):.2f})  "
            f"success {r['success']:5.0%}  reach<5cm {r['reached_5cm']:4.0%}  lift {r['lifted_2cm']:4.0%}  "
            f"closest {r['median_closest_cm']:5.1f} cm  two-arm chunks {r['both_arms_chunks']:4.0%}  "
            f"({sec['demos']:.0f}+{sec['train']:.0f}+{sec['eval']:.0f} s)")


def _decode_mode(text: str) -> str:
    """`--decode` values: greedy, sampled, sampled:T (T > 0), sampled:T:K (among the K most likely tokens)."""
    try:
        sampling_mode(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _sampling(decode: str) -> tuple[float, int]:
    """(temperature, top_k) of a `--decode` value; (0.0, 0) for greedy (argmax tokens)."""
    return sampling_mode(decode) or (0.0, 0)


def write_record(path: str, record) -> None:
    """Write a benchmark's record as indented JSON, creating its folder (this script's and the proxies')."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["pick_and_place"])
    ap.add_argument("--arms", nargs="+", default=["standoff"],
                    choices=["standoff", "standoff_yaw", "standoff_nowait", "standoff_nosettle", "standoff_slow",
                             "standoff_jitter", "standoff_place_here", "one", "side", "servo"])
    ap.add_argument("--layout", default="tabletop", choices=["tabletop", "mobile"],
                    help="the skill tasks' layout (`behavior_gym.tasks.skills`; runs 1-8 and the records before "
                    "2026-12-03 used 'mobile', where the standoff experts drive)")
    ap.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.03], help="metres of position noise")
    ap.add_argument("--demos", type=int, default=150, help="expert episodes per task and expert variant")
    ap.add_argument("--actions", nargs="+", default=["absolute"], choices=["absolute", "delta"],
                    help="torso/arm targets learned as they are, or relative to the joints' positions")
    ap.add_argument("--execute", nargs="+", type=int, default=[K],
                    help="actions of each predicted chunk executed before the next prediction (1..8); 0: a chunk "
                    "predicted every step and the executed action the weighted mean of every live chunk's "
                    "action for that step (ACT's temporal ensemble, Zhao et al. 2023)")
    ap.add_argument("--decode", nargs="+", default=["greedy"], type=_decode_mode,
                    help="greedy (argmax tokens), sampled (tokens sampled at temperature 1, as the VLA's sampled "
                    "evaluation) or sampled:T (at temperature T, e.g. sampled:0.5)")
    ap.add_argument("--time-feature", action="store_true", help="diagnostic: the clone also sees the episode's "
                    "step count (does it stall where one state has different actions at different times?)")
    ap.add_argument("--dart", type=float, default=0.0, help="radians of noise on the executed joint targets "
                    "while recording (labels stay the expert's)")
    ap.add_argument("--recover", type=float, default=0.0, help="metres: record drives sometimes displaced and "
                    "driven back (`ScriptedExpert.recovery_offset`); the displacements are not labels")
    ap.add_argument("--episodes", type=int, default=50, help="held-out evaluation episodes per cell")
    ap.add_argument("--sigma", type=float, default=0.0, help="train on Gaussian-smoothed token targets of this "
                    "many bins (0: one-hot, OFT's plain cross-entropy)")
    ap.add_argument("--ceiling", action="store_true", help="also run the expert with its actions through the "
                    "clone's tokenizer on the held-out seeds (the best an OFT clone could do)")
    ap.add_argument("--steps", type=int, default=3000, help="training steps")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="runs/bc_clonability.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.workers))
    os.environ["BC_TIME_FEATURE"] = "1" if a.time_feature else "0"  # before the pool: its workers inherit it
    os.environ["BC_LAYOUT"] = a.layout
    ctx = get_context("forkserver")
    rows = []
    with ProcessPoolExecutor(a.workers, mp_context=ctx) as pool, tempfile.TemporaryDirectory() as tmp:
        for task in a.tasks:
            for arms in a.arms:
                t0 = time.perf_counter()
                jobs = [(task, s, arms, a.dart, a.recover) for s in range(a.demos)]
                demos = [d for d in pool.map(_record, jobs, chunksize=4) if d is not None]
                t_demo = time.perf_counter() - t0
                for noise, actions in [(n, m) for n in a.noise for m in a.actions]:
                    t0 = time.perf_counter()
                    clone = train(demos, noise, a.steps, a.batch, seed=0, delta=actions == "delta", sigma=a.sigma)
                    t_train = time.perf_counter() - t0
                    path = os.path.join(tmp, f"{task}_{arms}_{noise}_{actions}.pt")
                    torch.save(clone, path)
                    ceiling = None
                    if a.ceiling:
                        jobs = [(task, EVAL_SEED + s, arms, path) for s in range(a.episodes)]
                        ceiling = float(np.mean([e["success"] for e in pool.map(_expert_through_tokens, jobs)]))
                        print(f"{task:<15} arms={arms:<5} {actions:<8} expert through 256-bin tokens: success "
                              f"{ceiling:.0%}", flush=True)
                    for execute, decode in [(e, m) for e in a.execute for m in a.decode]:
                        t0 = time.perf_counter()
                        jobs = [(task, EVAL_SEED + s, arms, path, noise, execute, *_sampling(decode))
                                for s in range(a.episodes)]
                        eps = list(pool.map(_evaluate, jobs))
                        row = {"task": task, "layout": a.layout, "arms": arms, "actions": actions, "execute": execute,
                               "decode": decode, "noise_m": noise,
                               "time_feature": a.time_feature, "dart_rad": a.dart, "recover_m": a.recover,
                               "sigma_bins": a.sigma, "demos": len(demos),
                               "expert_through_tokens": ceiling,
                               **_summary(clone, eps),
                               "seconds": {"demos": t_demo, "train": t_train, "eval": time.perf_counter() - t0},
                               "episodes": eps}
                        rows.append(row)
                        print(_line(row), flush=True)
    write_record(a.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
