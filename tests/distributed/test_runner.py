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


def test_sigterm_stops_the_run_after_its_step_with_a_final_checkpoint(tmp_path, tmp_path_factory):
    """`timeout`, a scheduler's preemption or `kill` on the driver: the runner ends after the training
    step in progress and saves it (not only every `save_interval` steps); the handler is ours only while
    the run goes on."""
    import signal
    import threading
    import time

    from .conftest import _ray

    log_file = tmp_path / "run_embodiment.log"

    def sigterm_after_the_first_step():
        deadline = time.time() + 600
        while time.time() < deadline:
            if log_file.exists() and "step 1/" in log_file.read_text():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.2)

    ray = _ray(tmp_path_factory, num_cpus=2)
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *a: received.append(a))  # old code must not kill pytest
    try:
        with initialize_config_dir(config_dir=os.path.abspath(CONFIG_DIR), version_base="1.3"):
            cfg = compose("behavior_ppo_openvlaoft_embedded", [
                "runner.max_epochs=40", "runner.save_interval=0", f"runner.logger.log_path={tmp_path}",
                "video_cfg.save_video=false", "env.train.total_num_envs=2", "env.train.max_steps_per_rollout_epoch=16",
                "actor.global_batch_size=4", "actor.micro_batch_size=4", "algorithm.update_epoch=1",
                "rollout.pipeline_stage_num=1"])
        c = to_run_config(cfg)
        threading.Thread(target=sigterm_after_the_first_step, daemon=True).start()
        summary = launch(c, check_run_config(c, gpus_per_node=0), str(tmp_path))
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()
    assert summary["stopped_by"] == "SIGTERM" and 1 <= summary["global_step"] < 40, summary
    assert summary["final_checkpoint"].endswith(f"global_step_{summary['global_step']}/actor.zip")
    assert os.path.isfile(summary["final_checkpoint"])
    assert not received and handler_after.__name__ == "<lambda>"  # the run took the signal, then gave it back
