"""The runner on a disaggregated placement (env, rollout and actor on their own declared GPUs): the
trainer sends inference to a rollout worker (with fast inference) and pushes its weights after every
update."""

import os

from hydra import compose, initialize_config_dir

from algorithms.distributed.config import check_run_config, to_run_config
from algorithms.distributed.runner import launch

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment", "config")


def test_disaggregated_run_with_a_rollout_worker(tmp_path, tmp_path_factory):
    from .conftest import _ray

    ray = _ray(tmp_path_factory, num_cpus=2, num_gpus=3)
    try:
        with initialize_config_dir(config_dir=os.path.abspath(CONFIG_DIR), version_base="1.3"):
            cfg = compose("behavior_ppo_openvlaoft_embedded", [
                "++cluster.component_placement={env: 0, rollout: 1, actor: 2}", "runner.max_epochs=2",
                "runner.save_interval=0", f"runner.logger.log_path={tmp_path}", "video_cfg.save_video=false",
                "env.train.max_steps_per_rollout_epoch=64", "actor.global_batch_size=16", "algorithm.update_epoch=1",
                "rollout.fast_inference.enabled=true", "rollout.fast_inference.compile=false"])
        c = to_run_config(cfg)
        placement = check_run_config(c, gpus_per_node=3)
        assert placement.layout == "disaggregated"
        summary = launch(c, placement, str(tmp_path))
        assert summary["global_step"] == 2 and summary["rollout_workers"] == 1
        # weights pushed before the first rollout (version 0) and after the first update (version 1)
        assert summary["rollout_weights_version"] == 1
        assert os.path.isfile(summary["final_checkpoint"])
        # the worker acted with fused projections (no compile on this CPU), the update recomputed its log-probs
        assert summary["fast_inference"]["compile"] is False and summary["recompute_log_probs"] is True
    finally:
        ray.shutdown()
