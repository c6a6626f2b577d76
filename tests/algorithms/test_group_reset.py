"""GRPO's grouped resets: identical initial states within a group, partial resets across groups."""

import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from algorithms import GRPO
from algorithms.group_reset import GroupResetVecEnv
from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper


def assert_same_obs(obs, i, j):
    for key, value in obs.items():
        np.testing.assert_array_equal(value[i], value[j], err_msg=key)


def obs_differ(obs, i, j) -> bool:
    return any(not np.array_equal(value[i], value[j]) for value in obs.values())


def zero_actions(venv):
    return np.tile((venv.action_space.low + venv.action_space.high) / 2, (venv.num_envs, 1))


def test_groups_start_identically_and_groups_differ(toys):
    venv = GroupResetVecEnv(toys.make_toy_vec_env(6), group_size=3, seed=0)
    obs = venv.reset()
    assert_same_obs(obs, 0, 1)
    assert_same_obs(obs, 0, 2)
    assert_same_obs(obs, 3, 5)
    assert obs_differ(obs, 0, 3)
    assert venv.trajectory_ids().tolist() == [0, 0, 0, 1, 1, 1]
    first_seeds = venv.group_seeds.copy()
    # every group-episode of 3 chunks ends together: the next episode again starts identically per group
    for _ in range(3):
        obs, _, dones, infos = venv.step(zero_actions(venv))
    assert dones.all() and all(info.get("group_reset") for info in infos)
    assert_same_obs(obs, 0, 2)
    assert_same_obs(obs, 3, 4)
    assert (venv.group_seeds != first_seeds).all()
    assert venv.trajectory_ids().tolist() == [2, 2, 2, 3, 3, 3]
    done = venv.pop_completed()
    assert sorted(done) == [0, 1] and done[0].returns.shape == (3,)


def test_same_seed_same_episode_and_reseed(toys):
    a = GroupResetVecEnv(toys.make_toy_vec_env(2), group_size=2, seed=7).reset()
    b = GroupResetVecEnv(toys.make_toy_vec_env(2), group_size=2, seed=7).reset()
    assert_same_obs({k: np.concatenate([a[k], b[k]]) for k in a}, 0, 2)


def test_partial_reset_and_waiting_member(toys):
    """Group 0: members of 1 and 3 chunks; group 1: 5 chunks. Group 0 resets after its slower member,
    its faster member waits (idle, masked); group 1 is never interrupted."""
    lengths = [8, 24, 40, 40]
    fns = [lambda n=n: toys.make_toy_env(max_episode_steps=n) for n in lengths]
    venv = GroupResetVecEnv(DummyVecEnv(fns), group_size=2, seed=0)
    venv.reset()
    log = []
    for _ in range(4):
        _, rewards, dones, infos = venv.step(zero_actions(venv))
        log.append((rewards.copy(), dones.copy(), infos, venv.active.copy(), venv.trajectory_ids().copy()))
    # step 1: member 0 finishes; it is then idle until step 3
    assert log[0][1].tolist() == [True, False, False, False]
    for step in (1, 2):
        rewards, dones, infos, _, _ = log[step]
        assert infos[0]["group_idle"] and rewards[0] == 0.0 and not dones[0]
    assert log[1][2][0] == {"group_idle": True}  # the throw-away episode's info is not passed on
    # step 3: member 1 finishes -> group 0 resets (both members active again, new trajectory id)
    _, dones, infos, active, ids = log[2]
    assert dones[1] and infos[0].get("group_reset") and infos[1].get("group_reset")
    assert active.tolist() == [True, True, True, True]
    assert ids.tolist() == [2, 2, 1, 1]
    # group 1 ran on: its episode_len kept growing, no reset
    assert [log[s][2][2]["episode_len"] for s in range(4)] == [8, 16, 24, 32]
    completed = venv.pop_completed()
    assert list(completed) == [0]


def test_subproc_vec_env(toys):
    fns = [lambda: toys.make_toy_env() for _ in range(4)]
    venv = GroupResetVecEnv(SubprocVecEnv(fns, start_method="fork"), group_size=2, seed=1)
    try:
        obs = venv.reset()
        assert_same_obs(obs, 0, 1)
        assert_same_obs(obs, 2, 3)
        assert obs_differ(obs, 1, 2)
        for _ in range(3):
            obs, _, dones, _ = venv.step(zero_actions(venv))
        assert dones.all()
        assert_same_obs(obs, 0, 1)
    finally:
        venv.close()


def test_group_size_must_divide(toys):
    with pytest.raises(ValueError, match="multiple of group_size"):
        GroupResetVecEnv(toys.make_toy_vec_env(3), group_size=2)


def test_warns_when_a_group_does_not_start_alike(toys):
    class IgnoresSeed(toys.ToyBehaviorEnv):
        def reset(self, *, seed=None, options=None):
            return super().reset(seed=None)

    fns = [lambda: Monitor(SB3ObservationWrapper(ActionChunkWrapper(IgnoresSeed()))) for _ in range(2)]
    with pytest.warns(UserWarning, match="initial observations differ"):
        GroupResetVecEnv(DummyVecEnv(fns), group_size=2, seed=0).reset()


def test_grpo_needs_groups_of_two(toys):
    with pytest.raises(ValueError, match="at least 2"):
        GRPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(2), group_size=1)
