"""`run_embodiment.sh` end to end on this CPU: Ray-placed env workers and trainer, TensorBoard scalars
under SPEC §6 names, a video, checkpoints, resuming; a bad config stops before anything starts."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment", "run_embodiment.sh")
SMALL = ["env.train.max_episode_steps=32", "env.train.max_steps_per_rollout_epoch=64", "actor.global_batch_size=16",
         "algorithm.update_epoch=1", "video_cfg.every_n_episodes=1", "video_cfg.max_videos=1"]


def run(*args, timeout=300, cwd=None):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", os.path.abspath(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def run_dir(root):
    (name,) = os.listdir(root)
    return os.path.join(root, name)


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder)
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_embedded_ppo_trains_logs_films_saves_and_resumes(tmp_path):
    root = tmp_path / "logs"
    out = run("behavior_ppo_openvlaoft_embedded", f"runner.logger.log_path={root}", "runner.max_epochs=2",
              "runner.save_interval=1", *SMALL, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = run_dir(root)
    assert os.path.basename(folder).endswith("-behavior_ppo_openvlaoft_embedded")
    summary = json.load(open(os.path.join(folder, "summary.json")))
    assert summary["global_step"] == 2 and summary["num_timesteps"] == 2 * 8 * 4
    for step in (1, 2):
        assert os.path.getsize(os.path.join(folder, "checkpoints", f"global_step_{step}", "actor.zip")) > 100_000
    (video,) = summary["videos"]
    assert video.startswith(os.path.join(folder, "video", "train")) and os.path.getsize(video) > 1000
    tags = scalars(folder)
    assert {"actor/loss", "actor/value_loss", "actor/grad_norm", "actor/approx_kl", "actor/pg_clipfrac",
            "actor/value_clip_ratio", "actor/entropy", "rollout/returns_mean", "rollout/advantages_mean",
            "env/episode_len", "env/success_once", "env/q_score", "time/env", "time/inference",
            "time/update"} <= tags
    log = open(os.path.join(folder, "run_embodiment.log")).read()
    assert "collocated placement" in log and "step 2/2" in log and "2 env worker(s), 2 pipeline stage(s)" in log
    config = open(os.path.join(folder, "config.yaml")).read()
    assert "video_base_dir: " + os.path.join(folder, "video", "train") in config

    # evaluate.py runs an RL run's checkpoint (actor.zip), loaded in the dtype it infers in
    evaluate = os.path.join(os.path.dirname(SCRIPT), "evaluate.py")
    res = tmp_path / "eval.json"
    out = subprocess.run([sys.executable, evaluate, f"checkpoint={folder}/checkpoints/global_step_2/actor.zip",
                          "tasks=[pick_and_place]", "episodes_per_task=1", "num_envs=1", "image_size=64",
                          "max_episode_steps=16", "modes=[greedy]", "unnorm_key=null", f"out={res}", "device=cpu"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert json.load(open(res))["modes"]["greedy"]["per_task"]["pick_and_place"]["episodes"] == 1

    # resumed with fast inference (fused projections; no compiling on this CPU): the trainer's own policy
    # acts with it, and the update recomputes the old log-probs (the config decides, not the checkpoint)
    resumed_root = tmp_path / "resumed"
    out = run("behavior_ppo_openvlaoft_embedded", f"runner.logger.log_path={resumed_root}", "runner.max_epochs=3",
              f"runner.resume_dir={folder}/checkpoints/global_step_2", "video_cfg.save_video=false", *SMALL,
              "rollout.fast_inference.enabled=true", "rollout.fast_inference.compile=false", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.load(open(os.path.join(run_dir(resumed_root), "summary.json")))
    assert summary["global_step"] == 3 and summary["num_timesteps"] == 3 * 8 * 4
    assert summary["recompute_log_probs"] is True and summary["fast_inference"]["compile"] is False
    assert "the trainer's policy acts with fast inference" in open(os.path.join(run_dir(resumed_root),
                                                                                "run_embodiment.log")).read()
    assert {"rollout/log_prob_gap", "time/recompute_log_probs"} <= scalars(run_dir(resumed_root))


def test_a_bad_config_stops_before_anything_starts(tmp_path):
    root = tmp_path / "logs"
    out = run("behavior_ppo_openvlaoft_embedded", f"runner.logger.log_path={root}", "rollout.pipeline_stage_num=3",
              "actor.model.preset=null", "actor.model.model_path=/no/such/checkpoint", timeout=120)
    assert out.returncode == 2
    assert "rollout.pipeline_stage_num: 3 does not divide env.train.total_num_envs=4" in out.stderr
    assert "actor.model.model_path: '/no/such/checkpoint' is not a model folder" in out.stderr
    assert "Started a local Ray" not in out.stdout + out.stderr
    assert not root.exists() or not os.listdir(root)  # no run folder left behind


@pytest.mark.parametrize("override,message", [
    ("rollout.pipline_stage_num=2", "Key 'pipline_stage_num' is not in struct"),
])
def test_hydra_refuses_unknown_keys_on_the_command_line(tmp_path, override, message):
    out = run("behavior_ppo_openvlaoft_embedded", f"runner.logger.log_path={tmp_path}", override, timeout=120)
    assert out.returncode != 0 and message in out.stderr
