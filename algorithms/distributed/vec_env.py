"""`RayVecEnv`: an SB3 `VecEnv` whose envs live in Ray env workers, with stages and worker restarts.

Env ``g`` belongs to worker ``g // envs_per_worker``; each worker steps its envs one after another in
its own process, and the workers run in parallel. Any SB3 trainer can use it as it is
(`step_async` sends every worker its actions, `step_wait` gathers the results).

**Stages** (`rollout.pipeline_stage_num = S`) split the envs into S groups of equal size, taking the
same number of envs from each worker where possible, so that every worker is busy in every stage.
A pipelined trainer (`algorithms.distributed.pipeline`) sends a stage its actions with
`step_stage_async` as soon as the policy has computed them, and computes the next stage's actions
while that one steps; `step_async` then finds every stage sent and `step_wait` gathers them.

**Fault tolerance**: when a worker dies (a crash, a lost node, `ray.kill`), its in-flight step fails;
the worker is started again in the same place, its envs are reset, and for those envs this step
reports ``done=True`` with ``info["discarded"] = True`` (and the last observation as terminal
observation). The unfinished episodes are recorded in `discards` so that the trainer can keep their
steps out of the update; the run goes on and the log says what happened. A worker that dies more
than `max_restarts` times stops the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from gymnasium import spaces
from ray.exceptions import RayActorError
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from algorithms.distributed.cluster import kill_actors
from algorithms.distributed.env_worker import EnvSpec, EnvWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Discard:
    """The unfinished episode of env `env` that a dead worker took with it: the steps
    ``first_step .. last_step`` (counted by `RayVecEnv.num_steps`) must not be trained on."""

    env: int
    first_step: int
    last_step: int


def stage_assignment(num_workers: int, envs_per_worker: int, num_stages: int) -> list[np.ndarray]:
    """Global env indices of each stage. Envs are dealt out worker by worker (the first env of every
    worker, then the second, ...) and cut into `num_stages` equal groups, so that each stage takes the
    same number of envs from each worker when `envs_per_worker` is a multiple of `num_stages`, and
    whole workers otherwise."""
    n = num_workers * envs_per_worker
    if num_stages < 1 or n % num_stages:
        raise ValueError(f"{num_stages} stages cannot split {n} envs evenly")
    order = [w * envs_per_worker + j for j in range(envs_per_worker) for w in range(num_workers)]
    size = n // num_stages
    return [np.array(sorted(order[s * size:(s + 1) * size])) for s in range(num_stages)]


def _take(obs: Any, rows: np.ndarray | int) -> Any:
    return {k: v[rows] for k, v in obs.items()} if isinstance(obs, dict) else obs[rows]


def _put(dst: Any, rows: np.ndarray, src: Any) -> None:
    if isinstance(dst, dict):
        for k in dst:
            dst[k][rows] = src[k]
    else:
        dst[rows] = src


class RayVecEnv(VecEnv):
    """SB3 VecEnv over Ray env workers.

    Args:
        spec: how each env is built (`EnvSpec`).
        num_envs: total envs; a multiple of the number of workers.
        worker_options: Ray actor options of each worker (where it runs); one worker per entry.
        gpu_ids: the GPU each worker's simulators use (None: CPU), as many as `worker_options`.
        num_stages: pipeline stages (`rollout.pipeline_stage_num`).
        max_restarts: restarts allowed per worker before the run stops.
    """

    def __init__(self, spec: EnvSpec, num_envs: int, worker_options: Sequence[dict], gpu_ids: Sequence[int | None]
                 | None = None, num_stages: int = 1, max_restarts: int = 3):
        n_workers = len(worker_options)
        if n_workers < 1 or num_envs % n_workers:
            raise ValueError(f"{num_envs} envs cannot be shared evenly by {n_workers} env workers")
        self.spec = spec
        self.worker_options = [dict(o) for o in worker_options]
        self.gpu_ids = list(gpu_ids) if gpu_ids is not None else [None] * n_workers
        self.envs_per_worker = num_envs // n_workers
        self.stage_indices = stage_assignment(n_workers, self.envs_per_worker, num_stages)
        self.max_restarts = max_restarts
        self.restarts = [0] * n_workers
        self.generation = [0] * n_workers
        self.discards: list[Discard] = []
        self.num_steps = 0  # completed step_wait calls
        self._episode_start = np.zeros(num_envs, dtype=np.int64)
        self._pending: dict[int, list[tuple[int, int, np.ndarray, Any]]] = {}  # stage -> (worker, gen, envs, ref)
        self._results: dict[int, list[tuple[np.ndarray, tuple]]] = {}
        self._dispatched_actions: np.ndarray | None = None
        self._last_obs: Any = None
        self._fresh_obs: dict[int, Any] = {}  # worker -> first observations after its restart in this step
        self.workers = [self._launch(w) for w in range(n_workers)]
        obs_space, action_space = ray.get(self.workers[0].spaces.remote())
        super().__init__(num_envs, obs_space, action_space)

    # -- layout -----------------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self.workers)

    @property
    def num_stages(self) -> int:
        return len(self.stage_indices)

    def _envs_of(self, w: int) -> np.ndarray:
        return np.arange(w * self.envs_per_worker, (w + 1) * self.envs_per_worker)

    def _by_worker(self, indices: Sequence[int]) -> dict[int, list[int]]:
        """Global env indices -> {worker: [global indices]} (in the given order)."""
        groups: dict[int, list[int]] = {}
        for g in indices:
            groups.setdefault(int(g) // self.envs_per_worker, []).append(int(g))
        return groups

    def _local(self, envs: Sequence[int]) -> list[int]:
        return [int(g) % self.envs_per_worker for g in envs]

    def _launch(self, w: int):
        actor = ray.remote(EnvWorker).options(**self.worker_options[w])
        return actor.remote(self.spec, self._envs_of(w).tolist(), self.gpu_ids[w])

    # -- fault tolerance --------------------------------------------------------------------------
    def _restart(self, w: int, error: BaseException) -> tuple[Any, list[dict]]:
        """Replace worker `w` and reset its envs; returns their first observations."""
        self.restarts[w] += 1
        envs = self._envs_of(w)
        if self.restarts[w] > self.max_restarts:
            raise RuntimeError(f"env worker {w} (envs {envs[0]}-{envs[-1]}) died {self.restarts[w]} times, more than "
                               f"env.train.max_worker_restarts={self.max_restarts}; last error: {error}") from error
        try:
            ray.kill(self.workers[w], no_restart=True)
        except Exception:  # already gone
            pass
        t0 = time.perf_counter()
        self.workers[w] = self._launch(w)
        self.generation[w] += 1
        seeds = [int(s) for s in np.random.default_rng((self.restarts[w], w, self.num_steps)).integers(0, 2**31 - 1,
                                                                                                       len(envs))]
        obs, infos = ray.get(self.workers[w].reset.remote(list(range(len(envs))), seeds, [None] * len(envs)))
        msg = (f"env worker {w} (envs {envs[0]}-{envs[-1]}) died ({type(error).__name__}); restarted it "
               f"({self.restarts[w]}/{self.max_restarts}) in {time.perf_counter() - t0:.1f} s and discarded the "
               f"unfinished episodes of its envs; training goes on")
        log.warning(msg)
        return obs, infos

    def _call(self, w: int, method: str, *args):
        """`ray.get` of one worker call, replacing the worker (and retrying once) if it has died."""
        try:
            return ray.get(getattr(self.workers[w], method).remote(*args))
        except RayActorError as e:
            self._restart_and_discard(w, e)
            return ray.get(getattr(self.workers[w], method).remote(*args))

    def _restart_and_discard(self, w: int, error: BaseException) -> tuple[Any, list[dict]]:
        obs, infos = self._restart(w, error)
        for g in self._envs_of(w):
            self.discards.append(Discard(int(g), int(self._episode_start[g]), self.num_steps))
            self._episode_start[g] = self.num_steps + 1
        return obs, infos

    # -- VecEnv API -------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        self._drain()
        refs = []
        for w in range(self.num_workers):
            envs = self._envs_of(w)
            refs.append(self.workers[w].reset.remote(self._local(envs), [self._seeds[g] for g in envs],
                                                     [self._options[g] for g in envs]))
        parts = []
        for w, ref in enumerate(refs):
            try:
                parts.append(ray.get(ref))
            except RayActorError as e:
                parts.append(self._restart(w, e))
        obs = self._empty_obs()
        for w, (o, infos) in enumerate(parts):
            envs = self._envs_of(w)
            _put(obs, envs, o)
            for g, info in zip(envs, infos):
                self.reset_infos[g] = info
        self._reset_seeds()
        self._reset_options()
        self._episode_start[:] = self.num_steps
        self._last_obs = obs
        return _copy(obs)

    def step_stage_async(self, stage: int, actions: np.ndarray) -> None:
        """Send stage `stage` its actions ([len(stage_indices[stage]), ...], in that order)."""
        if stage in self._pending or stage in self._results:
            raise RuntimeError(f"stage {stage} was already sent its actions for this step")
        envs, actions = self.stage_indices[stage], np.asarray(actions)
        if self._dispatched_actions is None:
            self._dispatched_actions = np.zeros((self.num_envs, *actions.shape[1:]), dtype=actions.dtype)
        self._dispatched_actions[envs] = actions
        self._send(stage, envs, actions)

    def _send(self, stage: int, envs: np.ndarray, actions: np.ndarray) -> None:
        pending = []
        row = {int(g): k for k, g in enumerate(envs)}
        for w, group in self._by_worker(envs).items():
            group_arr = np.array(group)
            ref = self.workers[w].step.remote(self._local(group), actions[[row[g] for g in group]])
            pending.append((w, self.generation[w], group_arr, ref))
        self._pending[stage] = pending

    def step_async(self, actions: np.ndarray) -> None:
        if self._pending or self._results:
            if len(self._pending) + len(self._results) != self.num_stages:
                raise RuntimeError("step_async called while only some stages were sent their actions")
            if self._dispatched_actions is not None and not np.array_equal(self._dispatched_actions, actions):
                raise RuntimeError("step_async got other actions than the stages were sent")
            return
        self._send(-1, np.arange(self.num_envs), np.asarray(actions))  # one call per worker

    def wait_stage(self, stage: int) -> Any:
        """Block until stage `stage` has stepped; returns its new observations (rows as stage_indices)."""
        if stage not in self._results:
            self._results[stage] = [self._resolve(item) for item in self._pending.pop(stage)]
        obs = None
        envs = self.stage_indices[stage]
        row = {int(g): k for k, g in enumerate(envs)}
        for group, (o, *_rest) in self._results[stage]:
            if obs is None:
                obs = {k: np.empty((len(envs), *v.shape[1:]), v.dtype) for k, v in o.items()} if isinstance(
                    o, dict) else np.empty((len(envs), *o.shape[1:]), o.dtype)
            _put(obs, np.array([row[int(g)] for g in group]), o)
        return obs

    def _resolve(self, item: tuple[int, int, np.ndarray, Any]) -> tuple[np.ndarray, tuple]:
        """The results of one worker call, or, if the worker died, `discarded` results for its envs."""
        w, gen, group, ref = item
        try:
            return group, ray.get(ref)
        except RayActorError as e:
            if self.generation[w] == gen:  # first failure of this worker in this step: replace it
                self._fresh_obs[w] = self._restart_and_discard(w, e)[0]
            return group, self._discarded(group, _take(self._fresh_obs[w], np.array(self._local(group))))

    def _discarded(self, group: np.ndarray, new_obs: Any) -> tuple:
        """Step results for envs `group` of a replaced worker: done, nothing earned, fresh episodes."""
        infos = [{"discarded": True, "worker_restarted": True, "TimeLimit.truncated": True,
                  "terminal_observation": _take(self._last_obs, g)} for g in group]
        return new_obs, np.zeros(len(group), np.float32), np.ones(len(group), bool), infos

    def step_wait(self) -> VecEnvStepReturn:
        stages = list(self._pending) + [s for s in self._results if s not in self._pending]
        obs = self._empty_obs()
        rewards = np.zeros(self.num_envs, np.float32)
        dones = np.zeros(self.num_envs, bool)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        for stage in stages:
            results = self._results.pop(stage, None)
            if results is None:
                results = [self._resolve(item) for item in self._pending.pop(stage)]
            for group, (o, r, d, inf) in results:
                _put(obs, group, o)
                rewards[group] = r
                dones[group] = d
                for g, info in zip(group, inf):
                    infos[g] = info
        self._pending.clear()
        self._fresh_obs.clear()
        self._dispatched_actions = None
        self._episode_start[dones] = self.num_steps + 1
        self.num_steps += 1
        self._last_obs = obs
        return _copy(obs), rewards, dones, infos

    def _drain(self) -> None:
        """Finish any step in flight (before a reset)."""
        if self._pending or self._results:
            self.step_wait()

    def _empty_obs(self) -> Any:
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return {k: np.zeros((self.num_envs, *s.shape), s.dtype) for k, s in space.spaces.items()}
        return np.zeros((self.num_envs, *space.shape), space.dtype)

    def _per_worker(self, indices: VecEnvIndices, call: Callable[[int, list[int]], list]) -> list:
        """`call(worker, local indices)` for the workers holding envs `indices`, results in env order."""
        envs = [int(g) for g in self._get_indices(indices)]
        out: dict[int, Any] = {}
        for w, group in self._by_worker(envs).items():
            out.update(zip(group, call(w, self._local(group))))
        return [out[g] for g in envs]

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list:
        return self._per_worker(indices, lambda w, local: self._call(w, "env_method", method_name, local,
                                                                      method_args, method_kwargs))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list:
        return self._per_worker(indices, lambda w, local: self._call(w, "get_attr", attr_name, local))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for w, group in self._by_worker(self._get_indices(indices)).items():
            self._call(w, "set_attr", attr_name, value, self._local(group))

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return self._per_worker(indices, lambda w, local: self._call(w, "env_is_wrapped", wrapper_class, local))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render")

    def pop_discards(self) -> list[Discard]:
        out, self.discards = self.discards, []
        return out

    def close(self) -> None:
        if not self.workers:
            return
        try:
            ray.get([w.close.remote() for w in self.workers], timeout=60)
        except Exception as e:  # a dead worker has nothing left to close
            log.debug("closing env workers: %s", e)
        kill_actors(self.workers)
        self.workers = []


def _copy(obs: Any) -> Any:
    return {k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy()
