"""Scripted experts solve their tasks; IK reaches; the recorder writes readable HDF5 demos."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import behavior_gym  # noqa: F401
from behavior_gym.experts import EXPERTS, make_expert
from behavior_gym.experts.base import GRIP
from behavior_gym.experts.ik import ArmIK, grasp_rotation
from behavior_gym.spaces import ACTION_HIGH, ACTION_LOW


def _episode(task: str, seed: int):
    env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, obs_every=10**9, image_size=32)
    obs, info = env.reset(seed=seed)
    expert = make_expert(env)
    expert.reset()
    for _ in range(env.unwrapped.max_episode_steps):
        a = expert.act(obs)
        assert a.shape == (23,) and a.dtype == np.float32
        assert np.all(a >= ACTION_LOW - 1e-6) and np.all(a <= ACTION_HIGH + 1e-6)
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    env.close()
    return info, expert


@pytest.mark.parametrize("task", sorted(EXPERTS))
def test_expert_solves_its_task(task):
    wins = 0
    for seed in range(3):
        info, expert = _episode(task, seed)
        wins += info["success_once"]
    assert wins >= 2, f"{task}: {wins}/3 ({expert.failed})"


@pytest.mark.parametrize("task, min_wins", [("picking_up_trash", 3), ("setting_mousetraps", 3), ("picking_up_toys", 2),
                                            ("outfit_a_basic_toolbox", 3)])
def test_goal_expert_solves_challenge_task(task, min_wins):
    """BEHAVIOR challenge tasks solved by the goal-driven expert (>= 70% over 50 seeds in
    benchmarks/expert_success.py); seeds 3..6 here, disjoint from the generic test's 0..2.
    picking_up_toys (six toys into one box, ~76%) is held to half of these four seeds."""
    from behavior_gym.experts import BEHAVIOR_EXPERT_TASKS, GoalExpert

    assert task in BEHAVIOR_EXPERT_TASKS and EXPERTS[task] is GoalExpert
    wins = sum(bool(_episode(task, seed)[0]["success_once"]) for seed in range(3, 7))
    assert wins >= min_wins, f"{task}: {wins}/4"


def test_goal_expert_plans_doable_alternatives():
    """setting_mousetraps wants 2 mousetraps (under or next to) the sink: bddl's truncated product
    of ground options shows only `under`; the expert's per-condition plan finds `nextto`."""
    from behavior_gym.experts import GoalExpert

    env = gym.make("Behavior-R1Pro-v0", task="setting_mousetraps", obs_every=10**9, image_size=32)
    env.reset(seed=0)
    plan = GoalExpert(env)._plan()
    env.close()
    near_sink = [lit for lit in plan if lit[0] == "nextto" and lit[2].startswith("sink")]
    assert len(near_sink) == 2 and plan[:2] == near_sink  # placed by the sink first: on the floor too
    assert {lit[0] for lit in plan} <= {"nextto", "ontop"}


def test_skill_experts_are_short():
    info, _ = _episode("stacking", 0)
    assert info["success_once"] and info["episode_len"] <= 300


def _creep(base_speed: list[float], low: float = 0.02, high: float = 0.1) -> int:
    """The longest run of steps with a slow drive command (a creeping base; below `low` are the
    hold's corrections of where the base stands)."""
    longest = run = 0
    for v in base_speed:
        run = run + 1 if low < v < high else 0
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("task", ["pick_and_place", "stacking"])
def test_skill_experts_grasp_with_one_arm_and_never_creep(task):
    """Demonstrations for cloning: always the left arm (an OFT policy decodes each joint's token on its
    own, so a choice of arm by the object's side is a bimodal target), always the same IK mode; the
    base, where it moves at all, moves visibly to the end instead of creeping the last centimetres;
    and, in the "mobile" layout, each grasp is made from the standoff, the object at one spot in front
    of the left shoulder (the "tabletop" layout's experts never drive: tests/tasks/test_skill_layouts.py)."""
    from behavior_gym.wrappers.shaping import moved_and_target

    at_standoff = 0
    for seed in range(4):
        env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, obs_every=10**9, image_size=32,
                       layout="mobile")
        obs, _ = env.reset(seed=seed)
        expert = make_expert(env)
        expert.reset()
        base, grip, grasped_at = [], [], None
        obj = moved_and_target(env.unwrapped.backend.task)[0]
        for _ in range(env.unwrapped.max_episode_steps):
            a = expert.act(obs)
            if grasped_at is None and a[GRIP["left"]] < 0 and (not grip or grip[-1][0] >= 0):
                grasped_at = expert.to_robot(expert.center(obj))[:2]
            base.append(float(np.linalg.norm(a[:2])))
            grip.append(a[[GRIP["left"], GRIP["right"]]])
            obs, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                break
        env.close()
        assert info["success_once"], (task, seed, expert.failed)
        grip = np.array(grip)
        assert np.ptp(grip[:, 0]) > 0.5 and np.ptp(grip[:, 1]) == 0, f"{task} seed {seed}: not the left hand alone"
        assert _creep(base) <= 6, f"{task} seed {seed}: the base crept for {_creep(base)} steps"
        # One IK mode (torso free), not "arm alone if that reaches": no switch between two postures.
        assert expert._lock.get("left") is False, f"{task} seed {seed}: reached with the torso held"
        at_standoff += np.linalg.norm(grasped_at - (0.55, 0.17)) < 0.05
    # (Furniture can keep the base from the exact spot.)
    assert at_standoff >= 3, f"{task}: only {at_standoff} of 4 grasps from the standoff"


def test_ik_reaches_table_and_floor():
    env = gym.make("Behavior-R1Pro-v0", task="pick_and_place", obs_every=10**9, image_size=32)
    env.reset(seed=0)
    backend = env.unwrapped.backend
    ik = ArmIK(backend.model, "left")
    base = backend.data.qpos[backend.idx.base_qpos].copy()
    for target in ((0.6, 0.2, 0.8), (0.5, 0.25, 0.1)):
        p = np.array(target) + np.array([base[0], base[1], 0.0])
        _, err = ik.solve(backend.data, p, grasp_rotation(base[2]))
        assert err < 0.01, (target, err)
    env.close()


def test_make_expert_unknown_task():
    env = gym.make("Behavior-R1Pro-v0", task="cleaning_up_plates_and_food", obs_every=10**9, image_size=32)
    with pytest.raises(ValueError, match="no scripted expert"):
        make_expert(env)
    env.close()


def test_recorder_writes_hdf5(tmp_path):
    from behavior_gym.experts.recorder import read_episode, record_episodes

    path = tmp_path / "demos.hdf5"
    counts = record_episodes("open_drawer", 1, path, image_size=64)
    assert counts["written"] == 1
    ep = read_episode(path, 0)
    n = ep["episode_len"]
    assert ep["head_rgb"].shape == (n, 3, 64, 64) and ep["head_rgb"].dtype == np.uint8
    assert ep["wrist_rgb"].shape == (n, 2, 3, 64, 64)
    assert ep["proprio"].shape == (n, 61) and ep["actions"].shape == (n, 23)
    assert ep["instruction"].startswith("Open a drawer")
    assert bool(ep["success"]) and ep["task"] == "open_drawer"
    assert ep["head_rgb"].max() > 0  # real images


def test_bc_clonability_records_chunks_and_fits_one_episode():
    """benchmarks/bc_clonability.py: chunk targets are the next K expert actions; DART noise changes
    what is executed, not the labels; the OFT-factorised clone memorises one episode; the `side`
    variant takes the arm on the object's side."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    from benchmarks import bc_clonability as B

    d = B._record(("pick_and_place", 0, "one", 0.0, 0.0))
    assert d is not None and d["chunks"].shape[1:] == (B.K, 23) and d["pos"].shape[1] == 6
    np.testing.assert_array_equal(d["chunks"][1:, 0], d["chunks"][:-1, 1])
    noisy = B._record(("pick_and_place", 0, "one", 0.002, 0.0))
    assert noisy is not None
    # Nearly the same labels at first (the script's commands hardly read the state), other states.
    np.testing.assert_allclose(noisy["chunks"][:5, 0], d["chunks"][:5, 0], atol=0.02)
    assert np.abs(noisy["proprio"][10] - d["proprio"][10]).max() > 1e-5
    clone = B.train([d], noise=0.0, steps=150, batch=64, seed=0)
    assert clone["token_accuracy"] > 0.6, clone["token_accuracy"]
    # `standoff_nosettle`: no steps held after an arm move (`joint_settle_max = 0`), the episode still succeeds
    quick = B._record(("pick_and_place", 0, "standoff_nosettle", 0.0, 0.0))
    slow = B._record(("pick_and_place", 0, "standoff", 0.0, 0.0))
    assert quick is not None and slow is not None and len(quick["chunks"]) < len(slow["chunks"])
    # `--time-feature`: the step count joins the features (workers read it from the environment)
    os.environ["BC_TIME_FEATURE"] = "1"
    try:
        timed = B._record(("pick_and_place", 0, "one", 0.0, 0.0))
    finally:
        os.environ.pop("BC_TIME_FEATURE")
    assert timed["yaws"].shape[1] == d["yaws"].shape[1] + 1 and timed["yaws"][3, -1] == pytest.approx(3 / 300)
    # `--decode`: greedy, sampled (temperature 1) or sampled:T
    assert [B._sampling(B._decode_mode(m))[0] for m in ("greedy", "sampled", "sampled:0.5")] == [0.0, 1.0, 0.5]
    with pytest.raises(Exception, match="temperature T > 0"):
        B._decode_mode("sampled:0")
    # ACT's temporal ensemble: each live chunk's action for the step, the oldest weighted most
    a, b = np.zeros((B.K, 23)), np.ones((B.K, 23))
    np.testing.assert_allclose(B.temporal_ensemble([(0, a), (1, b)], 1, m=np.log(2)), 1 / 3)
    np.testing.assert_allclose(B.temporal_ensemble([(0, a), (1, b)], B.K, m=np.log(2)), 1.0)  # chunk 0 is over
    # In the "mobile" layout (`--layout mobile`) some seed puts the object on the robot's right:
    # `side` grasps it with the right hand.
    arms_used = set()
    os.environ["BC_LAYOUT"] = "mobile"
    try:
        for seed in range(6):
            ep = B._record(("pick_and_place", seed, "side", 0.0, 0.0))
            if ep is not None:
                grip = ep["chunks"][:, 0][:, [GRIP["left"], GRIP["right"]]]
                arms_used |= {arm for arm, g in zip(("left", "right"), grip.T) if np.ptp(g) > 0.5}
    finally:
        os.environ.pop("BC_LAYOUT")
    assert arms_used == {"left", "right"}, arms_used


@pytest.mark.parametrize("task", ["pick_and_place", "stacking"])
def test_servo_expert_solves_its_task_closed_loop(task):
    """The closed-loop expert (re-planned every step from the measured state) solves its task."""
    from behavior_gym.experts.servo import SERVO_EXPERTS

    wins = 0
    for seed in range(3):
        env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=seed, obs_every=10**9, image_size=32)
        obs, _ = env.reset(seed=seed)
        expert = SERVO_EXPERTS[task](env)
        expert.reset()
        for _ in range(env.unwrapped.max_episode_steps):
            a = expert.act(obs)
            assert np.all(a >= ACTION_LOW - 1e-6) and np.all(a <= ACTION_HIGH + 1e-6)
            obs, _, terminated, truncated, info = env.step(a)
            if terminated or truncated:
                break
        env.close()
        wins += info["success_once"]
    assert wins >= 2, f"{task}: {wins}/3"


def test_recovery_drives_are_flagged_recorded_and_left_out_of_sft_samples(tmp_path):
    """`recovery_offset`: after some drives the base is displaced (flagged `perturbing`, stored as
    `expert_label` False) and the expert drives back and still succeeds; SFT keeps no sample whose
    chunk holds a displacement action. (The "mobile" layout: in "tabletop" the base never drives.)"""
    import h5py

    from algorithms.sft import load_demos
    from behavior_gym.experts.recorder import read_episode, record_episode, write_episode

    env = gym.make("Behavior-R1Pro-v0", task="pick_and_place", instance_id=3, image_size=16, layout="mobile")
    expert = make_expert(env)
    expert.recovery_prob = 1.0  # every drive displaced
    ep = record_episode(env, expert, seed=3, recovery_offset=0.1)
    env.close()
    label = ep["expert_label"]
    assert ep["success"] and label.dtype == bool and len(label) == ep["episode_len"]
    assert 0 < (~label).sum() < 0.3 * len(label)  # some displacement steps, not most
    # The steps after a displacement drive the base back: it moves again while labelled.
    ends = np.flatnonzero(~label[:-1] & label[1:])
    assert len(ends) >= 1 and np.abs(ep["actions"][ends[0] + 1: ends[0] + 6, :2]).max() > 0.05
    path = tmp_path / "demos.hdf5"
    with h5py.File(path, "a") as f:
        f.attrs.update(format="behavior_gym.demos", version=1, image_size=16, control_hz=30)
        write_episode(f, ep, "pick_and_place", 3, 3)
    np.testing.assert_array_equal(read_episode(path, 0)["expert_label"], label)
    demos = load_demos([str(path)], chunk=8)
    bad = np.flatnonzero(~label)
    starts = {t for t in range(len(label)) if not any(t <= b < t + 8 for b in bad)}
    assert len(demos) == len(starts) < len(label)
    # Each kept sample's chunk is a run of the recorded actions none of which is a displacement.
    kept = sorted(starts)
    np.testing.assert_array_equal(demos.chunks[:, 0], ep["actions"][kept])
