"""One simulator per process: GPU assignment from 0, one env per worker, clean shutdown."""

import os

import numpy as np
import pytest

from behavior_gym.backends.mujoco.robot import reset_action
from behavior_gym.backends.omnigibson.processes import assign_gpus, make_subproc_vec_env


def test_gpus_assigned_round_robin_from_zero():
    assert assign_gpus(5, [0, 1]) == [0, 1, 0, 1, 0]
    assert assign_gpus(3, None) == [None, None, None]
    assert assign_gpus(2, [2, 3]) == [2, 3]
    with pytest.raises(ValueError, match=">= 0"):
        assign_gpus(2, [-1])


def test_subproc_vec_env_one_process_per_env_and_clean_shutdown():
    # One EGL device here (llvmpipe), so both workers render on device 0.
    venv = make_subproc_vec_env("pick_and_place", 2, gpu_ids=[0], seed=3, image_size=32)
    pids = [p.pid for p in venv.processes]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert venv.get_attr("gpu_id") == [0, 0]
    obs = venv.reset()
    assert obs["head_rgb"].shape == (2, 3, 32, 32)
    obs, rew, done, infos = venv.step(np.stack([reset_action()] * 2))
    assert [i["episode_len"] for i in infos] == [1, 1]
    venv.close()
    for p in venv.processes:
        p.join(timeout=10)
        assert not p.is_alive()
