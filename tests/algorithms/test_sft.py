"""The SFT stage: demonstrations -> chunks and norm_stats -> behaviour cloning -> a loadable checkpoint."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from algorithms.sft import SFTConfig, _chunks, _random_shift, demo_norm_stats, load_demos, sft_policy, train_sft


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    os.environ.setdefault("MUJOCO_GL", "egl")
    from behavior_gym.experts.recorder import record_parallel

    out = tmp_path_factory.mktemp("demos")
    rows = record_parallel(["open_drawer"], 2, out, workers=2, image_size=32)  # in a child process
    assert sum(r["written"] for r in rows) == 2
    return str(out)


def test_chunks_repeat_the_last_action():
    a = np.arange(5, dtype=np.float32)[:, None]
    c = _chunks(a, 3)
    assert c.shape == (5, 3, 1)
    np.testing.assert_array_equal(c[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(c[3, :, 0], [3, 4, 4])
    np.testing.assert_array_equal(c[4, :, 0], [4, 4, 4])


def test_load_demos_and_norm_stats(demo_dir):
    demos = load_demos([demo_dir], chunk=4, frame_stride=2)
    full = load_demos([demo_dir], chunk=4)
    assert demos.episodes == 2 and demos.tasks == ["open_drawer"]
    assert len(full) == len(full.actions) and len(demos) == sum((n + 1) // 2 for n in _episode_lengths(demo_dir))
    assert demos.head.dtype == np.uint8 and demos.wrist.shape[1:] == (2, 3, 32, 32)
    np.testing.assert_array_equal(demos.chunks[0, 1], full.chunks[0, 1])  # chunks keep consecutive actions
    stats = demo_norm_stats(demos)
    assert len(stats["action"]["q01"]) == 23 and stats["action"]["mask"][14] is False
    assert stats["num_trajectories"] == 2
    with pytest.raises(FileNotFoundError, match="collect_demos"):
        load_demos([os.path.join(demo_dir, "missing.hdf5")])
    with pytest.raises(ValueError, match="no usable episodes"):
        load_demos([demo_dir], tasks=["stacking"])


def test_demo_cache_is_reused_and_invalidated(demo_dir, tmp_path):
    cache = str(tmp_path / "cache")
    first = load_demos([demo_dir], chunk=4, frame_stride=2, cache_dir=cache)
    (entry,) = os.listdir(cache)
    assert isinstance(first.head, np.memmap)  # decoded straight into the cache's files
    in_memory = load_demos([demo_dir], chunk=4, frame_stride=2)
    assert not isinstance(in_memory.head, np.memmap)
    mtime = os.path.getmtime(os.path.join(cache, entry, "head.npy"))
    again = load_demos([demo_dir], chunk=4, frame_stride=2, cache_dir=cache)
    assert isinstance(again.head, np.memmap) and os.path.getmtime(os.path.join(cache, entry, "head.npy")) == mtime
    assert in_memory.points is not None  # the privileged labels are cached too
    for loaded in (first, again):  # the cache holds what reading into memory gives
        for k in ("head", "wrist", "proprio", "chunks", "instruction", "task", "actions", "points", "points_mask"):
            np.testing.assert_array_equal(getattr(loaded, k), getattr(in_memory, k))
        assert (loaded.instructions, loaded.tasks, loaded.episodes) == (
            in_memory.instructions, in_memory.tasks, in_memory.episodes)
    torch.from_numpy(again.head[:2])  # writable (copy-on-write) views: no torch warning, no disk writes
    # Other arguments: another entry. A half-written entry (no meta.json) is not read.
    load_demos([demo_dir], chunk=2, frame_stride=2, cache_dir=cache)
    assert len(os.listdir(cache)) == 2
    os.remove(os.path.join(cache, entry, "meta.json"))
    os.utime(os.path.join(cache, entry, "head.npy"), (0, 0))
    rebuilt = load_demos([demo_dir], chunk=4, frame_stride=2, cache_dir=cache)
    assert os.path.getmtime(os.path.join(cache, entry, "head.npy")) > 0, "a half-written entry was read"
    np.testing.assert_array_equal(rebuilt.head, in_memory.head)
    # A changed demonstration file: a new entry.
    f = next(os.path.join(demo_dir, n) for n in sorted(os.listdir(demo_dir)) if n.endswith(".hdf5"))
    os.utime(f, (os.path.getatime(f), os.path.getmtime(f) + 10))
    load_demos([demo_dir], chunk=4, frame_stride=2, cache_dir=cache)
    assert len(os.listdir(cache)) == 3


def test_demo_cache_filled_by_several_readers_matches_reading_into_memory(demo_dir, tmp_path):
    import shutil

    folder = tmp_path / "copies"  # every file twice: four episodes in four files
    folder.mkdir()
    for n in sorted(os.listdir(demo_dir)):
        if n.endswith(".hdf5"):
            for copy in ("a", "b"):
                shutil.copy(os.path.join(demo_dir, n), folder / f"{copy}_{n}")
    kwargs = dict(chunk=4, frame_stride=3, max_episodes_per_task=3, workers=2)
    cached = load_demos([str(folder)], cache_dir=str(tmp_path / "cache"), **kwargs)
    in_memory = load_demos([str(folder)], **kwargs)
    assert isinstance(cached.head, np.memmap) and cached.episodes == in_memory.episodes == 3
    for k in ("head", "wrist", "proprio", "chunks", "instruction", "task", "actions"):
        np.testing.assert_array_equal(getattr(cached, k), getattr(in_memory, k))


def test_a_failed_cache_fill_leaves_nothing_behind(demo_dir, tmp_path, monkeypatch):
    import algorithms.sft as sft

    def broken(*args, **kwargs):
        raise OSError("disk read error")

    monkeypatch.setattr(sft, "_read_episode", broken)  # workers=1: the readers run in this process
    with pytest.raises(OSError, match="disk read error"):
        load_demos([demo_dir], chunk=4, cache_dir=str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []


def _episode_lengths(path):
    import h5py

    out = []
    for f in sorted(os.listdir(path)):
        if f.endswith(".hdf5"):
            with h5py.File(os.path.join(path, f)) as h:
                out += [len(h[k]["actions"]) for k in sorted(h) if k.startswith("episode_")]
    return out


def test_random_shift_keeps_shape_and_moves_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (3, 2, 3, 16, 16), dtype=torch.uint8)
    y = _random_shift(x, 2, g)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert not torch.equal(x, y)


def test_sft_learns_resumes_and_saves_a_loadable_checkpoint(demo_dir, tmp_path):
    torch.manual_seed(0)
    demos = load_demos([demo_dir], chunk=2, frame_stride=4)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    cfg = SFTConfig(steps=40, batch_size=8, lr=2e-3, warmup_steps=5, log_every=10, save_every=20, random_shift=0)
    stopped = train_sft(policy, demos, SFTConfig(**{**cfg.__dict__, "max_minutes": 0.0}), str(tmp_path))
    assert stopped["step"] == 0 and not stopped["finished"] and "model_path" not in stopped
    first = train_sft(policy, demos, SFTConfig(**{**cfg.__dict__, "steps": 20}), str(tmp_path))
    assert first["step"] == 20 and os.path.exists(os.path.join(tmp_path, "sft_state.pt"))
    out = train_sft(policy, demos, cfg, str(tmp_path))  # resumes at step 20
    assert out["finished"] and out["step"] == 40
    assert out["loss"] < 4.0 and out["token_accuracy"] > 0.2, out  # chance: loss 5.5, accuracy 1/256
    assert os.path.exists(os.path.join(out["model_path"], "config.json"))

    from vla_policies import OpenVLAOFTPolicy

    loaded = OpenVLAOFTPolicy(policy.observation_space, policy.action_space, lambda _: 0.0,
                              model_path=out["model_path"], unnorm_key="behavior_embedded", torch_dtype="float32")
    obs = {"head_rgb": torch.as_tensor(demos.head[:3]), "wrist_rgb": torch.as_tensor(demos.wrist[:3]),
           "proprio": torch.as_tensor(demos.proprio[:3]), "instruction": [demos.instructions[0]] * 3}
    with torch.no_grad():
        a = policy.forward(obs, deterministic=True)[0]
        b = loaded.forward(obs, deterministic=True)[0]
    torch.testing.assert_close(a, b)

    # The evaluate stage runs the saved checkpoint on held-out seeds and records what it ran.
    import json
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "embodiment", "evaluate.py")
    res = os.path.join(tmp_path, "eval.json")
    run = subprocess.run([sys.executable, script, f"model_path={out['model_path']}", "tasks=[open_drawer]",
                          "episodes_per_task=2", "num_envs=1", "image_size=32", "max_episode_steps=16",
                          "modes=[greedy,sampled:0.5:3]", "layout=mobile", f"out={res}", "device=cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.load(open(res))
    assert got["layout"] == "mobile" and got["seed"] == 100_000 and got["temperature"] == 1.0
    stats = got["modes"]["greedy"]["per_task"]["open_drawer"]
    assert stats["episodes"] == 2 and stats["episode_len"] == 16.0, stats  # the tiny policy never opens it
    assert got["modes"]["sampled:0.5:3"]["per_task"]["open_drawer"]["episodes"] == 2
    assert "sampled:0.5:3 open_drawer" in run.stdout and got["top_k"] == 0


def test_sigterm_stops_after_the_step_with_state_and_model_saved(demo_dir, tmp_path):
    """`timeout` or a scheduler's preemption: the run stops at once and keeps its last step, not the last
    `save_every` one; the handler is ours only while training runs."""
    import signal

    from stable_baselines3.common.logger import configure

    demos = load_demos([demo_dir], chunk=2, frame_stride=8)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    logger = configure(str(tmp_path), ["csv"])
    dump = logger.dump

    def dump_then_term(step=0):
        dump(step)
        if step == 10:
            os.kill(os.getpid(), signal.SIGTERM)

    logger.dump = dump_then_term
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *a: received.append(a))  # old code must not kill pytest
    try:
        cfg = SFTConfig(steps=40, batch_size=4, warmup_steps=2, log_every=5, save_every=100, random_shift=0)
        out = train_sft(policy, demos, cfg, str(tmp_path), logger=logger)
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert out["step"] == 10 and not out["finished"], out
    assert not received  # training took the signal, not the handler that was there before
    assert handler_after is not None and handler_after.__name__ == "<lambda>"  # and gave it back
    assert torch.load(os.path.join(tmp_path, "sft_state.pt"), weights_only=False)["step"] == 10
    assert os.path.exists(os.path.join(out["model_path"], "config.json"))


def test_steps_fill_the_time_budget_only_with_max_minutes(demo_dir, tmp_path):
    demos = load_demos([demo_dir], chunk=2, frame_stride=8)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    with pytest.raises(ValueError, match="max_minutes"):
        train_sft(policy, demos, SFTConfig(steps=0), str(tmp_path))


def test_time_budget_is_planned_from_warm_steps(demo_dir, tmp_path, monkeypatch):
    """`steps=0, max_minutes=M` plans the step count from measured step times and re-plans over later
    windows: first steps that are slow (caches, the data loader warming) do not end the run early.
    A fake clock: 0.3 s per step for the first 40 steps, 0.1 s after; a 30 s budget fits ~220 steps
    (planning once from steps 20-40 gave 100 and stopped at 16 of the 30 s)."""
    import types

    import algorithms.sft as sft_mod

    clock = {"t": 0.0, "steps": 0}
    monkeypatch.setattr(sft_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))
    sample = sft_mod._Batches.sample

    def timed_sample(self, n):
        clock["t"] += 0.3 if clock["steps"] < 40 else 0.1
        clock["steps"] += 1
        return sample(self, n)

    monkeypatch.setattr(sft_mod._Batches, "sample", timed_sample)
    demos = load_demos([demo_dir], chunk=2, frame_stride=8)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    cfg = SFTConfig(steps=0, max_minutes=0.5, batch_size=2, warmup_steps=5, random_shift=0, log_every=1000,
                    save_every=10**6)
    out = train_sft(policy, demos, cfg, str(tmp_path))
    assert out["finished"] and 200 <= out["step"] <= 225, out
    assert 28.0 <= clock["t"] <= 30.5, clock


def test_fp8_agreement_script_compares_a_trained_checkpoint(demo_dir, tmp_path, capsys):
    """benchmarks/fp8_agreement.py on an SFT checkpoint: bf16/fp32 vs FP8 greedy tokens on demo frames
    (on the CPU where this torch's `_scaled_mm` takes float8; CUDA asked for without a GPU fails clearly)."""
    import importlib.util

    from vla_policies.openvla_oft.fp8 import fp8_unsupported_reason

    spec = importlib.util.spec_from_file_location(
        "fp8_agreement", os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "fp8_agreement.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    demos = load_demos([demo_dir], chunk=8, frame_stride=4)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    out = train_sft(policy, demos, SFTConfig(steps=4, batch_size=4, warmup_steps=1, random_shift=0), str(tmp_path))
    args = [out["model_path"], "--demos", demo_dir, "--frames", "6", "--batch", "4"]
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            script.main(args)
    if fp8_unsupported_reason(torch.device("cpu")) is not None:
        pytest.skip("this torch has no CPU float8 _scaled_mm")
    assert script.main([*args, "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "6 frames" in text and "greedy tokens equal: " in text and "largest action change per part" in text
    share = float(text.split("greedy tokens equal: ")[1].split(";")[0])
    assert 0.5 <= share <= 1.0


def test_label_smoothing_targets_and_training(demo_dir, tmp_path):
    """`label_sigma`: Gaussian targets around each demonstrated bin (a near miss costs less than a far
    one), and SFT with them still learns the demonstrated tokens."""
    from algorithms.sft import soft_token_targets

    t = soft_token_targets(torch.tensor([0, 100, 254]), 255, 2.0)
    torch.testing.assert_close(t.sum(-1), torch.ones(3))
    assert t[1].argmax() == 100 and t[1, 101] > t[1, 103] > t[1, 110] and t[0, 0] == t[0].max()
    torch.manual_seed(0)
    demos = load_demos([demo_dir], chunk=2, frame_stride=4)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    cfg = SFTConfig(steps=40, batch_size=8, lr=2e-3, warmup_steps=5, log_every=10, random_shift=0, label_sigma=2.0)
    out = train_sft(policy, demos, cfg, str(tmp_path))
    assert out["finished"] and out["token_accuracy"] > 0.2, out  # chance: 1/256


def test_demos_carry_privileged_points_and_the_aux_loss_learns_them(demo_dir, tmp_path):
    """Recorded episodes hold the task's points in the robot frame (open_drawer: the handle, one real
    point of two); `aux_position_weight` regresses them from the value head's input state, the
    position error falls, the head does not end up in the checkpoint, and missing labels or a policy
    without a value head are refused clearly."""
    demos = load_demos([demo_dir], chunk=2, frame_stride=2)
    assert demos.points.shape == (len(demos), 2, 3) and demos.points_mask.shape == (len(demos), 2)
    assert demos.points_mask[:, 0].all() and not demos.points_mask[:, 1].any()
    # The handle is in front of the robot, at drawer height, and comes closer as the drawer opens.
    assert (demos.points[:, 0, 0] > 0.2).all() and (np.abs(demos.points[:, 0, 2] - 0.6) < 0.3).all()
    torch.manual_seed(0)
    policy = sft_policy(demos, preset="tiny", image_size=32, config_overrides={"image_sizes": [28, 28]})
    cfg = SFTConfig(steps=60, batch_size=8, lr=2e-3, warmup_steps=5, log_every=10, random_shift=0,
                    aux_position_weight=1.0)
    errors = []

    class _Log:
        def record(self, key, value):
            if key == "sft/aux_position_error_cm":
                errors.append(value)

        def dump(self, step):
            pass

    out = train_sft(policy, demos, cfg, str(tmp_path), logger=_Log())
    assert len(errors) == 6 and errors[-1] < 0.6 * errors[0], errors
    assert out["aux_position_error_cm"] == errors[-1]
    assert policy.model.value_head._forward_hooks == {}  # the hook goes with the head
    from safetensors import safe_open

    keys = []
    for f in os.listdir(out["model_path"]):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(out["model_path"], f), "pt") as st:
                keys += list(st.keys())
    assert keys and not any("aux" in k for k in keys)
    old = load_demos([demo_dir], chunk=2, frame_stride=2)
    old.points = old.points_mask = None
    with pytest.raises(ValueError, match="privileged"):
        train_sft(policy, old, cfg, str(tmp_path / "old"))
    no_value = sft_policy(demos, preset="tiny", image_size=32,
                          config_overrides={"image_sizes": [28, 28], "add_value_head": False})
    with pytest.raises(ValueError, match="value head"):
        train_sft(no_value, demos, cfg, str(tmp_path / "nv"))
