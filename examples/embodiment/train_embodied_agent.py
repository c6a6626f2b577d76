"""Train OpenVLA-OFT on BEHAVIOR tasks with PPO or GRPO from a Hydra config (run_embodiment.sh calls this).

    python examples/embodiment/train_embodied_agent.py --config-path config --config-name CONFIG [key=value ...]

1. Compose the config, make the run's folder ``<runner.logger.log_path>/<time>-<config>`` the log path
   (TensorBoard events, checkpoints, videos, the resolved config and run_embodiment.log go there).
2. Check it completely before anything starts: unknown keys, types, placement against the GPUs,
   env counts and stages, batch sizes, the model path, logger backends, the simulator backend.
   Problems are printed with their keys and the exit status is 2.
3. Start (or join) Ray, reserve the nodes and train (`algorithms.distributed.runner`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("train_embodied_agent")
logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's note that OpenGL_accelerate is missing


def validate(cfg: DictConfig):
    """The typed config and its placement on this cluster; raises `ConfigError` naming the keys."""
    from algorithms.distributed.cluster import connect, gpus_per_node, local_gpu_count
    from algorithms.distributed.config import ConfigError, check_run_config, to_run_config

    run_cfg = to_run_config(cfg)
    nodes = run_cfg.cluster.num_nodes
    if nodes > 1 or run_cfg.cluster.ray_address:  # the cluster's GPUs are only known to the running Ray
        try:
            connect(run_cfg.cluster.ray_address, nodes)
        except Exception as e:
            raise ConfigError([("cluster.ray_address", f"no running Ray cluster to join at "
                                f"{run_cfg.cluster.ray_address or 'auto'} ({type(e).__name__}: {e}); start Ray on "
                                "every node (`ray start --head` here, `ray start --address=<head>:6379` on the "
                                "others) or set cluster.num_nodes=1")]) from None
        try:
            gpus = gpus_per_node(nodes)
        except ValueError as e:
            raise ConfigError([("cluster.num_nodes", str(e).split(": ", 1)[1])]) from None
    else:
        gpus = local_gpu_count()
    return run_cfg, check_run_config(run_cfg, gpus)


@hydra.main(version_base="1.3", config_path="config", config_name="behavior_ppo_openvlaoft_embedded")
def main(cfg: DictConfig) -> None:
    from algorithms.distributed.config import ConfigError
    from algorithms.distributed.runner import log_file_handler

    run_dir = HydraConfig.get().runtime.output_dir
    cfg.runner.logger.log_path = run_dir  # ${runner.logger.log_path} (videos, ...) now means the run's folder
    try:
        run_cfg, placement = validate(cfg)
    except ConfigError as e:
        print(f"{HydraConfig.get().job.config_name}: {e}", file=sys.stderr)
        if set(os.listdir(run_dir)) <= {".hydra"}:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no empty run folder behind
        sys.exit(2)

    # The run's log: this process and the runner (a Ray actor) both append their lines to it.
    logging.getLogger().addHandler(log_file_handler(os.path.join(run_dir, "run_embodiment.log")))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(resolved))
    log.info("run folder %s (config %s)", run_dir, HydraConfig.get().job.config_name)
    log.info("%s", placement.describe())

    import ray

    from algorithms.distributed.cluster import connect
    from algorithms.distributed.runner import launch

    t0 = time.perf_counter()
    connect(run_cfg.cluster.ray_address, run_cfg.cluster.num_nodes, num_cpus=os.cpu_count())
    try:
        summary = launch(run_cfg, placement, run_dir, resolved)
    except Exception:
        log.exception("training failed")
        raise
    finally:
        ray.shutdown()
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log.info("finished in %.0f s: %s", summary["wall_seconds"], json.dumps(summary))
    log.info("tensorboard --logdir %s", os.path.dirname(run_dir) or ".")


if __name__ == "__main__":
    main()
