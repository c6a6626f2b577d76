"""`evaluate(policy, env, episodes)`: success rate, q_score, episode length and return, per task.

Reads what `Behavior-R1Pro-v0` puts in the final `info` of an episode: ``success_once`` (else
``success`` / ``is_success``), ``q_score``, ``episode_len`` (the true length in env steps, also under
`ActionChunkWrapper`) and ``task``. Envs without them still work: the length is then counted in
steps, and success / q_score are left out (None) for the episodes that lack them.

    from algorithms import evaluate
    stats = evaluate(model, env, episodes=20)   # model: an SB3 model or policy, or obs -> action
    stats["success_rate"], stats["per_task"]["pick_and_place"]["q_score"]

An OpenVLA-OFT policy on CUDA is evaluated with its fast inference (compiled layer regions and CUDA
graphs, `use_fast_inference`); FP8 GEMMs are opt-in (``fast_inference={"fp8": True}``). Greedy
evaluation needs no log-probs that agree with a training forward pass, so the fast path's small
logit differences only matter through the actions they pick.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from algorithms.group_reset import episode_success

__all__ = ["evaluate", "use_fast_inference"]


def _predictor(policy: Any, deterministic: bool) -> Callable[[Any], np.ndarray]:
    if hasattr(policy, "predict"):
        return lambda obs: policy.predict(obs, deterministic=deterministic)[0]
    if callable(policy):
        return policy
    raise TypeError(f"evaluate needs an SB3 model or policy (with .predict) or a callable obs -> action, got "
                    f"{type(policy).__name__}")


def _fast_policy(policy_or_model: Any) -> Any | None:
    # the policy with a fast path: the model's `policy`, or the policy itself (None: SB3's own, callables)
    for p in (policy_or_model, getattr(policy_or_model, "policy", None)):
        if p is not None and hasattr(p, "enable_fast_inference") and hasattr(p, "fast_inference"):
            return p
    return None


def use_fast_inference(policy_or_model: Any, enabled: bool | None = None, **kwargs: Any) -> bool:
    """Turn on a policy's fast inference (`OpenVLAOFTPolicy.enable_fast_inference`) for evaluation, unless it
    is on already; returns whether it is on.

    Args:
        policy_or_model: an SB3 model or a policy. One without a fast path (SB3's own policies, callables)
            is left as it is.
        enabled: None = on for a policy on CUDA (compiled regions and CUDA graphs) or when `fp8` is asked
            for, off on a CPU; False = leave the policy as it is.
        **kwargs: `enable_fast_inference` arguments, e.g. ``fp8=True`` (FP8 GEMMs; CUDA compute capability
            >= 8.9). FP8 replaces the weights by FP8-rounded ones for good (`disable_fast_inference` gives
            back bfloat16 layers holding the rounded values): use it on a policy that is only evaluated.
    """
    policy = _fast_policy(policy_or_model)
    if policy is None:
        if enabled:
            raise TypeError(f"{type(policy_or_model).__name__} has no fast inference (enable_fast_inference); "
                            "evaluate it with fast_inference=False")
        return False
    if enabled is None:
        enabled = policy.device.type == "cuda" or bool(kwargs.get("fp8"))
    if enabled and not policy.fast_inference:
        policy.enable_fast_inference(**kwargs)
    return policy.fast_inference


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(values)) if values else None

    return {"episodes": len(rows), "success_rate": mean("success"), "q_score": mean("q_score"),
            "episode_len": mean("episode_len"), "return": mean("return"),
            "return_std": float(np.std([r["return"] for r in rows])) if rows else None}


def _episode(info: Mapping[str, Any], steps: int, ret: float) -> dict[str, Any]:
    success = episode_success(info)
    q = info.get("q_score")
    return {"task": str(info.get("task", "default")), "success": None if success is None else float(success),
            "q_score": None if q is None else float(q), "episode_len": float(info.get("episode_len", steps)),
            "return": float(ret)}


def evaluate(policy_or_model: Any, env: gym.Env | VecEnv, episodes: int = 10, deterministic: bool = True,
             seed: int | None = None, fast_inference: bool | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run `episodes` episodes and report their means, overall and per task.

    Args:
        policy_or_model: an SB3 model / policy (its ``predict(obs, deterministic=...)``) or a callable
            from an observation (batched for a VecEnv) to an action.
        env: a Gymnasium env, or an SB3 VecEnv (its envs run in parallel; each env contributes
            `episodes / num_envs` episodes, its first ones, so short episodes are not favoured).
        episodes: number of episodes.
        deterministic: act with the mode of the policy's distribution.
        seed: a Gymnasium env is reset with ``seed + i`` for episode i (None: unseeded after the
            first); a VecEnv is seeded once with `seed`.
        fast_inference: the policy's fast inference during the evaluation (`use_fast_inference`):
            None = on for a policy on CUDA, True = on, a mapping = on with these `enable_fast_inference`
            arguments (e.g. ``{"fp8": True}``), False = the policy as it is. What this call turns on it
            turns off at the end; a policy whose fast inference was on already keeps it.

    Returns:
        ``{"episodes", "success_rate", "q_score", "episode_len", "return", "return_std", "per_task":
        {task: same keys but per_task}, "episode_records": [one dict per episode]}``. A mean is None
        when no episode's info had the key.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    act = _predictor(policy_or_model, deterministic)
    policy = _fast_policy(policy_or_model)
    was_on = policy is not None and policy.fast_inference
    kwargs = dict(fast_inference) if isinstance(fast_inference, Mapping) else {}
    enabled = None if fast_inference is None else fast_inference is not False
    now_on = use_fast_inference(policy_or_model, enabled, **kwargs)
    try:
        rows = _episodes(act, env, episodes, seed)
    finally:
        if now_on and not was_on:
            policy.disable_fast_inference()

    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    out = _summary(rows)
    out["per_task"] = {task: _summary(task_rows) for task, task_rows in by_task.items()}
    out["episode_records"] = rows
    return out


def _episodes(act: Callable[[Any], np.ndarray], env: gym.Env | VecEnv, episodes: int,
              seed: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if isinstance(env, VecEnv):
        if seed is not None:
            env.seed(seed)
        obs = env.reset()
        steps = np.zeros(env.num_envs, dtype=np.int64)
        returns = np.zeros(env.num_envs, dtype=np.float64)
        # Each env contributes its share of the episodes (the first ones it finishes), so that short
        # episodes (often the successes, or one task of several) are not over-counted.
        quota = np.full(env.num_envs, episodes // env.num_envs)
        quota[: episodes % env.num_envs] += 1
        done_count = np.zeros(env.num_envs, dtype=np.int64)
        while len(rows) < episodes:
            obs, rewards, dones, infos = env.step(act(obs))
            steps += 1
            returns += rewards
            for i in np.flatnonzero(dones):
                if done_count[i] < quota[i]:
                    rows.append(_episode(infos[i], int(steps[i]), returns[i]))
                    done_count[i] += 1
                steps[i], returns[i] = 0, 0.0
    else:
        for i in range(episodes):
            obs, info = env.reset(seed=None if seed is None else seed + i)
            done, steps, ret = False, 0, 0.0
            while not done:
                obs, reward, terminated, truncated, info = env.step(act(obs))
                steps += 1
                ret += float(reward)
                done = terminated or truncated
            rows.append(_episode(info, steps, ret))
    return rows
