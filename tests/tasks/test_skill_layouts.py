"""Skill layouts: "tabletop" (default) starts the moved object and its target in small rectangles in
front of the left arm, and its experts never drive; "mobile" spreads them over the table."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import behavior_gym  # noqa: F401
from behavior_gym.tasks.skills import TABLETOP
from behavior_gym.wrappers.shaping import moved_and_target


def _starts(task: str, seeds, **kw) -> list[tuple[np.ndarray, np.ndarray]]:
    """(moved object xy, target xy) at reset, world frame (the robot's nominal start is the origin)."""
    out = []
    for seed in seeds:
        env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, obs_every=10**9, image_size=16, **kw)
        env.reset(seed=seed)
        backend = env.unwrapped.backend
        moved, target = moved_and_target(backend.task)
        xpos = {n: backend.data.xpos[backend.model.body(n).id][:2].copy() for n in (moved, target)}
        out.append((xpos[moved], xpos[target]))
        env.close()
    return out


def _inside(xy, region, slack=0.01) -> bool:
    (cx, cy), (hx, hy) = region
    return abs(xy[0] - cx) <= hx + slack and abs(xy[1] - cy) <= hy + slack


@pytest.mark.parametrize("task", ["pick_and_place", "stacking", "rearrangement"])
def test_tabletop_starts_objects_in_their_regions(task):
    seeds = [0, 1, 2, 7, 100000, 100003]
    for moved, target in _starts(task, seeds):
        assert _inside(moved, TABLETOP["object"]), (task, moved)
        assert _inside(target, TABLETOP["target"]), (task, target)


def test_mobile_spreads_objects_over_the_table():
    starts = _starts("pick_and_place", range(6), layout="mobile")
    outside = sum(not _inside(m, TABLETOP["object"]) for m, _ in starts)
    assert outside >= 3, starts
    assert np.ptp([m[1] for m, _ in starts]) > 0.3  # across the table, not one spot


def test_unknown_layout_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'tabletop'.*'mobile'"):
        gym.make("Behavior-R1Pro-v0", task="pick_and_place", layout="shelf", image_size=16)


@pytest.mark.parametrize("task", ["pick_and_place", "stacking"])
def test_tabletop_experts_never_drive(task):
    from behavior_gym.experts import make_expert

    for seed in range(2):
        env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, obs_every=10**9, image_size=16)
        obs, _ = env.reset(seed=seed)
        expert = make_expert(env)
        expert.reset()
        assert expert.always_standoff is False
        base = []
        for _ in range(env.unwrapped.max_episode_steps):
            a = expert.act(obs)
            base.append(np.abs(a[:3]).max())
            obs, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                break
        env.close()
        assert info["success_once"], (task, seed, expert.failed)
        assert max(base) < 0.03, f"{task} seed {seed}: the base was driven ({max(base):.3f})"


def test_layout_reaches_skill_envs_only_and_is_checked():
    """`env.train.layout` / `layout=` of collect_demos and evaluate become `gym.make(layout=...)` for
    the embedded skill tasks only (BEHAVIOR activities have no skill layout)."""
    from algorithms.distributed.env_worker import EnvSpec
    from behavior_gym.tasks.skills import layout_kwargs

    assert layout_kwargs("pick_and_place", "mobile") == {"layout": "mobile"}
    assert layout_kwargs("turning_on_radio", "mobile") == {}
    assert layout_kwargs("pick_and_place", None) == {}
    assert layout_kwargs("pick_and_place", "mobile", backend="omnigibson") == {}
    with pytest.raises(ValueError, match="not one of"):
        layout_kwargs("pick_and_place", "shelf")
    env = EnvSpec(task="pick_and_place", image_size=16, chunk=2, obs_every=10**9, layout="mobile").make()
    try:
        assert env.unwrapped.backend.task.layout == "mobile"
    finally:
        env.close()


def test_recorder_records_the_layout_it_is_given(tmp_path):
    """`collect_demos.py layout=mobile` reaches the recorded episodes: the moved object's first position
    (the privileged `points`, robot frame) lies in the tabletop rectangle only without it."""
    from behavior_gym.experts.recorder import read_episode, record_episodes

    first = {}
    for layout in ("mobile", None):
        path = tmp_path / f"{layout}.hdf5"
        record_episodes("pick_and_place", 1, path, seed0=3, image_size=32, layout=layout)
        first[layout] = read_episode(path, 0)["points"][0, 0, :2]
    assert _inside(first[None], TABLETOP["object"], slack=0.05), first
    assert not _inside(first["mobile"], TABLETOP["object"], slack=0.05), first
