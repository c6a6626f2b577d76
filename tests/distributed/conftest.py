import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _ray(tmp_path_factory, **resources):
    """Ray started from a temporary folder: its workers run there (MuJoCo's warning log stays out of the
    checkout)."""
    import ray

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray"))
    try:
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False, **resources)
    finally:
        os.chdir(here)
    return ray


@pytest.fixture(scope="module")
def ray_cpu(tmp_path_factory):
    """A 2-CPU Ray for one test module (shut down after it)."""
    yield _ray(tmp_path_factory, num_cpus=2)
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_8_gpus(tmp_path_factory):
    """A 2-CPU Ray that believes it has 8 GPUs: placement and CUDA_VISIBLE_DEVICES can be checked on a CPU."""
    yield _ray(tmp_path_factory, num_cpus=2, num_gpus=8)
    import ray

    ray.shutdown()


def small_spec(**kw):
    from algorithms.distributed.env_worker import EnvSpec

    return EnvSpec(**{"task": "pick_and_place", "chunk": 8, "image_size": 32, "obs_every": 8, "max_episode_steps": 48,
                      **kw})
