"""The Ray side of placement: connect to (or start) Ray, reserve the nodes, and say where a worker runs.

One placement group holds one bundle per node (``STRICT_SPREAD`` over nodes, so bundle ``i`` is
node rank ``i``), reserving that node's GPUs; every worker is pinned to its node's bundle and asks
Ray for no resources of its own. GPUs are assigned by id, not by Ray's counting, because components
share GPUs (``env: 0-3`` and ``actor: 0-7``): a rollout worker or the trainer gets
``CUDA_VISIBLE_DEVICES`` set to its GPUs; an env worker keeps every GPU visible and hands its GPU id
to the simulator (OmniGibson's ``OMNIGIBSON_GPU_ID``, MuJoCo's EGL device), as `behavior_gym` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from algorithms.distributed.placement import Device, cuda_visible_devices

log = logging.getLogger(__name__)


def local_gpu_count() -> int:
    """GPUs on this machine (without starting Ray)."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def connect(address: str | None, num_nodes: int, num_cpus: int | None = None) -> None:
    """Start Ray on this machine, or join a running cluster (`address`, or "auto" when `num_nodes` > 1)."""
    import ray

    if ray.is_initialized():
        return
    if address is None and num_nodes > 1:
        address = "auto"
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs["num_cpus"] = num_cpus
    ray.init(address=address, **kwargs)


def cluster_nodes() -> list[dict]:
    """Alive Ray nodes, the one this process runs on first."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return sorted(nodes, key=lambda n: (n["NodeID"] != here, n.get("NodeManagerAddress", "")))


def gpus_per_node(num_nodes: int) -> int:
    """The GPUs each of the first `num_nodes` Ray nodes has (the smallest count if they differ).
    Raises ValueError naming `cluster.num_nodes` when the cluster has fewer nodes."""
    nodes = cluster_nodes()
    if len(nodes) < num_nodes:
        raise ValueError(f"cluster.num_nodes: {num_nodes} nodes asked for but the Ray cluster has {len(nodes)}; start "
                         "Ray on every node (`ray start --head` on the first, `ray start --address=<head>:6379` on the "
                         "others) and run this on the head node, or lower cluster.num_nodes")
    counts = [int(n["Resources"].get("GPU", 0)) for n in nodes]
    if len(set(counts[:num_nodes])) > 1:
        log.warning("nodes have different GPU counts %s; using %d per node", counts[:num_nodes], min(counts))
    return min(counts[:num_nodes])


@dataclass
class NodeReservation:
    """A placement group with one bundle per node; `options(devices)` pins a worker to its node."""

    placement_group: Any
    num_nodes: int

    @classmethod
    def create(cls, num_nodes: int, gpus: int, timeout_s: float = 120.0) -> NodeReservation:
        from ray.util.placement_group import placement_group

        bundle = {"CPU": 1.0, **({"GPU": float(gpus)} if gpus else {})}
        pg = placement_group([dict(bundle) for _ in range(num_nodes)],
                             strategy="STRICT_SPREAD" if num_nodes > 1 else "PACK", name="behavior-rl")
        import ray

        ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
        if not ready:
            from ray.util import remove_placement_group

            remove_placement_group(pg)
            raise RuntimeError(f"Ray could not reserve {num_nodes} node(s) with {bundle} each within {timeout_s:.0f} s "
                               f"(cluster resources: {ray.cluster_resources()}); check cluster.num_nodes and that no "
                               "other job holds the GPUs")
        return cls(pg, num_nodes)

    def options(self, devices: Sequence[Device], visible: bool = True, **extra: Any) -> dict:
        """Ray actor options for a worker on `devices` (all on one node). `visible=False` keeps every
        GPU visible (env workers tell their simulator the GPU id instead)."""
        nodes = {d.node for d in devices}
        if len(nodes) != 1:
            raise ValueError(f"a worker runs on one node, got devices on nodes {sorted(nodes)}")
        env_vars = {"CUDA_VISIBLE_DEVICES": cuda_visible_devices(devices)} if visible else {}
        return worker_options(self.placement_group, nodes.pop(), env_vars, **extra)

    def remove(self) -> None:
        from ray.util import remove_placement_group

        remove_placement_group(self.placement_group)


def worker_options(placement_group: Any, node: int, env_vars: dict[str, str], **extra: Any) -> dict:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    opts: dict[str, Any] = {
        "num_cpus": 0, "num_gpus": 0,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=node),
    }
    if env_vars:
        opts["runtime_env"] = {"env_vars": env_vars}
    opts.update(extra)
    return opts


def kill_actors(actors) -> None:
    """Kill Ray actors for good (no restart), ignoring those already gone."""
    import ray

    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception:
            pass
