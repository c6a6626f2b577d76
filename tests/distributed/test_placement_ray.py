"""The three layouts of the user guide placed on a Ray cluster with 8 (declared) GPUs: each worker
sees exactly its GPUs."""

import pytest

from algorithms.distributed.cluster import NodeReservation, gpus_per_node
from algorithms.distributed.placement import (
    actor_devices,
    env_worker_devices,
    parse_component_placement,
    rollout_worker_devices,
)
from algorithms.distributed.runner import EmbodiedRunner

LAYOUTS = {
    "hybrid": ({"env": "0-3", "rollout": "4-7", "actor": "0-7"}, ["4", "5", "6", "7"], "0,1,2,3,4,5,6,7"),
    "collocated": ({"env,rollout,actor": "all"}, [], "0,1,2,3,4,5,6,7"),
    "disaggregated": ({"env": "0-1", "rollout": "2-5", "actor": "6-7"}, ["2", "3", "4", "5"], "6,7"),
}


def probe(ray, options):
    """Start a light actor (the runner class, not run) with `options`; return its node and CUDA devices."""
    actor = ray.remote(EmbodiedRunner).options(**options).remote(None, None, None, "")
    try:
        _, visible = ray.get(actor.ping.remote())
        node = ray.get(actor.__ray_call__.remote(lambda self: __import__("ray").get_runtime_context().get_node_id()))
        return node, visible
    finally:
        ray.kill(actor)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_workers_see_the_gpus_of_their_component(ray_8_gpus, layout):
    spec, rollout_visible, actor_visible = LAYOUTS[layout]
    assert gpus_per_node(1) == 8
    placement = parse_component_placement(spec, 1, gpus_per_node(1))
    reservation = NodeReservation.create(1, 8, timeout_s=30)
    try:
        visible = [probe(ray_8_gpus, reservation.options([d]))[1] for d in rollout_worker_devices(placement)]
        assert visible == rollout_visible
        assert probe(ray_8_gpus, reservation.options(actor_devices(placement)[1]))[1] == actor_visible
        # env workers keep every GPU visible and tell their simulator its GPU id (from 0)
        env_opts = reservation.options([env_worker_devices(placement, 1)[0]], visible=False)
        assert "runtime_env" not in env_opts and env_worker_devices(placement, 1)[0].gpu == 0
    finally:
        reservation.remove()


def test_too_few_nodes_is_a_config_error(ray_8_gpus):
    with pytest.raises(ValueError, match="cluster.num_nodes: 2 nodes asked for but the Ray cluster has 1"):
        gpus_per_node(2)
