"""RayVecEnv: envs in Ray env workers, stages, routing of env methods, and replacing a dead worker."""

import numpy as np
import pytest

from algorithms.distributed.vec_env import RayVecEnv, stage_assignment
from behavior_gym.backends.mujoco.robot import reset_action

from .conftest import small_spec

ACTION = np.tile(reset_action(), 8)


def test_stage_assignment_takes_envs_from_every_worker():
    assert [s.tolist() for s in stage_assignment(2, 2, 2)] == [[0, 2], [1, 3]]  # one env of each worker per stage
    assert [s.tolist() for s in stage_assignment(4, 1, 2)] == [[0, 1], [2, 3]]  # whole workers
    assert [s.tolist() for s in stage_assignment(2, 3, 3)] == [[0, 3], [1, 4], [2, 5]]
    assert [s.tolist() for s in stage_assignment(2, 2, 1)] == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="cannot split"):
        stage_assignment(2, 2, 3)


@pytest.fixture(scope="module")
def venv(ray_cpu):
    v = RayVecEnv(small_spec(), 4, [{"num_cpus": 0}] * 2, num_stages=2, max_restarts=2)
    yield v
    v.close()


def rollout(v, steps, staged):
    v.seed(7)
    obs = [v.reset()["head_rgb"]]
    actions = np.stack([ACTION] * v.num_envs)
    for _ in range(steps):
        if staged:
            for s, rows in enumerate(v.stage_indices):
                v.step_stage_async(s, actions[rows])
            v.wait_stage(0)
            v.step_async(actions)
            out = v.step_wait()
        else:
            out = v.step(actions)
        obs.append(out[0]["head_rgb"])
    return np.stack(obs), out


def test_envs_live_in_two_workers_and_step_like_dummy_vec_env(venv):
    assert venv.num_workers == 2 and venv.envs_per_worker == 2 and venv.num_stages == 2
    assert venv.observation_space["head_rgb"].shape == (3, 32, 32) and venv.action_space.shape == (8 * 23,)
    obs, (_, rewards, dones, infos) = rollout(venv, 6, staged=False)
    assert obs.shape == (7, 4, 3, 32, 32) and rewards.shape == (4,)
    assert dones.all() and all(i["TimeLimit.truncated"] for i in infos)  # 6 chunks of 8 = the 48-step limit
    assert infos[0]["terminal_observation"]["head_rgb"].shape == (3, 32, 32)
    pids = {venv.workers[w].ping.remote() for w in range(2)}
    assert len(pids) == 2


def test_staged_stepping_gives_the_same_trajectories(venv):
    plain, _ = rollout(venv, 3, staged=False)
    staged, _ = rollout(venv, 3, staged=True)
    np.testing.assert_array_equal(plain, staged)


def test_env_methods_reach_the_right_env(venv):
    venv.set_attr("tag", "x", indices=[1, 2])
    assert venv.get_attr("task", indices=[3, 0]) == ["pick_and_place"] * 2
    frames = venv.env_method("render", indices=[2])
    assert frames[0].shape == (64, 96, 3)
    obs, info = venv.env_method("reset", seed=3, indices=[1])[0]
    assert obs["head_rgb"].shape == (3, 32, 32)
    with pytest.raises(RuntimeError, match="already sent"):
        venv.step_stage_async(0, np.stack([ACTION] * 2))
        venv.step_stage_async(0, np.stack([ACTION] * 2))
    venv.step_stage_async(1, np.stack([ACTION] * 2))
    venv.step_wait()


def test_a_killed_worker_is_replaced_and_its_episodes_discarded(ray_cpu, venv, caplog):
    venv.reset()
    actions = np.stack([ACTION] * 4)
    venv.step(actions)
    old = ray_cpu.get(venv.workers[1].ping.remote())
    ray_cpu.kill(venv.workers[1])
    with caplog.at_level("WARNING"):
        obs, rewards, dones, infos = venv.step(actions)
    assert dones.tolist() == [False, False, True, True] and rewards[2:].tolist() == [0, 0]
    assert infos[2]["discarded"] and "terminal_observation" in infos[3] and "discarded" not in infos[0]
    assert {(d.env, d.last_step - d.first_step) for d in venv.discards} == {(2, 1), (3, 1)}
    assert ray_cpu.get(venv.workers[1].ping.remote()) != old
    assert "env worker 1 (envs 2-3) died (ActorDiedError); restarted it (1/2)" in caplog.text
    obs, rewards, dones, infos = venv.step(actions)  # the new worker steps its fresh episodes
    assert not dones.any() and infos[2]["episode_len"] == 8 and infos[0]["episode_len"] == 24
    venv.pop_discards()


def test_a_worker_that_dies_too_often_stops_the_run(ray_cpu):
    v = RayVecEnv(small_spec(), 2, [{"num_cpus": 0}], num_stages=1, max_restarts=0)
    try:
        v.reset()
        ray_cpu.kill(v.workers[0])
        with pytest.raises(RuntimeError, match="max_worker_restarts=0"):
            v.step(np.stack([ACTION] * 2))
    finally:
        v.close()
