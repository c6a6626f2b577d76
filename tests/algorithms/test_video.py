"""The video callback writes real mp4 files (read back with PyAV) with the info overlay."""

import av
import numpy as np
import pytest
from stable_baselines3.common.logger import Logger

from algorithms import GRPO, PPO, VideoRecorderCallback
from algorithms.callbacks import overlay_text, tile_observation


def run(toys, tmp_path, algo=PPO, **cb_kwargs):
    kwargs = {"group_size": 2} if algo is GRPO else {}
    model = algo(toys.TinyTokenPolicy, toys.make_toy_vec_env(2), n_steps=6, batch_size=12, n_epochs=1, seed=0,
                 **kwargs)
    model.set_logger(Logger(folder=str(tmp_path), output_formats=[]))
    callback = VideoRecorderCallback(**cb_kwargs)
    model.learn(2 * 6, callback=callback)
    return callback


def read_mp4(path) -> tuple[np.ndarray, float]:
    """All frames of an mp4 as [N, H, W, 3] uint8, and its frame rate (decoded with PyAV)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames), float(stream.average_rate)


def head_band(frame: np.ndarray, rows: int) -> np.ndarray:
    return frame[:rows, : 2 * 32].astype(float)  # the head camera's part of the top rows


def test_mp4_episodes_with_overlay(toys, tmp_path):
    cb = run(toys, tmp_path, video_base_dir=str(tmp_path / "video"), info_on_video=True, fps=10)
    # 6 chunk steps of env 0 = two whole episodes of 3 chunks, and the start of a third
    assert [p.split("/")[-1] for p in cb.paths] == ["episode_000000.mp4", "episode_000001.mp4", "episode_000002.mp4"]
    frames, fps = read_mp4(cb.paths[0])
    assert frames.shape == (4, 64, 96, 3) and frames.dtype == np.uint8  # reset frame + 3 chunks, tiled 2H x 3H
    assert fps == 10

    plain = run(toys, tmp_path / "plain", video_base_dir=str(tmp_path / "plain_video"), info_on_video=False)
    raw, _ = read_mp4(plain.paths[0])
    # the overlay darkens a band at the top and writes white text into it; the plain video has neither
    band = head_band(frames[1], 20)
    assert band.mean() < 0.7 * head_band(raw[1], 20).mean()
    assert (band.min(axis=-1) > 170).sum() > 10  # white text pixels (the camera image is red or blue)
    assert (head_band(raw[1], 20).min(axis=-1) > 170).sum() == 0
    np.testing.assert_allclose(frames[1, 50:].astype(float).mean(), raw[1, 50:].astype(float).mean(), atol=3)


def test_default_dir_limits_and_grpo(toys, tmp_path):
    cb = run(toys, tmp_path, max_videos=1)  # default dir: <logger folder>/video/train
    assert cb.paths == [str(tmp_path / "video" / "train" / "env_0" / "episode_000000.mp4")]
    assert len(read_mp4(cb.paths[0])[0]) == 4
    cb = run(toys, tmp_path / "grpo", algo=GRPO, video_base_dir=str(tmp_path / "g"), env_indices=(0, 1))
    assert len(cb.paths) == 6 and all(len(read_mp4(p)[0]) in (1, 4) for p in cb.paths)


def test_tiling_and_overlay_helpers(toys):
    env = toys.ToyBehaviorEnv(image_size=16)
    obs, _ = env.reset(seed=0)
    frame = tile_observation(obs)
    assert frame.shape == (32, 48, 3)
    np.testing.assert_array_equal(frame[::2, ::2][:16, :16], obs["head_rgb"].transpose(1, 2, 0))
    np.testing.assert_array_equal(frame[16:, 32:], obs["wrist_rgb"][1].transpose(1, 2, 0))
    assert tile_observation({"proprio": np.zeros(3)}) is None
    out = overlay_text(np.full((64, 96, 3), 128, np.uint8), ["step 3", "pick up the cube"])
    assert out.shape == (64, 96, 3) and out[:10].mean() < 128 and out[-10:].mean() == 128


@pytest.mark.parametrize("size", [(63, 95)])
def test_odd_frame_sizes_are_padded(tmp_path, size):
    from algorithms.callbacks import Mp4Writer

    writer = Mp4Writer(str(tmp_path / "odd.mp4"), fps=5)
    for k in range(3):
        writer.append(np.full((*size, 3), 40 * k, np.uint8))
    writer.close()
    frames, _ = read_mp4(tmp_path / "odd.mp4")
    assert frames.shape == (3, 64, 96, 3)


def test_grpo_member_waiting_for_its_group(toys, tmp_path):
    """Env 0 ends after 1 chunk, its group partner after 3: env 0's videos hold its own episodes only,
    each starting at the group's seeded reset, none made of the steps it spent waiting."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda n=n: toys.make_toy_env(max_episode_steps=n) for n in (8, 24)])
    model = GRPO(toys.TinyTokenPolicy, venv, group_size=2, n_steps=6, batch_size=12, n_epochs=1, seed=0)
    model.set_logger(Logger(folder=None, output_formats=[]))
    cb = VideoRecorderCallback(str(tmp_path), env_indices=(0,))
    model.learn(12, callback=cb)
    assert [p.split("/")[-1] for p in cb.paths] == ["episode_000000.mp4", "episode_000001.mp4", "episode_000002.mp4"]
    assert [len(read_mp4(p)[0]) for p in cb.paths] == [2, 2, 1]  # reset + 1 chunk; the last one just started
