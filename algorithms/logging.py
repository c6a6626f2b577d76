"""Logger backends (SPEC §6 `runner.logger.logger_backends`): TensorBoard always, W&B and SwanLab on demand.

Everything goes through SB3's `Logger`, so `model.logger.record(...)` reaches every backend; W&B and
SwanLab are SB3 `KVWriter`s, imported only when chosen. Offline modes write local run folders without
any network (``mode="offline"``; sync them later with `wandb sync` / `swanlab sync`).

    logger = make_logger("logs/ppo", backends=["tensorboard", "wandb"], experiment_name="ppo", mode="offline")
    model.set_logger(logger)
    model.learn(100_000, progress_bar=True)  # SB3's tqdm/rich progress bar
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.logger import KVWriter, Logger, make_output_format

BACKENDS = ("tensorboard", "wandb", "swanlab")
_STDOUT_FORMATS = ("stdout", "log", "json", "csv")


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the {module!r} logger backend needs the {module} package: "
                          f"pip install behavior-rl[{extra}]  (or pip install {module})") from e


def _is_scalar(value: Any) -> bool:
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return True
    if isinstance(value, np.ndarray):
        return value.size == 1 and np.issubdtype(value.dtype, np.number)
    return isinstance(value, th.Tensor) and value.numel() == 1


def _scalars(key_values: Mapping[str, Any], key_excluded: Mapping[str, Any], backend: str) -> dict[str, float]:
    """The numeric scalars of one dump that are not excluded from `backend`."""
    out = {}
    for key, value in key_values.items():
        excluded = key_excluded.get(key)
        if (excluded is None or backend not in excluded) and _is_scalar(value):
            out[key] = float(value)
    return out


class WandbOutputFormat(KVWriter):
    """Writes the scalars of each dump to a Weights & Biases run (``mode="offline"`` needs no network).

    Args:
        project, name, config: the run's project, name and configuration.
        log_dir: where the run folder goes (`wandb/` inside it).
        mode: ``"online"``, ``"offline"`` or ``"disabled"`` (default: W&B's own, from WANDB_MODE).
        init_kwargs: more `wandb.init` arguments.
    """

    def __init__(self, project: str, name: str | None = None, log_dir: str | None = None, mode: str | None = None,
                 config: Mapping[str, Any] | None = None, **init_kwargs: Any):
        wandb = _import("wandb", "wandb")
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        new_api = tuple(int(x) for x in wandb.__version__.split(".")[:2] if x.isdigit()) >= (0, 19)
        init_kwargs.setdefault("reinit", "create_new" if new_api else True)  # one run per logger
        self.run = wandb.init(project=project, name=name, dir=log_dir, mode=mode, config=dict(config or {}),
                              **init_kwargs)

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        scalars = _scalars(key_values, key_excluded, "wandb")
        if scalars:
            self.run.log(scalars, step=int(step))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class SwanLabOutputFormat(KVWriter):
    """Writes the scalars of each dump to a SwanLab run (``mode="offline"`` or ``"local"`` need no network).

    Args: as `WandbOutputFormat`.
    """

    def __init__(self, project: str, name: str | None = None, log_dir: str | None = None, mode: str | None = None,
                 config: Mapping[str, Any] | None = None, **init_kwargs: Any):
        swanlab = _import("swanlab", "swanlab")
        params = inspect.signature(swanlab.init).parameters
        kwargs: dict[str, Any] = {"project": project, "mode": mode, "config": dict(config or {}), **init_kwargs}
        kwargs["name" if "name" in params else "experiment_name"] = name
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            kwargs["log_dir" if "log_dir" in params else "logdir"] = log_dir
        self._swanlab = swanlab
        self.run = swanlab.init(**kwargs)

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        scalars = _scalars(key_values, key_excluded, "swanlab")
        if scalars:
            self.run.log(scalars, step=int(step))

    def close(self) -> None:
        if self.run is not None:
            self._swanlab.finish()
            self.run = None


def make_logger(
    log_dir: str,
    backends: Sequence[str] = ("tensorboard",),
    project: str = "behavior-rl",
    experiment_name: str | None = None,
    mode: str | None = None,
    config: Mapping[str, Any] | None = None,
    stdout: bool = False,
) -> Logger:
    """An SB3 `Logger` writing TensorBoard events into `log_dir` (always) and to the chosen backends.

    Args:
        log_dir: the run's folder (`runner.logger.log_path`); TensorBoard events go straight into it,
            W&B / SwanLab run folders into `log_dir/wandb` / `log_dir/swanlab`.
        backends: any of ``"tensorboard"``, ``"wandb"``, ``"swanlab"`` (and SB3's ``"stdout"``, ``"csv"``,
            ``"json"``, ``"log"``).
        project, experiment_name, config: run metadata for W&B / SwanLab.
        mode: W&B / SwanLab mode (``"offline"`` writes locally only).
        stdout: also print each dump (SB3's table).
    """
    unknown = [b for b in backends if b not in BACKENDS + _STDOUT_FORMATS]
    if unknown:
        raise ValueError(f"unknown logger backends {unknown}; choose from {list(BACKENDS + _STDOUT_FORMATS)}")
    os.makedirs(log_dir, exist_ok=True)
    name = experiment_name or os.path.basename(os.path.normpath(log_dir))
    formats: list[KVWriter] = [make_output_format("tensorboard", log_dir)]
    for backend in dict.fromkeys(backends):  # keep order, drop duplicates
        if backend == "wandb":
            formats.append(WandbOutputFormat(project, name, os.path.join(log_dir, "wandb"), mode, config))
        elif backend == "swanlab":
            formats.append(SwanLabOutputFormat(project, name, os.path.join(log_dir, "swanlab"), mode, config))
        elif backend in _STDOUT_FORMATS and not (backend == "stdout" and stdout):
            formats.append(make_output_format(backend, log_dir))
    if stdout:
        formats.append(make_output_format("stdout", log_dir))
    return Logger(folder=log_dir, output_formats=formats)
