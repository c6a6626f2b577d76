"""The README's first command: a rollout that writes a real, readable mp4."""

import imageio.v2 as imageio

from behavior_gym.rollout import main


def test_rollout_writes_mp4(tmp_path):
    video = tmp_path / "r.mp4"
    out = main(["--max-steps", "12", "--image-size", "64", "--video", str(video)])
    assert out["steps"] == 12
    reader = imageio.get_reader(str(video))
    frames = [f for f in reader]
    assert len(frames) == 13  # reset frame + one per step
    assert frames[0].shape == (128, 192, 3) and frames[5].mean() > 20
