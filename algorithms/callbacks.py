"""Training videos (SPEC §6 `video_cfg`): mp4 episodes of the tiled cameras, with an optional overlay.

`VideoRecorderCallback` renders chosen envs of the training VecEnv after every (chunk) step —
`render()` of `Behavior-R1Pro-v0` is the three cameras tiled into one HWC uint8 frame — and streams
the frames into one mp4 per episode (PyAV; imageio-ffmpeg as a fallback), so an
episode is never held in memory. With `info_on_video`, each frame carries the env step, the chunk's
reward, success and the instruction. One frame per chunk, like RLinf with
`skip_intermediate_obs_in_chunk`. The last frame of an episode comes from its terminal observation
(SB3's vector envs have already reset the env when the callback runs).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from algorithms.group_reset import GroupResetVecEnv
from behavior_gym.spaces import decode_instruction


def tile_observation(obs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The render layout (head camera at double size, wrists stacked on the right) from one observation
    with `head_rgb` [3, H, W] and `wrist_rgb` [2, 3, H, W]; None if the observation has no cameras."""
    if not isinstance(obs, Mapping) or "head_rgb" not in obs or "wrist_rgb" not in obs:
        return None
    head, wrist = np.asarray(obs["head_rgb"]), np.asarray(obs["wrist_rgb"])
    h, w = head.shape[1:]
    frame = np.zeros((2 * h, 2 * w + wrist.shape[-1], 3), dtype=np.uint8)
    frame[:, : 2 * w] = head.transpose(1, 2, 0).repeat(2, axis=0).repeat(2, axis=1)
    frame[: wrist.shape[-2], 2 * w :] = wrist[0].transpose(1, 2, 0)
    frame[wrist.shape[-2] : 2 * wrist.shape[-2], 2 * w :] = wrist[1].transpose(1, 2, 0)
    return frame


def overlay_text(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Write `lines` in white on a dark band at the top of an HWC uint8 frame (returns a new frame)."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = frame.shape[:2]
    size = max(8, h // 30)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    chars = max(8, int(w / (0.6 * size)))
    wrapped = [part for line in lines for part in (textwrap.wrap(line, chars) or [""])]
    image = Image.fromarray(np.ascontiguousarray(frame))
    band = min(h, (len(wrapped) * (size + 2)) + 4)
    dark = np.asarray(image).copy()
    dark[:band] = (dark[:band] * 0.35).astype(np.uint8)
    image = Image.fromarray(dark)
    draw = ImageDraw.Draw(image)
    for k, line in enumerate(wrapped):
        draw.text((3, 2 + k * (size + 2)), line, fill=(255, 255, 255), font=font)
    return np.asarray(image)


class Mp4Writer:
    """Streams HWC uint8 frames into an mp4 (H.264, yuv420p) with PyAV; odd sizes are padded to even.
    Falls back to imageio-ffmpeg when PyAV is not installed."""

    def __init__(self, path: str, fps: float = 15, codec: str = "libx264"):
        self.path = path
        self.fps, self.codec = fps, codec
        self._container = self._stream = self._legacy = None
        self.n_frames = 0

    def append(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, dtype=np.uint8)
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))
        if self._container is None and self._legacy is None:
            self._open(frame.shape[1], frame.shape[0])
        if self._container is not None:
            import av

            packets = self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
            self._container.mux(packets)
        else:
            self._legacy.append_data(frame)
        self.n_frames += 1

    def _open(self, width: int, height: int) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            import av
        except ImportError:
            import imageio.v2 as imageio

            self._legacy = imageio.get_writer(self.path, fps=self.fps, codec=self.codec, macro_block_size=1)
            return
        self._container = av.open(self.path, mode="w")
        self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode())  # flush the encoder
            self._container.close()
        if self._legacy is not None:
            self._legacy.close()
        self._container = self._stream = self._legacy = None


class VideoRecorderCallback(BaseCallback):
    """Write mp4 videos of training episodes.

    Args:
        video_base_dir: output folder (default ``<logger folder>/video/train``); files are
            ``env_<i>/episode_<n>.mp4``.
        env_indices: which envs of the training VecEnv to film.
        info_on_video: overlay step, reward, success and instruction on each frame.
        fps: frames per second of the mp4 (one frame per chunk).
        every_n_episodes: film one episode in every n (per env).
        max_videos: stop after this many files (None: no limit).
    """

    def __init__(self, video_base_dir: str | None = None, env_indices: Sequence[int] = (0,),
                 info_on_video: bool = True, fps: float = 15, every_n_episodes: int = 1,
                 max_videos: int | None = None, verbose: int = 0):
        super().__init__(verbose)
        self.video_base_dir = video_base_dir
        self.env_indices = tuple(int(i) for i in env_indices)
        self.info_on_video = info_on_video
        self.fps = fps
        self.every_n_episodes = max(1, int(every_n_episodes))
        self.max_videos = max_videos
        self.paths: list[str] = []
        self._writers: dict[int, Mp4Writer | None] = {}
        self._episode: dict[int, int] = {}
        self._instruction: dict[int, str] = {}
        self._step: dict[int, int] = {}

    # -- SB3 hooks --------------------------------------------------------------------------------
    def _init_callback(self) -> None:
        if self.video_base_dir is None:
            root = self.logger.get_dir() if self.logger is not None else None
            self.video_base_dir = os.path.join(root or ".", "video", "train")
        os.makedirs(self.video_base_dir, exist_ok=True)

    def _on_training_start(self) -> None:
        obs = self.model._last_obs
        frames = self._render()
        for i, frame in zip(self.env_indices, frames):
            self._episode[i] = 0
            self._start(i, frame, self._obs_of(obs, i), info={})

    def _on_step(self) -> bool:
        infos, dones = self.locals["infos"], self.locals["dones"]
        rewards, new_obs = self.locals["rewards"], self.locals["new_obs"]
        grouped = isinstance(self.training_env, GroupResetVecEnv)
        # render only the envs whose frame is used: filmed episodes, and episodes that start now
        needed = [i for i in self.env_indices
                  if dones[i] or infos[i].get("group_reset")
                  or (self._writers.get(i) is not None and not infos[i].get("group_idle"))]
        frames = dict(zip(needed, self._render(needed))) if needed else {}
        for i in needed:
            info, frame = infos[i], frames[i]
            if dones[i]:
                last = tile_observation(info.get("terminal_observation"))
                if last is not None:
                    self._add(i, last, info, float(rewards[i]))
                self._finish(i)
                self._episode[i] += 1
                if grouped and not info.get("group_reset"):
                    continue  # a GRPO member waits for its group; its next episode starts at the group reset
                self._start(i, frame, self._obs_of(new_obs, i), info={})
            elif info.get("group_reset"):  # a waiting GRPO member starts its group's next episode
                self._start(i, frame, self._obs_of(new_obs, i), info={})
            else:
                self._add(i, frame, info, float(rewards[i]))
        return True

    def _on_training_end(self) -> None:
        for i in list(self._writers):
            self._finish(i)

    # -- helpers ----------------------------------------------------------------------------------
    def _render(self, indices: Sequence[int] | None = None) -> list[np.ndarray]:
        indices = list(self.env_indices if indices is None else indices)
        return self.training_env.env_method("render", indices=indices)

    @staticmethod
    def _obs_of(obs: Any, i: int) -> Any:
        if isinstance(obs, Mapping):
            return {k: v[i] for k, v in obs.items()}
        return None

    def _start(self, i: int, frame: np.ndarray, obs: Any, info: Mapping[str, Any]) -> None:
        self._instruction[i] = ""
        if isinstance(obs, Mapping) and "instruction" in obs:
            code = obs["instruction"]
            self._instruction[i] = code if isinstance(code, str) else decode_instruction(code)
        limit_hit = self.max_videos is not None and len(self.paths) >= self.max_videos
        if self._episode[i] % self.every_n_episodes or limit_hit or frame is None:
            self._writers[i] = None
            return
        path = os.path.join(self.video_base_dir, f"env_{i}", f"episode_{self._episode[i]:06d}.mp4")
        self._writers[i] = Mp4Writer(path, fps=self.fps)
        self.paths.append(path)
        self._step[i] = 0
        self._add(i, frame, info, 0.0, advance=False)

    def _add(self, i: int, frame: np.ndarray, info: Mapping[str, Any], reward: float, advance: bool = True) -> None:
        writer = self._writers.get(i)
        if writer is None or frame is None:
            return
        if advance:
            self._step[i] = int(info.get("episode_len", self._step[i] + 1))
        if self.info_on_video:
            success = info.get("success", info.get("is_success", False))
            lines = [f"step {self._step[i]}  reward {reward:+.3f}  success {'yes' if success else 'no'}"]
            if self._instruction[i]:
                lines.append(self._instruction[i])
            frame = overlay_text(frame, lines)
        writer.append(frame)

    def _finish(self, i: int) -> None:
        writer = self._writers.pop(i, None)
        if writer is not None:
            writer.close()
            if self.verbose:
                print(f"wrote {writer.path} ({writer.n_frames} frames)")
