"""Where does a cloned policy fail a pick-style skill? Two measurements on held-out instances.

1. Open loop, on expert states: record expert episodes; at every K-th frame decode the policy's greedy
   chunk and compare it with the expert's next K actions: mean absolute error per action part, and
   how far the end effector would be from the expert's (forward kinematics of the torso and arm
   targets), overall and near the expert's grasps.
2. Closed loop: run the policy (greedy); per episode the closest end effector-object distance, the
   object's highest lift, its final distance to the target, success. Head-camera contact sheets
   (PNG) of the first episodes show what it did.

    python examples/embodiment/diagnose_policy.py runs/learning/sft/model --tasks pick_and_place stacking
    python examples/embodiment/diagnose_policy.py logs/<run>/checkpoints/global_step_N/actor.zip

Tasks: pick_and_place, stacking, rearrangement (one object moved onto/next to another). Prints one
line per task and writes `<out>/diagnosis.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.join(os.path.dirname(__file__), "..", "..")]

TASKS = ("pick_and_place", "stacking", "rearrangement")


def load(path: str, device: str, image_size: int):
    from evaluate import EvalConfig, load_policy

    cfg = EvalConfig(checkpoint=path, image_size=image_size) if path.endswith(".zip") else \
        EvalConfig(model_path=path, image_size=image_size)
    policy = load_policy(cfg, device)
    policy.set_training_mode(False)
    return policy


def _eef(backend, scratch, qpos, action) -> dict[str, np.ndarray]:
    """World end-effector positions of both arms for the torso and arm targets of `action`."""
    import mujoco

    from behavior_gym.experts.base import ARM, TORSO

    idx = backend.idx
    scratch.qpos[:] = qpos
    scratch.qpos[idx.torso_qpos] = action[TORSO]
    for arm in ("left", "right"):
        scratch.qpos[idx.arm_qpos[arm]] = action[ARM[arm]]
    mujoco.mj_kinematics(backend.model, scratch)
    return {arm: scratch.site_xpos[idx.eef_site[arm]].copy() for arm in ("left", "right")}


def _batch(obs: dict, device) -> dict:
    return {"head_rgb": torch.as_tensor(obs["head_rgb"][None], device=device),
            "wrist_rgb": torch.as_tensor(obs["wrist_rgb"][None], device=device),
            "proprio": torch.as_tensor(obs["proprio"][None], device=device), "instruction": [obs["instruction"]]}


def open_loop(policy, task: str, episodes: int, seed0: int, image_size: int) -> dict:
    import gymnasium as gym
    import mujoco

    import behavior_gym  # noqa: F401  (registers the env)
    from behavior_gym.experts import make_expert
    from behavior_gym.experts.base import GRIP
    from behavior_gym.spaces import ACTION_PART

    k = policy.model.config.num_action_chunks
    errs: dict[str, list] = {name: [] for name in ACTION_PART}
    eef_all, eef_grasp = [], []
    for e in range(episodes):
        env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed0 + e, image_size=image_size)
        expert = make_expert(env)
        obs, _ = env.reset(seed=seed0 + e)
        expert.reset()
        backend = env.unwrapped.backend
        frames, actions, qpos = [], [], []
        for _ in range(env.unwrapped.max_episode_steps):
            a = expert.act(obs)
            frames.append(obs)
            actions.append(a)
            qpos.append(backend.data.qpos.copy())
            obs, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                break
        actions = np.stack(actions)
        closed = (actions[:, [GRIP["left"], GRIP["right"]]] < 0.5).any(1)
        grasps = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
        scratch = mujoco.MjData(backend.model)
        for t in range(0, len(actions) - k, k):
            with torch.no_grad():
                pred = policy.forward(_batch(frames[t], policy.device), deterministic=True)[0]
            pred = pred.reshape(k, -1).cpu().numpy()
            true = actions[t:t + k]
            for name, part in ACTION_PART.items():
                errs[name].append(float(np.abs(pred[:, part.slice] - true[:, part.slice]).mean()))
            mine, theirs = (_eef(backend, scratch, qpos[t], a[-1]) for a in (pred, true))
            d = max(float(np.linalg.norm(mine[arm] - theirs[arm])) for arm in mine)
            eef_all.append(d)
            if np.any(np.abs(t + k - grasps) <= 12):
                eef_grasp.append(d)
        env.close()
    return {"action_abs_err": {name: float(np.mean(v)) for name, v in errs.items()},
            "eef_err_cm": 100 * float(np.mean(eef_all)),
            "eef_err_cm_near_grasp": 100 * float(np.mean(eef_grasp)) if eef_grasp else None}


def closed_loop(policy, task: str, episodes: int, seed0: int, image_size: int, out: str, sheets: int = 3) -> dict:
    from PIL import Image

    from algorithms.distributed.env_worker import EnvSpec
    from behavior_gym.wrappers.shaping import SkillProgress

    k = policy.model.config.num_action_chunks
    spec = EnvSpec(task=task, chunk=k, obs_every=k, image_size=image_size)
    envs = [EnvSpec(**{**spec.__dict__, "instance_id": seed0 + i}).make() for i in range(episodes)]
    obs = [env.reset(seed=seed0 + i)[0] for i, env in enumerate(envs)]
    progress = [SkillProgress(env.unwrapped.backend) for env in envs]
    rec = [{"closest_eef_cm": 1e9, "lift_cm": -1e9, "success": False} for _ in envs]
    frames: dict[int, list] = {i: [] for i in range(min(sheets, episodes))}
    live = list(range(episodes))
    step = 0
    while live:
        batch = {key: torch.as_tensor(np.stack([obs[i][key] for i in live]), device=policy.device) for key in obs[0]}
        with torch.no_grad():
            act = policy.forward(batch, deterministic=True)[0].cpu().numpy()
        for j, i in enumerate(list(live)):
            if i in frames and step % 3 == 0:
                frames[i].append(obs[i]["head_rgb"].transpose(1, 2, 0))
            obs[i], _, terminated, truncated, info = envs[i].step(act[j])
            reach, lift, to_target = progress[i]()
            rec[i]["closest_eef_cm"] = min(rec[i]["closest_eef_cm"], 100 * reach)
            rec[i]["lift_cm"] = max(rec[i]["lift_cm"], 100 * lift)
            if terminated or truncated:
                rec[i]["success"] = bool(info.get("success_once", info.get("success", False)))
                rec[i]["final_to_target_cm"] = 100 * to_target
                rec[i]["steps"] = int(info.get("episode_len", 0))
                live.remove(i)
        step += 1
    for i, fs in frames.items():
        blank = np.zeros_like(fs[0])
        rows = [np.concatenate((fs[r:r + 6] + [blank] * 6)[:6], 1) for r in range(0, min(len(fs), 24), 6)]
        Image.fromarray(np.concatenate(rows, 0)).save(os.path.join(out, f"{task}_{i}.png"))
    for env in envs:
        env.close()
    return {"success": float(np.mean([r["success"] for r in rec])),
            "reached_5cm": float(np.mean([r["closest_eef_cm"] < 5 for r in rec])),
            "reached_10cm": float(np.mean([r["closest_eef_cm"] < 10 for r in rec])),
            "lifted_3cm": float(np.mean([r["lift_cm"] > 3 for r in rec])),
            "median_closest_eef_cm": float(np.median([r["closest_eef_cm"] for r in rec])),
            "episodes": rec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", help="a released-layout checkpoint folder (SFT's model/) or an RL run's actor.zip")
    ap.add_argument("--tasks", nargs="+", default=["pick_and_place", "stacking"], choices=TASKS)
    ap.add_argument("--episodes", type=int, default=16, help="closed-loop episodes per task")
    ap.add_argument("--open-loop", type=int, default=3, help="expert episodes per task for the open-loop errors")
    ap.add_argument("--seed", type=int, default=100_000, help="first seed and instance (held out from training)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--out", default="runs/diagnosis")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    if not os.path.exists(a.policy):
        ap.error(f"{a.policy!r} does not exist: give an SFT model folder or an RL checkpoint's actor.zip")
    os.makedirs(a.out, exist_ok=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    policy = load(a.policy, device, a.image_size)
    result = {}
    for task in a.tasks:
        ol = open_loop(policy, task, a.open_loop, a.seed, a.image_size) if a.open_loop > 0 else None
        cl = closed_loop(policy, task, a.episodes, a.seed, a.image_size, a.out)
        result[task] = {"open_loop": ol, "closed_loop": cl}
        summary = {key: round(v, 3) for key, v in cl.items() if key != "episodes"}
        print(task, "open loop:", json.dumps(ol), "closed loop:", json.dumps(summary), flush=True)
    with open(os.path.join(a.out, "diagnosis.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"details and contact sheets in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
