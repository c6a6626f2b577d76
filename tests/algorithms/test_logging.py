"""Metrics under SPEC's names in real TensorBoard event files; W&B / SwanLab offline; the progress bar."""

import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from algorithms import GRPO, PPO, make_logger
from algorithms import metrics as M


def read_scalars(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_every_spec_metric_is_in_the_tensorboard_events(toys, tmp_path):
    model = PPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(2), n_steps=6, batch_size=6, n_epochs=2, seed=0,
                clip_range_vf=0.2)
    model.set_logger(make_logger(str(tmp_path), ["tensorboard"]))
    model.learn(2 * 6 * 2)
    model.logger.close()
    acc = read_scalars(tmp_path)
    tags = set(acc.Tags()["scalars"])
    missing = [name for name in M.SPEC_METRICS if name not in tags]
    assert not missing, f"not in the event file: {missing}; logged: {sorted(tags)}"
    assert any(tag.startswith("time/") for tag in tags)
    # episode_len is the true length in env steps (3 chunks of 8), read at the end of each episode
    assert {e.value for e in acc.Scalars(M.ENV_EPISODE_LEN)} == {24.0}
    assert acc.Scalars(M.ROLLOUT_BYTES_PER_STEP)[0].value > 3 * 3 * 32 * 32


def test_grpo_logs_its_metrics(toys, tmp_path):
    model = GRPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(4), group_size=2, n_steps=6, batch_size=12, n_epochs=1,
                 seed=0)
    model.set_logger(make_logger(str(tmp_path), ["tensorboard"]))
    model.learn(4 * 6 * 2)
    model.logger.close()
    tags = set(read_scalars(tmp_path).Tags()["scalars"])
    expected = set(M.SPEC_METRICS) - {M.ACTOR_VALUE_LOSS, M.ACTOR_VALUE_CLIP_RATIO}  # no critic
    assert expected <= tags and M.ROLLOUT_VALID_FRACTION in tags


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = make_logger(str(tmp_path), ["tensorboard", "wandb"], experiment_name="t", mode="offline")
    logger.record(M.ACTOR_LOSS, 1.5)
    logger.record("text", "not a scalar")
    logger.dump(step=3)
    logger.close()
    runs = list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    for _ in range(50):  # W&B's service process may still be flushing the run file
        if any(M.ACTOR_LOSS.encode() + b"\x82\x01\x031.5" in f.read_bytes() for f in runs[0].glob("*.wandb")):
            break
        time.sleep(0.1)
    else:
        pytest.fail("actor/loss = 1.5 is not in the offline W&B run")
    assert read_scalars(tmp_path).Scalars(M.ACTOR_LOSS)[0].value == 1.5  # TensorBoard always


def test_swanlab_offline(tmp_path):
    pytest.importorskip("swanlab")
    logger = make_logger(str(tmp_path), ["swanlab"], experiment_name="t", mode="offline")
    logger.record(M.ACTOR_LOSS, 2.5)
    logger.dump(step=1)
    logger.close()
    runs = list((tmp_path / "swanlab").glob("run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*"))


@pytest.mark.parametrize("backend", ["wandb", "swanlab"])
def test_missing_backend_says_what_to_install(tmp_path, monkeypatch, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # as if not installed
    with pytest.raises(ImportError, match=rf"pip install behavior-rl\[{backend}\]"):
        make_logger(str(tmp_path), [backend])
    with pytest.raises(ValueError, match="unknown logger backends"):
        make_logger(str(tmp_path), ["mlflow"])


@pytest.mark.filterwarnings("ignore::tqdm.TqdmExperimentalWarning")
def test_progress_bar(toys, tmp_path):
    model = PPO(toys.TinyTokenPolicy, toys.make_toy_vec_env(2), n_steps=6, batch_size=12, n_epochs=1, seed=0)
    model.set_logger(make_logger(str(tmp_path)))
    model.learn(24, progress_bar=True)
    assert model.num_timesteps == 24


def test_episode_stats_split_success_by_task_in_multi_task_runs():
    """env/success_once is the mean over every finished episode; with episodes of two or more tasks,
    env/success_once/<task> gives each task's (from info["task"]); nothing per task in one-task runs."""
    from algorithms import metrics as M

    stats = M.EpisodeStats()
    ends = [{"task": "pick_and_place", "success_once": True, "episode_len": 120},
            {"task": "pick_and_place", "success_once": False, "episode_len": 300},
            {"task": "open_drawer", "success_once": True, "episode_len": 150},
            {"task": "pick_and_place", "success_once": False, "episode_len": 300}]
    stats.add_step(ends[:2] + [{"task": "open_drawer", "success_once": False}], [True, True, False])
    stats.add_step(ends[2:], [True, True])
    m = stats.means()
    assert m[M.ENV_SUCCESS_ONCE] == 0.5 and m[M.ENV_NUM_TRAJECTORIES] == 4
    assert m["env/success_once/pick_and_place"] == pytest.approx(1 / 3)
    assert m["env/success_once/open_drawer"] == 1.0
    stats.clear()
    stats.add_step(ends[:2], [True, True])
    assert not any(k.startswith("env/success_once/") for k in stats.means())
