import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="module")
def ray_cpu():
    """A 2-CPU Ray for one test module (shut down after it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_8_gpus():
    """A 2-CPU Ray that believes it has 8 GPUs: placement and CUDA_VISIBLE_DEVICES can be checked on a CPU."""
    import ray

    ray.init(num_cpus=2, num_gpus=8, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def small_spec(**kw):
    from algorithms.distributed.env_worker import EnvSpec

    return EnvSpec(**{"task": "pick_and_place", "chunk": 8, "image_size": 32, "obs_every": 8, "max_episode_steps": 48,
                      **kw})
