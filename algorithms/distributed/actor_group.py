"""The data-parallel actor on Ray: ranks 1..W-1 as Ray actors beside the runner, which is rank 0.

Rank 0 (the `EmbodiedRunner`) keeps everything it has in one process — the env workers, the pipelined
rollouts, rollout workers, logging, checkpoints — and collects the whole rollout. At each update it
cuts the rollout buffer into W shards by envs (`data_parallel.buffer_shard`), sends shard r to rank r
through Ray's object store, and all ranks run the same `train()` on their shard, synchronising
gradients with torch.distributed (NCCL on GPUs, gloo on CPUs; rank 0's node and a free port are the
rendezvous, MASTER_ADDR / MASTER_PORT). The weights stay identical on every rank, so only rank 0's
policy acts and is saved.

Why shards of one rollout rather than envs per rank: the runner's env workers, pipeline stages, rollout
workers and restarts are built around one `RayVecEnv`; the placements of the user guide (``env: 0-3``,
``actor: 0-7``) do not give every actor rank its own env workers; and GRPO groups and rollout metrics
stay whole. The price is one copy of each shard (uint8 images) per update, small next to the update.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import ray

from algorithms.distributed.data_parallel import (
    DataParallelGRPO,
    DataParallelMixin,
    DataParallelPPO,
    SpacesOnlyVecEnv,
)
from algorithms.distributed.pipeline import PipelinedGRPO, PipelinedPPO
from algorithms.distributed.placement import Device

log = logging.getLogger(__name__)


class ActorRank:
    """Rank r >= 1 of the data-parallel actor (a Ray actor on its device).

    Args:
        rank, world_size: its place in the process group.
        master_addr, master_port: rank 0's rendezvous.
        num_threads: torch CPU threads (None: torch's default).
    """

    def __init__(self, rank: int, world_size: int, master_addr: str, master_port: int, num_threads: int | None = None):
        import torch as th

        if num_threads:
            th.set_num_threads(num_threads)
        self.rank, self.world_size = rank, world_size
        self.address = (master_addr, master_port)
        self.model = None

    def ping(self) -> tuple[int, str]:
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def setup(self, model_class: type, policy_class: type, observation_space, action_space, n_envs: int,
              kwargs: dict[str, Any]) -> int:
        """Join the process group and build this rank's trainer (its weights come from rank 0 at the
        first update). Returns the process id."""
        from stable_baselines3.common.logger import Logger

        from algorithms.distributed.data_parallel import init_process_group
        from algorithms.group_reset import GroupResetVecEnv
        from algorithms.grpo import GRPO

        init_process_group(self.rank, self.world_size, *self.address)
        env = SpacesOnlyVecEnv(n_envs, observation_space, action_space)
        if issubclass(model_class, GRPO):  # GRPO's groups live in rank 0's env; no grouping here
            env = GroupResetVecEnv(env, 1)
        self.model = model_class(policy_class, env, **kwargs)
        self.model.set_logger(Logger(None, []))  # rank 0 logs the (global) metrics
        return os.getpid()

    def load_optimizer_state(self, state: dict) -> None:
        """Take rank 0's optimizer state (a resumed DDP run: every rank must step from the same moments)."""
        self.model.policy.optimizer.load_state_dict(state)

    def train(self, shard: dict[str, Any], progress_remaining: float, num_timesteps: int) -> int:
        from algorithms.distributed.data_parallel import load_buffer_shard

        m = self.model
        load_buffer_shard(m.rollout_buffer, shard)
        m._current_progress_remaining, m.num_timesteps = progress_remaining, num_timesteps
        m.train()
        return m._n_updates

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class ActorGroup:
    """Rank 0's handle on ranks 1..W-1: starts them, joins the process group with them, sends them their
    shards at each update. Use `start`."""

    def __init__(self, ranks: Sequence[Any], world_size: int):
        self.ranks = list(ranks)
        self.world_size = world_size
        self._pending: list[Any] = []
        self._local_buffer = None

    @classmethod
    def start(cls, reservation, devices: Sequence[Device], model_class: type, policy_class: type,
              observation_space, action_space, n_envs: int, kwargs: dict[str, Any], num_threads: int | None = None,
              timeout_s: float = 600.0) -> ActorGroup:
        """Start ranks 1.. on `devices[1:]` (`devices[0]` is this process, rank 0), join the process group
        with them and build their trainers (each with `n_envs / W` envs' worth of buffer)."""
        from algorithms.distributed.data_parallel import free_port, init_process_group

        world = len(devices)
        if n_envs % world:
            raise ValueError(f"{n_envs} envs cannot be shared evenly by {world} actor ranks")
        addr, port = ray.util.get_node_ip_address(), free_port()
        remote = ray.remote(ActorRank)
        ranks = [remote.options(**reservation.options([d])).remote(r, world, addr, port, num_threads)
                 for r, d in enumerate(devices[1:], start=1)]
        setups = [a.setup.remote(model_class, policy_class, observation_space, action_space, n_envs // world, kwargs)
                  for a in ranks]
        errors: list[BaseException] = []

        def join() -> None:
            try:
                init_process_group(0, world, addr, port, timeout_s=timeout_s)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        thread = threading.Thread(target=join, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout_s
        pending = list(setups)
        while pending or thread.is_alive():  # a rank that fails to start fails here, not after a timeout
            done, pending = ray.wait(pending, timeout=0.5) if pending else ([], [])
            ray.get(done)
            if not pending:
                thread.join(timeout=0.5)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {world} actor ranks did not meet within {timeout_s:.0f} s")
        if errors:
            raise errors[0]
        log.info("data-parallel actor: %d ranks on %s (rendezvous %s:%d)", world, ", ".join(map(str, devices)),
                 addr, port)
        return cls(ranks, world)

    def load_optimizer_state(self, state: dict) -> None:
        ray.get([a.load_optimizer_state.remote(state) for a in self.ranks])

    def scatter(self, model, full):
        """Send ranks 1.. their shards of rank 0's full rollout buffer and start their update; return rank
        0's shard as a buffer (the `actor_group` protocol of `DataParallelMixin.train`)."""
        from algorithms.buffers import LeanRolloutBuffer
        from algorithms.distributed.data_parallel import buffer_shard, load_buffer_shard

        self.wait()
        w = self.world_size
        progress, steps = model._current_progress_remaining, model.num_timesteps
        self._pending = [a.train.remote(ray.put(buffer_shard(full, r, w)), progress, steps)
                         for r, a in enumerate(self.ranks, start=1)]
        if self._local_buffer is None or self._local_buffer.n_envs != full.n_envs // w:
            space = full.observation_space["obs"] if full._single else full.observation_space
            self._local_buffer = LeanRolloutBuffer(full.buffer_size, space, full.action_space, device=full.device,
                                                   gae_lambda=full.gae_lambda, gamma=full.gamma,
                                                   n_envs=full.n_envs // w)
        load_buffer_shard(self._local_buffer, buffer_shard(full, 0, w))
        return self._local_buffer

    def wait(self) -> list[int]:
        """Wait for the ranks' current update (raises a rank's error); their optimizer-step counts."""
        pending, self._pending = self._pending, []
        return ray.get(pending) if pending else []

    def close(self) -> None:
        for a in self.ranks:
            try:
                ray.get(a.close.remote(), timeout=30)
            except Exception:
                pass
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.ranks = []


class DataParallelPipelinedPPO(DataParallelMixin, PipelinedPPO):
    """Rank 0 of the runner's data-parallel PPO: pipelined rollouts of every env, then its shard's update."""


class DataParallelPipelinedGRPO(DataParallelMixin, PipelinedGRPO):
    """Rank 0 of the runner's data-parallel GRPO: pipelined rollouts of every env, then its shard's update."""


def data_parallel_classes(grpo: bool) -> tuple[type, type]:
    """(rank 0's trainer class, the other ranks' trainer class)."""
    if grpo:
        return DataParallelPipelinedGRPO, DataParallelGRPO
    return DataParallelPipelinedPPO, DataParallelPPO
