"""The data-parallel actor: `algorithms.PPO` / `GRPO` updates over several processes with torch.distributed.

Each rank holds its share of the rollout (a slice of the envs' columns of the buffer: `buffer_shard`),
evaluates it in micro-batches and contributes to one global gradient per minibatch:

- ``ddp``: `DistributedDataParallel` around the policy (a full replica per rank; gradients all-reduced);
  for small policies.
- ``fsdp``: FSDP2 (`torch.distributed.fsdp.fully_shard`) with full sharding (parameters, gradients and
  optimizer state sharded over the ranks, parameters gathered per unit for its forward/backward and
  freed after it — FSDP1's FULL_SHARD); each ``nn.ModuleList`` entry of the policy (a transformer
  layer) is its own unit. For the 7.5B OpenVLA-OFT (with LoRA or without).

The gradient of a minibatch is that of the mean loss over *all ranks'* valid samples: the valid count
is all-reduced, each micro-batch's loss is weighted by its share of the global count, and gradients are
synchronised once per minibatch, in the backward pass of the last micro-batch (`no_sync` / FSDP's
`set_requires_gradient_sync(False)` before it). Advantages are normalised with global statistics and
the logged update metrics are global averages, so a W-rank update on W shards equals the one-process
update on the whole batch (up to float summation order) when each minibatch is the whole batch.
`batch_size` is the global batch; `micro_batch_size` is per rank.

The policy that *acts* (`self.policy`: rollouts, rollout-worker weight sync, checkpoints, `predict`) is
always a complete, unsharded module: under DDP the replica DDP wraps; under FSDP a separate copy on each
rank that receives the trainable parameters after every update (so rank 0 can act and save without the
other ranks). Checkpoints are written by rank 0 only (atomically, as `algorithms.PPO.save`); under FSDP
they hold the weights but not the optimizer's moments (they are sharded), so a resumed FSDP run starts
its optimizer afresh.

This module needs only torch.distributed: `init_process_group` and `launch_local` (processes on this
machine) start the ranks; `algorithms.distributed.actor_group` starts them as Ray actors for the runner.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import socket
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
import torch.distributed as dist
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from algorithms.buffers import LeanRolloutBuffer
from algorithms.grpo import GRPO
from algorithms.ppo import PPO

STRATEGIES = ("ddp", "fsdp")
_BUFFER_ARRAYS = ("actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages", "masks",
                  "trajectory_ids")


# ---------------------------------------------------------------------------------------- process groups
def default_backend() -> str:
    return "nccl" if th.cuda.is_available() else "gloo"


def free_port() -> int:
    """A TCP port free on this machine now (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def init_process_group(rank: int, world_size: int, master_addr: str, master_port: int, backend: str | None = None,
                       timeout_s: float = 600.0) -> th.device:
    """Join the actor's process group (NCCL on GPUs, gloo on CPUs) and return this rank's device: the
    first visible GPU (each rank sees only its own GPU), or the CPU."""
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = master_addr, str(master_port)
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)
    backend = backend or default_backend()
    device = th.device("cuda", 0) if backend == "nccl" else th.device("cpu")
    if device.type == "cuda":
        th.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return device


def _local_worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, queue, backend: str,
                  gpus: list[str]) -> None:
    if backend == "nccl":  # each rank sees its own GPU only (set before CUDA starts in this process)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[rank]
    else:
        th.set_num_threads(1)
    try:
        init_process_group(rank, world_size, "127.0.0.1", port, backend=backend, timeout_s=120)
        result = fn(rank, world_size, *args)
        queue.put((rank, "ok", result))
    except BaseException as e:  # report, so the parent fails with the rank's error rather than a timeout
        import traceback

        queue.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch_local(fn: Callable, world_size: int, *args: Any, timeout_s: float = 300.0,
                 backend: str = "gloo") -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in `world_size` new processes on this machine and return their
    results by rank. ``backend="gloo"``: on CPUs, one torch thread each; ``"nccl"``: rank r on the r-th
    visible GPU. `fn` must be importable (module level)."""
    import torch.multiprocessing as mp

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(th.cuda.device_count())]
    if backend == "nccl" and len(gpus) < world_size:
        raise ValueError(f"{world_size} ranks on NCCL need {world_size} GPUs, this machine shows {len(gpus)}")

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_local_worker, args=(r, world_size, port, fn, args, queue, backend, gpus),
                         daemon=True)
             for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors = []
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout_s)
    try:
        while len(results) + len(errors) < world_size:
            if datetime.datetime.now() > deadline:
                raise TimeoutError(f"data-parallel ranks did not finish within {timeout_s:.0f} s")
            if queue.empty():
                if any(p.exitcode not in (None, 0) for p in procs) and queue.empty():
                    dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                    raise RuntimeError(f"rank(s) {dead} died (exit codes {[procs[i].exitcode for i in dead]})")
                import time

                time.sleep(0.05)
                continue
            rank, status, value = queue.get()
            if status == "ok":
                results[rank] = value
            else:
                errors.append(f"rank {rank}: {value}")
        if errors:
            raise RuntimeError("data-parallel rank failed:\n" + "\n".join(errors))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return [results[r] for r in range(world_size)]


# ---------------------------------------------------------------------------------------- rollout shards
class SpacesOnlyVecEnv(VecEnv):
    """A VecEnv that only has spaces: what a rank that never collects needs to build its trainer."""

    def __init__(self, num_envs: int, observation_space, action_space):
        super().__init__(num_envs, observation_space, action_space)

    def _fail(self, *args, **kwargs):
        raise RuntimeError("this actor rank trains on shards of rank 0's rollouts; it has no envs to step")

    reset = step_async = step_wait = _fail

    def close(self) -> None:
        pass

    def seed(self, seed=None):
        return [None] * self.num_envs

    def get_attr(self, attr_name, indices=None):
        return [None] * len(self._get_indices(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        pass

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [None] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._get_indices(indices))


def buffer_shard(buffer: LeanRolloutBuffer, rank: int, world_size: int) -> dict[str, Any]:
    """Rank `rank`'s share of a full rollout buffer: envs ``[rank * n / W, (rank + 1) * n / W)`` with
    their advantages, returns, masks and log-probs (plain arrays, ready to send to another process)."""
    n = buffer.n_envs
    if n % world_size:
        raise ValueError(f"{n} envs cannot be shared evenly by {world_size} actor ranks; use a multiple of "
                         f"{world_size} envs (env.train.total_num_envs)")
    cols = slice(rank * n // world_size, (rank + 1) * n // world_size)
    shard = {name: np.ascontiguousarray(getattr(buffer, name)[:, cols]) for name in _BUFFER_ARRAYS}
    shard["observations"] = {k: np.ascontiguousarray(v[:, cols]) for k, v in buffer.observations.items()}
    return shard


def load_buffer_shard(buffer: LeanRolloutBuffer, shard: dict[str, Any]) -> None:
    """Fill `buffer` (built for the shard's env count) with a shard, ready for `train()`."""
    n_steps, n_envs = shard["rewards"].shape
    if (n_steps, n_envs) != (buffer.buffer_size, buffer.n_envs):
        raise ValueError(f"a shard of {n_steps} steps x {n_envs} envs does not fit a buffer of "
                         f"{buffer.buffer_size} x {buffer.n_envs}")
    for name in _BUFFER_ARRAYS:
        setattr(buffer, name, shard[name])
    buffer.log_prob_dim = shard["log_probs"].shape[-1]
    for k, v in shard["observations"].items():
        buffer.observations[k] = v
    buffer.pos, buffer.full = buffer.buffer_size, True


# ---------------------------------------------------------------------------------------- the wrapped module
class PolicyLoss(nn.Module):
    """Holds the policy; its forward runs a loss function of the trainer, so that DDP's and FSDP's
    forward hooks see the pass in which the policy's parameters are used (the policy's own `forward`
    samples actions; the update calls `evaluate_actions`)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, loss_fn: Callable, *args: Any) -> Any:
        return loss_fn(*args)


def fsdp_units(module: nn.Module, run: Callable[[], Any] | None = None) -> list[nn.Module]:
    """The submodules sharded as their own FSDP unit, innermost first: the entries of every
    ``nn.ModuleList`` whose entries are all of one class (transformer layers, vision blocks).

    FSDP gathers a unit's parameters in the unit's forward hook, so a unit must be *called*. With
    `run` (a forward pass of `module`), an entry whose forward the pass does not call (a model that calls
    a layer's submodules itself, as OpenVLA-OFT's fast path does) is replaced by its children that are
    called, recursively."""
    called: set[int] | None = None
    if run is not None:
        called = set()
        hooks = [m.register_forward_pre_hook(lambda m, _args: called.add(id(m))) for m in module.modules()]
        try:
            with th.no_grad():
                run()
        finally:
            for h in hooks:
                h.remove()

    def has_params(m: nn.Module) -> bool:
        return any(True for _ in m.parameters())

    def pick(m: nn.Module) -> list[nn.Module]:
        if called is None or id(m) in called:
            return [m] if has_params(m) else []
        return [u for c in m.children() for u in pick(c)]

    depth = {id(m): name.count(".") + bool(name) for name, m in module.named_modules()}
    units: dict[int, nn.Module] = {}
    for sub in module.modules():
        if isinstance(sub, nn.ModuleList) and len(sub) > 1 and len({type(m) for m in sub}) == 1:
            for entry in sub:
                units.update({id(u): u for u in pick(entry)})
    return sorted(units.values(), key=lambda u: -depth[id(u)])


def _full(t: th.Tensor) -> th.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


# ---------------------------------------------------------------------------------------- the trainer
class DataParallelMixin:
    """Data-parallel updates for `algorithms.PPO` and its subclasses: ``class P(DataParallelMixin, PPO)``.

    The process group must be initialised (`init_process_group`) before the trainer is built. The
    policy is wrapped at the first update (so that a checkpoint loaded into rank 0 before it is what
    every rank starts from: DDP broadcasts rank 0's weights, FSDP is built from them).

    Args:
        strategy: ``"ddp"`` or ``"fsdp"``.
        find_unused_parameters: DDP's option (None: on). Off, DDP never all-reduces a gradient bucket that
            holds a trainable parameter the loss does not use (GRPO's value head; OpenVLA-OFT's last vision
            block, whose output is not read), and ranks silently diverge; on, it costs one walk of the
            autograd graph per micro-batch.
        **kwargs: the trainer's arguments; `batch_size` is the global minibatch, a multiple of the world
            size, and every rank must hold the same number of envs.
    """

    actor_group: Any = None  # rank 0 of the runner: ranks 1.. as Ray actors (`actor_group.ActorGroup`)

    def __init__(self, *args: Any, strategy: str = "ddp", find_unused_parameters: bool | None = None,
                 **kwargs: Any):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("the data-parallel actor needs torch.distributed's process group: call "
                               "algorithms.distributed.data_parallel.init_process_group(rank, world_size, ...) first")
        self.strategy = strategy
        self.find_unused_parameters = find_unused_parameters
        self._dp_module = self._dp_optimizer = None
        with warnings.catch_warnings():  # SB3 compares the global batch_size with this rank's buffer
            warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
            super().__init__(*args, **kwargs)

    # -- setup ------------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return dist.get_rank()

    @property
    def _world_size(self) -> int:  # type: ignore[override]
        return dist.get_world_size()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_dp_module", "_dp_optimizer", "actor_group",
                "_warned_fsdp_save"]

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.batch_size % self._world_size:
            raise ValueError(f"batch_size ({self.batch_size}, the global minibatch) must be a multiple of the "
                             f"{self._world_size} actor ranks")

    def _ensure_data_parallel(self) -> None:
        if self._dp_module is not None:
            return
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            unused = True if self.find_unused_parameters is None else self.find_unused_parameters
            device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._dp_module = DDP(PolicyLoss(self.policy), device_ids=device_ids, find_unused_parameters=unused)
        else:
            self._dp_module = self._build_fsdp()
            self._dp_optimizer = self._build_optimizer(self._dp_module.policy)

    def _build_fsdp(self) -> nn.Module:
        from torch.distributed.fsdp import fully_shard

        policy = copy.copy(self.policy)  # shallow: drop the optimizer before the deep copy
        policy.__dict__ = dict(policy.__dict__)
        policy.__dict__.pop("optimizer", None)
        module = PolicyLoss(copy.deepcopy(policy))
        with th.no_grad():  # every rank starts from rank 0's weights (DDP does this itself)
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)
        buffer = self.rollout_buffer
        probe = buffer._get_samples(np.arange(min(2, buffer.buffer_size * buffer.n_envs)))

        def run() -> None:
            with self._autocast():
                module.policy.evaluate_actions(probe.observations, probe.actions)

        for unit in fsdp_units(module.policy, run if buffer.full else None):
            fully_shard(unit, reshard_after_forward=True)
        fully_shard(module, reshard_after_forward=True)
        self._copy_to_acting_policy(module, trainable_only=False)  # the acting copy: rank 0's weights too
        return module

    # -- the PPO hooks ----------------------------------------------------------------------------
    @property
    def _training_policy(self) -> nn.Module:  # type: ignore[override]
        if self.strategy == "fsdp" and self._dp_module is not None:
            return self._dp_module.policy
        return self.policy

    @property
    def _training_optimizer(self) -> th.optim.Optimizer:  # type: ignore[override]
        return self._dp_optimizer if self._dp_optimizer is not None else self.policy.optimizer

    def _micro_batch_loss(self, mb, clip_low, clip_high, clip_vf):
        self._ensure_data_parallel()
        return self._dp_module(self._loss, mb, clip_low, clip_high, clip_vf)

    def _micro_batch_log_probs(self, mb):
        # through the wrapped module, as the loss: FSDP gathers the parameters in its forward hooks
        self._ensure_data_parallel()
        return self._dp_module(super()._micro_batch_log_probs, mb)

    def _grad_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        if sync:
            return contextlib.nullcontext()
        if self.strategy == "ddp":
            return self._dp_module.no_sync()
        return self._fsdp_no_sync()

    @contextlib.contextmanager
    def _fsdp_no_sync(self):
        self._dp_module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self._dp_module.set_requires_gradient_sync(True)

    def _all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        device = self.device if dist.get_backend() == "nccl" else th.device("cpu")
        t = th.tensor([float(v) for v in values], dtype=th.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def _clip_grad_norm(self, params: list[nn.Parameter]) -> float:
        # DDP: every rank holds the same (all-reduced) gradients; FSDP: DTensor shards, the norm is global
        return float(_full(th.nn.utils.clip_grad_norm_(params, self.max_grad_norm)))

    def _normalized_advantages(self, buffer: LeanRolloutBuffer) -> np.ndarray:
        """`algorithms.objectives.normalize` with the mean and std of every rank's valid advantages."""
        adv, m = buffer.advantages.astype(np.float64), buffer.masks.astype(np.float64)
        total, n = self._all_reduce_sum([(adv * m).sum(), m.sum()])
        n = max(n, 1.0)
        mean = total / n
        var = self._all_reduce_sum([(((adv - mean) * m) ** 2).sum()])[0] / max(n - 1.0, 1.0)
        return (((adv - mean) / (np.sqrt(var) + 1e-8)) * m).astype(np.float32)

    # -- the update -------------------------------------------------------------------------------
    def _backward_minibatch(self, batch, clip_low, clip_high, clip_vf):
        self._ensure_data_parallel()
        return super()._backward_minibatch(batch, clip_low, clip_high, clip_vf)

    def train(self) -> None:
        """Update on this rank's share of the rollout. With `actor_group` set (rank 0 of the runner), the
        buffer holds every rank's samples: the group sends ranks 1.. their shards, then all update."""
        full = self.rollout_buffer
        if self.actor_group is not None:
            self.rollout_buffer = self.actor_group.scatter(self, full)  # before any collective: ranks start here
        try:
            self._ensure_data_parallel()
            self._check_shards(self.rollout_buffer)
            self._dp_module.train()
            super().train()
            if self.strategy == "fsdp":
                self._copy_to_acting_policy(self._dp_module, trainable_only=True)
        finally:
            self.rollout_buffer = full
        if self.actor_group is not None:
            self.actor_group.wait()

    def _check_shards(self, buffer: LeanRolloutBuffer) -> None:
        n = buffer.buffer_size * buffer.n_envs
        total, squares = self._all_reduce_sum([n, n * n])
        if squares * self._world_size != total * total:  # W * sum(n^2) == (sum n)^2 iff all equal
            raise ValueError(f"every actor rank must train on as many samples as the others (this rank: {n}); "
                             "share the envs evenly")

    def _copy_to_acting_policy(self, module: PolicyLoss, trainable_only: bool) -> None:
        """Gather the (trainable) parameters of the FSDP copy into `self.policy` on every rank (collective)."""
        acting = dict(self.policy.named_parameters())
        with th.no_grad():
            for name, p in module.policy.named_parameters():
                if trainable_only and not p.requires_grad:
                    continue
                # copy_ on the parameter, not on .data: it bumps the version counter, which is how fast
                # inference sees that its fused projection weights are stale
                acting[name].copy_(_full(p).to(acting[name].device))

    def gradients(self) -> dict[str, th.Tensor]:
        """The full gradient of every trainable parameter after a backward pass, by name (collective
        under FSDP). For tests and checks."""
        module = self._training_policy
        return {name: _full(p.grad).detach().clone() for name, p in module.named_parameters()
                if p.requires_grad and p.grad is not None}

    # -- checkpoints ------------------------------------------------------------------------------
    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return super()._get_torch_save_params()

    def save(self, path, exclude=None, include=None, **kwargs) -> None:
        """Rank 0 writes the checkpoint (atomically); the other ranks write nothing. Under FSDP the saved
        optimizer state is that of the acting copy (empty): the sharded moments are not saved."""
        if self.rank != 0:
            return
        if self.strategy == "fsdp" and not getattr(self, "_warned_fsdp_save", False):
            self._warned_fsdp_save = True
            warnings.warn("FSDP checkpoints hold the policy's weights but not the optimizer's sharded moments; "
                          "a resumed run starts its optimizer afresh", stacklevel=2)
        super().save(path, exclude, include, **kwargs)


class DataParallelPPO(DataParallelMixin, PPO):
    """`algorithms.PPO` trained data-parallel (DDP or FSDP) over the ranks of torch.distributed's group."""


class DataParallelGRPO(DataParallelMixin, GRPO):
    """`algorithms.GRPO` trained data-parallel (DDP or FSDP) over the ranks of torch.distributed's group."""
