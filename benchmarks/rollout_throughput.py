"""Rollout throughput: a `RolloutWorker`'s `act`, eager and with fast inference, and the cost of PPO's
log-prob recomputation.

For one preset and batch size, the trainer (`algorithms.PPO` with `recompute_log_probs`, its policy built
in the working dtype on the device) holds the weights; for each variant a `RolloutWorker` is built as the
runner builds it (without Ray) and the trainer's weights are synced into it (`load_weights`):

  eager     the plain forward pass (`rollout.fast_inference.enabled: false`);
  fast      `rollout.fast_inference` on with its defaults: compiled ViT blocks and Llama layers, fused
            q/k/v and gate/up projections, and on CUDA the whole forward pass as CUDA graphs;
  fast-fp8  the same with `fp8: true` (FP8 GEMMs in the Llama layers; CUDA compute capability >= 8.9,
            or a torch whose CPU `_scaled_mm` takes float8).

Per variant it prints the time of building the worker and syncing the weights, of the first `act` (compiling
and capturing), the median and p90 of `act` over `--repeats` calls (sampled actions, values and per-token
log-probs of a batch of observations, numpy in and out as through Ray), actions/s (batch x chunk / median),
the share of greedy action tokens equal to the eager worker's, peak GPU memory, and then for a rollout of
`--rollout-steps` such batches the time `PPO._recompute_log_probs` takes (micro-batches of `--micro-batch`)
and the gap it reports (`rollout/log_prob_gap`: mean |worker log-prob - update log-prob| per token).
Weights are random; observations random images with one instruction.

    python benchmarks/rollout_throughput.py --preset 7.5b --batch 32          # on a GPU
    python benchmarks/rollout_throughput.py --preset 7.5b --batch 32 --lora-rank 32
    python benchmarks/rollout_throughput.py --quick                           # tiny on this CPU, a check
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

INSTRUCTION = "turn on the radio receiver that's on the table in the living room"
VARIANTS = ("eager", "fast", "fast-fp8")
HEADER = (f"{'variant':>9} {'batch':>5} {'build s':>7} {'1st act s':>9} {'ms/act':>8} {'p90':>8} {'actions/s':>9} "
          f"{'greedy=':>7} {'peak GB':>7} {'recompute s':>11} {'ms/sample':>9} {'gap/token':>9}  note")


def fmt(x: float, spec: str) -> str:
    return format(x, spec) if not math.isnan(x) else "-".rjust(int(spec.split(".")[0].lstrip(">") or 1))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spaces(image_size: int, chunk: int):
    import gymnasium as gym

    from behavior_gym.spaces import ACTION_HIGH, ACTION_LOW, observation_space
    from behavior_gym.wrappers.sb3 import sb3_observation_space

    action_space = gym.spaces.Box(np.tile(ACTION_LOW, chunk), np.tile(ACTION_HIGH, chunk), dtype=np.float32)
    return sb3_observation_space(observation_space(image_size)), action_space


def random_obs(space, batch: int, seed: int) -> dict[str, np.ndarray]:
    from behavior_gym.spaces import encode_instruction

    rng = np.random.default_rng(seed)
    obs = {}
    for key, s in space.spaces.items():
        if key == "instruction":
            obs[key] = np.tile(encode_instruction(INSTRUCTION), (batch, 1))
        elif s.dtype == np.uint8:
            obs[key] = rng.integers(0, 256, (batch, *s.shape), dtype=np.uint8)
        elif key == "task_id":
            obs[key] = np.zeros(batch, dtype=np.int64)
        else:
            obs[key] = rng.standard_normal((batch, *s.shape)).astype(np.float32)
    return obs


def greedy(worker, obs) -> np.ndarray:
    from stable_baselines3.common.utils import obs_as_tensor

    with torch.no_grad(), torch.autocast(worker.device.type, dtype=torch.bfloat16, enabled=worker.bf16):
        bins = worker.policy.get_distribution(obs_as_tensor(obs, worker.device)).mode()
    return bins.cpu().numpy()


def build_trainer(args, obs_space, action_space, policy_kwargs, device):
    from stable_baselines3.common.logger import Logger

    from algorithms import PPO
    from algorithms.distributed.data_parallel import SpacesOnlyVecEnv
    from vla_policies import OpenVLAOFTPolicy

    env = SpacesOnlyVecEnv(args.batch, obs_space, action_space)
    torch.manual_seed(0)
    trainer = PPO(OpenVLAOFTPolicy, env, n_steps=args.rollout_steps, batch_size=args.batch * args.rollout_steps,
                  micro_batch_size=args.micro_batch, n_epochs=1, recompute_log_probs=True, seed=0, device=device,
                  policy_kwargs=policy_kwargs)
    trainer.set_logger(Logger(folder=None, output_formats=[]))
    return trainer


def run_variant(variant: str, args, trainer, obs_batches, policy_kwargs, device, eager_greedy) -> dict:
    from algorithms import metrics as M
    from algorithms.distributed.rollout_worker import RolloutWorker
    from vla_policies import OpenVLAOFTPolicy

    row = {"variant": variant, "note": ""}
    fast = None
    if variant != "eager":
        fast = {"compile": True, "backend": args.backend, "mode": args.compile_mode}
        if variant == "fast-fp8":
            fast["fp8"] = True
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    worker = RolloutWorker(OpenVLAOFTPolicy, trainer.observation_space, trainer.action_space, policy_kwargs,
                           token_level=trainer._token_level, bf16=trainer.use_bf16, fast_inference=fast)
    worker.load_weights(trainer.policy.state_dict(), version=0)
    sync(device)
    row["build_s"] = time.perf_counter() - start
    obs = obs_batches[0]
    start = time.perf_counter()
    worker.act(obs)
    row["first_s"] = time.perf_counter() - start
    for _ in range(args.warmup):
        worker.act(obs)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        worker.act(obs)  # numpy out: synchronised
        times.append(time.perf_counter() - start)
    row["median_ms"] = statistics.median(times) * 1e3
    row["p90_ms"] = sorted(times)[max(0, math.ceil(0.9 * len(times)) - 1)] * 1e3
    chunk = trainer.action_space.shape[0] // 23
    row["actions_per_s"] = args.batch * chunk / (row["median_ms"] / 1e3)
    g = greedy(worker, obs)
    row["greedy"] = float((g == eager_greedy).mean()) if eager_greedy is not None else math.nan
    row["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan

    # a rollout acted by this worker, then the update's recomputation of its log-probs
    buffer = trainer.rollout_buffer
    buffer.reset()
    for o in obs_batches:
        actions, values, log_probs, _ = worker.act(o)
        buffer.add(o, actions, np.zeros(args.batch), np.zeros(args.batch), torch.from_numpy(values),
                   torch.from_numpy(log_probs))
    buffer.compute_returns_and_advantage(last_values=torch.zeros(args.batch), dones=np.zeros(args.batch))
    del worker
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    trainer.policy.set_training_mode(True)
    sync(device)
    start = time.perf_counter()
    trainer._recompute_log_probs(buffer)
    sync(device)
    row["recompute_s"] = time.perf_counter() - start
    row["recompute_ms_per_sample"] = row["recompute_s"] * 1e3 / (args.batch * args.rollout_steps)
    row["gap"] = float(trainer.logger.name_to_value[M.ROLLOUT_LOG_PROB_GAP])
    return row, g


COLUMNS = [("build_s", ">7.1f"), ("first_s", ">9.1f"), ("median_ms", ">8.1f"), ("p90_ms", ">8.1f"),
           ("actions_per_s", ">9.1f"), ("greedy", ">7.3f"), ("peak_gb", ">7.2f"), ("recompute_s", ">11.2f"),
           ("recompute_ms_per_sample", ">9.1f"), ("gap", ">9.4f")]


def format_row(r: dict, batch: int) -> str:
    cells = " ".join(fmt(r.get(key, math.nan), spec) for key, spec in COLUMNS)
    return f"{r['variant']:>9} {batch:>5} {cells}  {r['note']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="tiny, small, small-p28 or 7.5b (default: 7.5b on CUDA, "
                                                       "tiny on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="observations per act (default: 32 on CUDA, 4 on CPU)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--lora-rank", type=int, default=0, help="LoRA on every linear layer, as the runner's "
                                                                 "is_lora (those layers are neither fused nor FP8)")
    parser.add_argument("--image-size", type=int, default=224, help="camera side of the observations")
    parser.add_argument("--rollout-steps", type=int, default=2, help="batches in the rollout whose log-probs "
                                                                     "are recomputed")
    parser.add_argument("--micro-batch", type=int, default=None, help="recomputation micro-batch (default: batch)")
    parser.add_argument("--backend", default=None, help="torch.compile backend (default: inductor on CUDA, "
                                                        "aot_eager on CPU: tracing only, for a quick check)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (rollout.fast_inference.mode)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 10, --quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls after the first (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    on_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if on_cuda else "cpu")
    args.preset = args.preset or ("7.5b" if on_cuda else "tiny")
    args.batch = args.batch or (32 if on_cuda else 4)
    args.micro_batch = args.micro_batch or args.batch
    args.backend = args.backend or ("inductor" if on_cuda else "aot_eager")
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)

    from vla_policies import OpenVLAOFTConfig
    from vla_policies.openvla_oft.fp8 import fp8_unsupported_reason

    chunk = OpenVLAOFTConfig.from_preset(args.preset).num_action_chunks
    obs_space, action_space = spaces(args.image_size, chunk)
    policy_kwargs = {"preset": args.preset, "torch_dtype": "bfloat16" if on_cuda else "float32",
                     "model_device": device.type, "lora_rank": args.lora_rank}
    where = torch.cuda.get_device_name(device) if on_cuda else f"CPU, {torch.get_num_threads()} torch threads"
    print(f"RolloutWorker.act, preset {args.preset}{f' + LoRA rank {args.lora_rank}' if args.lora_rank else ''}, "
          f"batch {args.batch}, chunk {chunk}, {args.image_size}-pixel observations, on {where}; torch "
          f"{torch.__version__}, compile backend {args.backend}; median of {args.repeats} after {args.warmup} "
          f"warm-up calls; recomputation of {args.rollout_steps} x {args.batch} samples in micro-batches of "
          f"{args.micro_batch}", flush=True)
    start = time.perf_counter()
    trainer = build_trainer(args, obs_space, action_space, policy_kwargs, device)
    n_params = sum(p.numel() for p in trainer.policy.parameters())
    print(f"trainer built in {time.perf_counter() - start:.1f} s ({n_params / 1e6:,.1f}M parameters)", flush=True)
    obs_batches = [random_obs(obs_space, args.batch, seed) for seed in range(args.rollout_steps)]
    print(HEADER, flush=True)
    rows, eager_greedy = [], None
    for variant in args.variants:
        why = fp8_unsupported_reason(device) if variant == "fast-fp8" else None
        if why:
            rows.append({"variant": variant, "note": f"skipped: {why}"})
        else:
            try:
                row, g = run_variant(variant, args, trainer, obs_batches, policy_kwargs, device, eager_greedy)
                if variant == "eager":
                    eager_greedy = g
                rows.append(row)
            except torch.OutOfMemoryError:
                rows.append({"variant": variant, "note": "out of memory"})
            except Exception as e:
                traceback.print_exc(limit=8)
                rows.append({"variant": variant, "note": f"FAILED: {type(e).__name__}: {e}"})
        print(format_row(rows[-1], args.batch), flush=True)
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
