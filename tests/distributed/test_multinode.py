"""Two Ray nodes on this machine (4 declared GPUs each): workers land on the node of their GPUs."""

import pytest

from algorithms.distributed.cluster import NodeReservation, gpus_per_node
from algorithms.distributed.placement import parse_component_placement, rollout_worker_devices

from .test_placement_ray import probe


@pytest.mark.slow
def test_two_nodes_each_worker_on_its_node():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 4})
    cluster.add_node(num_cpus=1, num_gpus=4)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        cluster.wait_for_nodes()
        assert gpus_per_node(2) == 4
        placement = parse_component_placement({"env": "0-1,4-5", "rollout": "2-3,6-7", "actor": "0-7"}, 2, 4)
        reservation = NodeReservation.create(2, 4, timeout_s=60)
        try:
            nodes = [probe(ray, reservation.options([d])) for d in rollout_worker_devices(placement)]
            assert [v for _, v in nodes] == ["2", "3", "2", "3"]
            assert nodes[0][0] == nodes[1][0] != nodes[2][0] == nodes[3][0]  # GPUs 2-3 of node 0, then of node 1
        finally:
            reservation.remove()
    finally:
        ray.shutdown()
        cluster.shutdown()
