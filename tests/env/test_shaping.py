"""Potential-based shaping of the pick-style skills: staged potential, telescoping sum, pass-through."""

from __future__ import annotations

import os

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import behavior_gym  # noqa: F401
from behavior_gym.wrappers.shaping import PHI_MAX, ManipulationShaping, moved_and_target


def _expert_episode(task: str, seed: int, coef: float = 1.0):
    os.environ.setdefault("MUJOCO_GL", "egl")
    from behavior_gym.experts import make_expert

    env = ManipulationShaping(gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, image_size=32), coef)
    expert = make_expert(env)
    obs, info = env.reset(seed=seed)
    expert.reset()
    phis, shaping, rewards = [info["phi"]], [], []
    for _ in range(env.unwrapped.max_episode_steps):
        obs, r, terminated, truncated, info = env.step(expert.act(obs))
        phis.append(info["phi"])
        shaping.append(info["shaping"])
        rewards.append(r)
        if terminated or truncated:
            break
    env.close()
    return np.array(phis), np.array(shaping), np.array(rewards), info


@pytest.mark.parametrize("task", ["pick_and_place", "stacking"])
def test_potential_rises_through_the_stages_of_an_expert_episode(task):
    phis, shaping, rewards, info = _expert_episode(task, seed=3, coef=2.0)
    assert info["success"] and phis[-1] == PHI_MAX
    assert phis[0] < 1.0  # hand away from the object, nothing lifted
    assert (phis >= 2.0).any()  # lifted at some point (reach term + 2)
    stage = [phis[: i + 1].max() for i in range(len(phis))]
    assert phis[-1] == max(stage)
    # Telescoping: the shaping terms add up to coef * (phi_end - phi_0) / PHI_MAX, at most coef.
    assert shaping.sum() == pytest.approx(2.0 * (phis[-1] - phis[0]) / PHI_MAX, abs=1e-6)
    assert 0 < shaping.sum() <= 2.0
    # The env's own reward is still there: success adds the potential reward (1) on the last step.
    assert rewards[-1] - shaping[-1] == pytest.approx(1.0, abs=1e-6)


def test_other_tasks_pass_through_and_bad_coef_is_refused():
    env = ManipulationShaping(gym.make("Behavior-R1Pro-v0", task="open_drawer", image_size=32))
    _, info = env.reset(seed=0)
    _, r, *_, info = env.step(env.action_space.sample() * 0)
    assert not env.active and "shaping" not in info and "phi" not in info
    env.close()
    with pytest.raises(ValueError, match=">= 0"):
        ManipulationShaping(gym.make("Behavior-R1Pro-v0", task="stacking", image_size=32), -1.0)


def test_moved_and_target_of_each_skill():
    env = gym.make("Behavior-R1Pro-v0", task="stacking", image_size=32)
    env.reset(seed=0)
    assert moved_and_target(env.unwrapped.backend.task) == ("cube.n.05_1", "cube.n.05_2")
    env.close()
    env = gym.make("Behavior-R1Pro-v0", task="pick_and_place", instance_id=0, image_size=32)
    env.reset(seed=0)
    moved, target = moved_and_target(env.unwrapped.backend.task)
    assert target.startswith(("bowl", "plate")) and moved != target
    env.close()


def test_env_spec_applies_shaping_only_when_asked():
    from algorithms.distributed.env_worker import EnvSpec

    for coef, shaped in [(0.0, False), (0.5, True)]:
        env = EnvSpec(task="stacking", chunk=2, image_size=32, reward_shaping=coef).make()
        env.reset(seed=0)
        info = env.step(np.zeros(env.action_space.shape, np.float32))[-1]
        assert ("shaping" in info) == shaped
        env.close()


def test_skill_progress_reads_the_goal_checks_state_and_matches_a_fresh_refresh():
    """SkillProgress reuses the boxes the env's goal check computed after the same control step (no second
    refresh), and reads what a forced refresh reads; a physics step or an explicit update refreshes it."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from behavior_gym.experts import make_expert
    from behavior_gym.wrappers.shaping import SkillProgress

    env = gym.make("Behavior-R1Pro-v0", task="pick_and_place", instance_id=1, image_size=32)
    expert = make_expert(env)
    obs, _ = env.reset(seed=1)
    expert.reset()
    backend = env.unwrapped.backend
    progress, state = SkillProgress(backend), backend.task.state
    for step in range(env.unwrapped.max_episode_steps):
        obs, _, terminated, truncated, _ = env.step(expert.act(obs))
        state.refresh(backend.data)  # what the goal check left: nothing to do
        boxes = state._aabb
        assert boxes is not None  # the goal check of this step computed them
        reused = progress()
        assert state._aabb is boxes, "SkillProgress recomputed the boxes of this step"
        state.update(backend.data)  # forced: drops the boxes
        assert progress() == pytest.approx(reused, abs=1e-12)
        if terminated or truncated or step == 150:
            break
    assert reused[1] > 0.02  # the expert lifted the object: the values followed the episode
    # A body moved without stepping time: refresh keeps the old boxes until update is called.
    qadr = backend.model.jnt_qposadr[backend.model.body(progress.moved).jntadr[0]]
    backend.data.qpos[qadr + 2] += 0.5
    mujoco.mj_forward(backend.model, backend.data)
    state.refresh(backend.data)
    assert progress()[1] == pytest.approx(reused[1], abs=1e-9)  # same time: the step's boxes, by contract
    state.update(backend.data)
    assert progress()[1] > reused[1] + 0.4
    env.close()
