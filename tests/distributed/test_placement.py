"""`cluster.component_placement` parsing: the user guide's three layouts, multi-node ids and errors."""

import pytest

from algorithms.distributed.placement import (
    Device,
    PlacementError,
    actor_devices,
    cuda_visible_devices,
    env_worker_devices,
    parse_component_placement,
    parse_device_ids,
    rollout_worker_devices,
)


def gpus(placement, component):
    return [d.node * placement.gpus_per_node + d.gpu for d in placement.devices[component]]


def test_hybrid_layout_of_the_user_guide():
    p = parse_component_placement({"env": "0-3", "rollout": "4-7", "actor": "0-7"}, num_nodes=1, gpus_per_node=8)
    assert gpus(p, "env") == [0, 1, 2, 3] and gpus(p, "rollout") == [4, 5, 6, 7] and gpus(p, "actor") == list(range(8))
    assert p.layout == "hybrid" and not p.rollout_in_actor
    assert [d.gpu for d in rollout_worker_devices(p)] == [4, 5, 6, 7]
    # two env workers per env GPU, from GPU 0 upwards (Isaac Sim)
    assert [d.gpu for d in env_worker_devices(p, 2)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert actor_devices(p) == (0, [Device(0, g) for g in range(8)])


def test_collocated_layout_of_the_user_guide():
    p = parse_component_placement({"env,rollout,actor": "all"}, num_nodes=1, gpus_per_node=8)
    assert all(gpus(p, c) == list(range(8)) for c in ("env", "rollout", "actor"))
    assert p.layout == "collocated" and p.rollout_in_actor
    assert rollout_worker_devices(p) == []  # the actor's own policy acts: no weight copies


def test_disaggregated_layout_of_the_user_guide():
    p = parse_component_placement({"env": "0-1", "rollout": "2-5", "actor": "6-7"}, num_nodes=1, gpus_per_node=8)
    assert gpus(p, "env") == [0, 1] and gpus(p, "rollout") == [2, 3, 4, 5] and gpus(p, "actor") == [6, 7]
    assert p.layout == "disaggregated"
    assert cuda_visible_devices(actor_devices(p)[1]) == "6,7"
    assert "disaggregated" in p.describe() and "rollout: GPU 2-5" in p.describe()


def test_cpu_cluster_runs_all_on_cpus():
    p = parse_component_placement({"env,rollout,actor": "all"}, num_nodes=1, gpus_per_node=0)
    assert p.devices["env"] == (Device(0),) and not p.on_gpus
    assert env_worker_devices(p, 2) == [Device(0), Device(0)]
    assert cuda_visible_devices(p.devices["actor"]) == ""
    with pytest.raises(PlacementError, match="no GPUs") as e:
        parse_component_placement({"env": "0-3", "rollout": "4-7", "actor": "0-7"}, 1, 0)
    assert e.value.key == "cluster.component_placement.env"


def test_multi_node_ids_are_global():
    p = parse_component_placement({"env": "0-3,8-11", "rollout": "4-7,12-15", "actor": "all"}, num_nodes=2,
                                  gpus_per_node=8)
    assert p.nodes("env") == [0, 1]
    assert p.devices["env"][4] == Device(1, 0) and p.devices["rollout"][-1] == Device(1, 7)
    assert [str(d) for d in env_worker_devices(p, 1)][4] == "node 1 GPU 0"
    assert actor_devices(p)[0] == 0 and len(actor_devices(p)[1]) == 8  # the trainer's node


def test_a_later_entry_re_places_a_component():
    """Hydra merges an override into the inherited mapping: its entries come later and win."""
    p = parse_component_placement({"env,rollout,actor": "all", "env": "0-1", "rollout": "2-5", "actor": "6-7"}, 1, 8)
    assert p.layout == "disaggregated" and gpus(p, "rollout") == [2, 3, 4, 5]
    p = parse_component_placement({"env": "0-3", "rollout": "4-7", "actor": "0-7", "env,rollout,actor": "all"}, 1, 8)
    assert p.layout == "collocated"


@pytest.mark.parametrize("value,ids", [("all", None), (3, [3]), ("0-3", [0, 1, 2, 3]), ("0-1, 4,6-7", [0, 1, 4, 6, 7]),
                                       ([2, 0], [0, 2]), ("5", [5])])
def test_device_id_syntax(value, ids):
    assert parse_device_ids(value, "k") == ids


@pytest.mark.parametrize("spec,key,match", [
    ({"env": "0-3", "rollout": "4-8", "actor": "0-7"}, "cluster.component_placement.rollout", "GPU 8 does not exist"),
    ({"env": "0-3", "rollout": "4-7", "critic": "0-7"}, "cluster.component_placement.critic", "unknown component"),
    ({"env": "0-3", "rollout": "4-7"}, "cluster.component_placement", "no placement for actor"),
    ({"env,env": "all", "rollout": "0", "actor": "all"}, "cluster.component_placement.env,env", "component twice"),
    ({"env": "3-1", "rollout": "4-7", "actor": "0-7"}, "cluster.component_placement.env", "a <= b"),
    ({"env": "0-1,1", "rollout": "4-7", "actor": "0-7"}, "cluster.component_placement.env", "appear twice"),
    ({"env": "zero", "rollout": "4-7", "actor": "0-7"}, "cluster.component_placement.env", "cannot read"),
    ({"env": -1, "rollout": "4-7", "actor": "0-7"}, "cluster.component_placement.env", "ids start at 0"),
    ({}, "cluster.component_placement", "must map components"),
])
def test_bad_placements_name_their_key(spec, key, match):
    with pytest.raises(PlacementError, match=match) as e:
        parse_component_placement(spec, num_nodes=1, gpus_per_node=8)
    assert e.value.key == key and str(e.value).startswith(key)
