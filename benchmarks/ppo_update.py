"""Rollout storage per step and PPO / GRPO time per sample with OpenVLA-OFT, on this machine.

Prints, for 224x224 cameras (head + two wrists) and chunks of 8:
  - the lean rollout buffer's bytes per stored step (one step = one chunk of one env), and what SB3's
    DictRolloutBuffer would hold after its first `get()` (it copies every array once);
  - for each preset: inference time per chunk step in the rollout, and update time per sample
    (one epoch, micro-batches, token-level ratios), from the trainer's own `time/*` metrics.

The env is a stand-in with the contract's observation (random-free, cheap), so the times are the
policy's and the trainer's, not the simulator's. Weights are random (no download).

    python benchmarks/ppo_update.py                          # tiny preset, 224 px, 1 thread
    python benchmarks/ppo_update.py --presets tiny small --threads 2 --n-steps 8 --micro-batch 4
    python benchmarks/ppo_update.py --top-k 0 3                 # the cost of top-k rollouts and log-probs
    python benchmarks/ppo_update.py --presets small-p28 --master-weights 1 0   # float32 master weights vs bf16 (GPU)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from behavior_gym import spaces as S  # noqa: E402


class ContractEnv(gym.Env):
    """Behavior-R1Pro-v0's observation and action contract with constant images and a unit reward."""

    def __init__(self, image_size: int = 224, episode_steps: int = 64):
        self.observation_space = S.observation_space(image_size)
        self.action_space = S.action_space()
        self.image_size, self.episode_steps, self.t = image_size, episode_steps, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"episode_len": 0}

    def step(self, action):
        self.t += 1
        done = self.t >= self.episode_steps
        return self._obs(), float(action[14] > 0), False, done, {"episode_len": self.t, "success_once": False,
                                                                 "q_score": 0.0, "success": False}

    def _obs(self):
        s = self.image_size
        return {"head_rgb": np.full((3, s, s), 100, np.uint8), "wrist_rgb": np.full((2, 3, s, s), 50, np.uint8),
                "proprio": np.zeros(S.PROPRIO_DIM, np.float32), "instruction": "pick up the apple", "task_id": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--n-steps", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--algo", choices=["ppo", "grpo"], default="ppo")
    parser.add_argument("--top-k", nargs="+", type=int, default=[0],
                        help="rollout sampling top-k values to time (rollout.sampling_params.top_k; 0: all tokens)")
    parser.add_argument("--master-weights", nargs="+", type=int, default=[1], choices=[0, 1],
                        help="1: train float32 master weights under bf16 autocast (PPO's default); 0: train the "
                             "policy in its own dtype (bf16 on CUDA, as runs 1-14); both: --master-weights 1 0")
    args = parser.parse_args()

    import torch
    from stable_baselines3.common.buffers import DictRolloutBuffer
    from stable_baselines3.common.logger import KVWriter, Logger
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from algorithms import GRPO, PPO, LeanRolloutBuffer
    from algorithms import metrics as M
    from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper
    from vla_policies import OpenVLAOFTPolicy

    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.image_size}px, chunk {args.chunk}, {args.n_envs} envs x {args.n_steps} steps")

    def make():
        env = ContractEnv(args.image_size, episode_steps=args.chunk * args.n_steps)
        return Monitor(SB3ObservationWrapper(ActionChunkWrapper(env, args.chunk)))

    probe = make()
    lean = LeanRolloutBuffer(1, probe.observation_space, probe.action_space, device="cpu")
    lean.log_probs = np.zeros((1, 1, args.chunk * S.ACTION_DIM), np.float32)  # per-token log-probs
    sb3 = DictRolloutBuffer(1, probe.observation_space, probe.action_space, device="cpu")
    sb3_bytes = sum(v.nbytes for v in sb3.observations.values()) + sum(
        getattr(sb3, k).nbytes for k in ("actions", "rewards", "returns", "episode_starts", "values", "log_probs",
                                         "advantages"))
    print(f"lean buffer: {lean.bytes_per_step:,.0f} bytes per step {lean.storage()}")
    print(f"SB3 DictRolloutBuffer: {sb3_bytes:,.0f} bytes per step, x2 transiently at its first get()")

    class Capture(KVWriter):
        def __init__(self):
            self.values = {}

        def write(self, key_values, key_excluded, step=0):
            self.values.update(key_values)

        def close(self):
            pass

    for preset, top_k, master in [(p, k, m) for p in args.presets for k in args.top_k for m in args.master_weights]:
        venv = DummyVecEnv([make for _ in range(args.n_envs)])
        algo = GRPO if args.algo == "grpo" else PPO
        extra = {"group_size": args.n_envs} if algo is GRPO else {}
        t0 = time.perf_counter()
        model = algo(OpenVLAOFTPolicy, venv, n_steps=args.n_steps, batch_size=args.n_envs * args.n_steps,
                     micro_batch_size=args.micro_batch, n_epochs=1, seed=0, learning_rate=1e-5,
                     master_weights=bool(master), policy_kwargs={"preset": preset, "top_k": top_k}, **extra)
        build = time.perf_counter() - t0
        cap = Capture()
        model.set_logger(Logger(folder=None, output_formats=[cap]))
        model.learn(args.n_envs * args.n_steps)
        v = cap.values
        samples = args.n_envs * args.n_steps
        params = sum(p.numel() for p in model.policy.parameters()) / 1e6
        dtype = str(next(p for p in model.policy.parameters() if p.requires_grad).dtype).split(".")[1]
        print(f"{preset}{f' top-k {top_k}' if top_k else ''}, {dtype} weights ({params:,.1f}M params, built in "
              f"{build:.1f}s): inference "
              f"{v[M.TIME_INFERENCE] / args.n_steps * 1e3:,.0f} ms per chunk step ({args.n_envs} envs), "
              f"update {v[M.TIME_UPDATE]:.2f}s for {samples} samples = "
              f"{v[M.TIME_UPDATE_PER_SAMPLE] * 1e3:,.0f} ms per sample (micro-batch {args.micro_batch})")


if __name__ == "__main__":
    main()
