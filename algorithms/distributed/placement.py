"""Component placement: which GPUs (or CPUs) of which nodes the env, rollout and actor workers use.

`cluster.component_placement` maps component names to devices, as in the user guide:

    env: 0-3            # env workers on GPUs 0..3
    rollout: 4-7        # rollout (inference) workers on GPUs 4..7
    actor: 0-7          # the trainer sees GPUs 0..7

    env,rollout,actor: all        # everything shares every GPU (collocated)

    env: 0-1                      # fully disaggregated: each component on its own GPUs
    rollout: 2-5
    actor: 6-7

A key names one or more components separated by commas; a value is ``all``, one id, a range ``a-b``,
a comma-separated mix (``0-1,4,6-7``) or a YAML list. When entries name the same component, the later
one counts: Hydra merges overrides into this mapping, so ``++cluster.component_placement={env: 0-1,
rollout: 2-5, actor: 6-7}`` re-places all three components of a config that says ``env,rollout,actor: all``.
With several nodes, ids are global: GPU ``g`` is local GPU ``g % gpus_per_node`` of node
``g // gpus_per_node`` (RLinf's convention). On a cluster
without GPUs, ``all`` means the CPUs of every node and naming a GPU id is an error.

Everything here is pure (no Ray): `parse_component_placement` turns the config into a
`ComponentPlacement`, and `env_worker_devices` / `rollout_worker_devices` say where each worker goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

COMPONENTS = ("env", "rollout", "actor")
KEY = "cluster.component_placement"


class PlacementError(ValueError):
    """A placement that cannot be used; `key` is the config key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True, order=True)
class Device:
    """One placement slot: local GPU `gpu` of node `node`, or that node's CPUs when `gpu` is None."""

    node: int
    gpu: int | None = None

    @property
    def is_gpu(self) -> bool:
        return self.gpu is not None

    def __str__(self) -> str:
        return f"node {self.node} {'CPU' if self.gpu is None else f'GPU {self.gpu}'}"


@dataclass(frozen=True)
class ComponentPlacement:
    """Where each component runs: `devices[component]` is a sorted tuple of `Device`s."""

    devices: Mapping[str, tuple[Device, ...]]
    num_nodes: int
    gpus_per_node: int

    @property
    def on_gpus(self) -> bool:
        return self.gpus_per_node > 0

    def nodes(self, component: str) -> list[int]:
        return sorted({d.node for d in self.devices[component]})

    @property
    def rollout_in_actor(self) -> bool:
        """Rollout and actor have the same devices: the actor's own policy computes the actions, so no
        separate rollout workers and no weight copies are needed."""
        return set(self.devices["rollout"]) == set(self.devices["actor"])

    @property
    def layout(self) -> str:
        """``collocated`` (all three share the same devices), ``disaggregated`` (no device shared by
        two components) or ``hybrid``."""
        sets = [set(self.devices[c]) for c in COMPONENTS]
        if sets[0] == sets[1] == sets[2]:
            return "collocated"
        if all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:]):
            return "disaggregated"
        return "hybrid"

    def describe(self) -> str:
        parts = []
        for c in COMPONENTS:
            devs = self.devices[c]
            if not self.on_gpus:
                parts.append(f"{c}: CPU of node{'s' if len(devs) > 1 else ''} {_ranges([d.node for d in devs])}")
            else:
                ids = [d.node * self.gpus_per_node + d.gpu for d in devs]
                parts.append(f"{c}: GPU {_ranges(ids)}")
        return f"{self.layout} placement on {self.num_nodes} node(s): " + "; ".join(parts)


def _ranges(ids: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    ids = sorted(ids)
    out, start = [], None
    for i, x in enumerate(ids):
        if start is None:
            start = x
        if i + 1 == len(ids) or ids[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}-{x}")
            start = None
    return ",".join(out)


def parse_device_ids(value: Any, key: str) -> list[int] | None:
    """``all`` -> None; ``3``, ``"0-3"``, ``"0-1,4"``, ``[0, 1]`` -> sorted distinct ids."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    if isinstance(value, bool):
        raise PlacementError(key, f"expected GPU ids such as 0-3 or 'all', got {value!r}")
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise PlacementError(key, f"expected GPU ids such as 0-3, '0-1,4' or 'all', got {value!r}")
    ids: list[int] = []
    for item in items:
        try:
            if isinstance(item, int) and not isinstance(item, bool):
                lo = hi = item
            elif isinstance(item, str) and "-" in item.strip()[1:]:
                a, b = item.split("-", 1)
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(str(item))
        except ValueError:
            raise PlacementError(key, f"cannot read {item!r} in {value!r} as a GPU id or range "
                                      "(write e.g. 0-3, '0-1,4' or all)") from None
        if lo < 0 or hi < lo:
            raise PlacementError(key, f"bad GPU range {item!r} in {value!r}: ids start at 0 and a range a-b "
                                      "needs a <= b")
        ids.extend(range(lo, hi + 1))
    if not ids:
        raise PlacementError(key, f"no GPU ids in {value!r}")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise PlacementError(key, f"GPU id(s) {dup} appear twice in {value!r}")
    return sorted(ids)


def parse_component_placement(spec: Mapping[str, Any], num_nodes: int, gpus_per_node: int) -> ComponentPlacement:
    """Read `cluster.component_placement` for a cluster of `num_nodes` nodes with `gpus_per_node` GPUs
    each (0: CPUs only). Raises `PlacementError` naming the key at fault and how to fix it."""
    if num_nodes < 1:
        raise PlacementError("cluster.num_nodes", f"must be >= 1, got {num_nodes}")
    if not isinstance(spec, Mapping) or not spec:
        raise PlacementError(KEY, "must map components to devices, e.g. {env,rollout,actor: all} or "
                                  "{env: 0-3, rollout: 4-7, actor: 0-7}")
    total = num_nodes * gpus_per_node
    devices: dict[str, tuple[Device, ...]] = {}
    for raw_key, value in spec.items():
        key = f"{KEY}.{raw_key}"
        names = [n.strip() for n in str(raw_key).split(",")]
        for name in names:
            if name not in COMPONENTS:
                raise PlacementError(key, f"unknown component {name!r}; the components are "
                                          f"{', '.join(COMPONENTS)} (several may share a key: 'env,rollout,actor')")
        if len(set(names)) != len(names):
            raise PlacementError(key, "names a component twice")
        ids = parse_device_ids(value, key)
        if ids is None:
            placed = ([Device(n, g) for n in range(num_nodes) for g in range(gpus_per_node)] if total
                      else [Device(n) for n in range(num_nodes)])
        elif total == 0:
            raise PlacementError(key, f"names GPU ids {_ranges(ids)} but the cluster has no GPUs; run on CPUs "
                                      "with cluster.component_placement={env:all,rollout:all,actor:all}")
        else:
            missing = [i for i in ids if i >= total]
            if missing:
                raise PlacementError(key, f"GPU {_ranges(missing)} does not exist: the cluster has {total} GPU(s) "
                                          f"({num_nodes} node(s) x {gpus_per_node}), ids 0-{total - 1}")
            placed = [Device(i // gpus_per_node, i % gpus_per_node) for i in ids]
        for name in names:  # a later entry re-places a component (how Hydra overrides merge into this dict)
            devices[name] = tuple(sorted(placed))
    missing = [c for c in COMPONENTS if c not in devices]
    if missing:
        raise PlacementError(KEY, f"no placement for {', '.join(missing)}; every one of {', '.join(COMPONENTS)} "
                                  "needs devices (e.g. 'env,rollout,actor: all')")
    return ComponentPlacement(devices, num_nodes, gpus_per_node)


def env_worker_devices(placement: ComponentPlacement, workers_per_device: int) -> list[Device]:
    """The device of each env worker: `workers_per_device` workers on each env device, in ascending
    order, so that worker 0 is on the lowest GPU (Isaac Sim wants env processes from GPU 0)."""
    return [d for d in placement.devices["env"] for _ in range(workers_per_device)]


def rollout_worker_devices(placement: ComponentPlacement) -> list[Device]:
    """One rollout worker per rollout device, or none when rollout shares the actor's devices (the
    actor's policy then computes the actions itself)."""
    return [] if placement.rollout_in_actor else list(placement.devices["rollout"])


def actor_devices(placement: ComponentPlacement) -> tuple[int, list[Device]]:
    """The trainer's node (that of its first device) and the devices it uses there."""
    node = placement.devices["actor"][0].node
    return node, [d for d in placement.devices["actor"] if d.node == node]


def actor_rank_devices(placement: ComponentPlacement, cpu_ranks: int = 1) -> list[Device]:
    """The device of each data-parallel actor rank, rank 0 first: every actor GPU, or without GPUs
    `cpu_ranks` ranks on each actor node. One rank: the single-process trainer."""
    if placement.on_gpus:
        return list(placement.devices["actor"])
    return [d for d in placement.devices["actor"] for _ in range(cpu_ranks)]


def cuda_visible_devices(devices: Sequence[Device]) -> str:
    """The CUDA_VISIBLE_DEVICES of a worker on `devices` ("" for CPU workers, so they never touch a GPU)."""
    return ",".join(str(d.gpu) for d in devices if d.gpu is not None)
