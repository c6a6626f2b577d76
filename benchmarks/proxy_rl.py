"""Does PPO raise a pick-style skill from a behaviour-cloned start? The learning runs' RL stage on the CPU.

The VLA runs (README, "Does it learn?") fine-tune a cloned policy with PPO for minutes of GPU time.
This script asks the same question where it is cheap to ask: it takes the state clone of
`benchmarks/bc_clonability.py` (an MLP on privileged state with OpenVLA-OFT's factorisation: one
256-bin token per action dimension and chunk step, chunks of 8) as the starting policy, adds a value
head, and trains it with `algorithms.PPO` (the same trainer, token-level ratios, chunk-level GAE) on
the embedded env without rendering: training instances 0..n_envs-1, the reach/lift/carry shaping
and success bonus of the skills configs. Held-out greedy success (seeds 100000+) before and after,
as `bc_clonability.py` measures it.

    python benchmarks/proxy_rl.py --task pick_and_place --rl-steps 150000 --lr 1e-4 --temperature 1.0

`--clone PATH` reuses a clone saved by an earlier run (`--save-clone PATH`); `--temperature` is the
rollout sampling temperature (also the one PPO's log-probs are taken at), `--warmup` PPO's
`lr_warmup_steps`, `--critic-warmup` its `critic_warmup_updates`, `--desired-kl` its `desired_kl`;
`--algo grpo` trains with `algorithms.GRPO` instead (groups of `--group-size` envs from one seeded
start, no critic); `--start SEED [SEED ...]` trains only on those starts (instance and placement; e.g.
seeds the clone fails on), env i always on one, and reports their greedy episodes at each evaluation. Prints one
line per evaluation and writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("MUJOCO_GL", "egl")

import bc_clonability as B  # noqa: E402  (imports torch before any GL context)
import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from gymnasium import spaces  # noqa: E402
from stable_baselines3.common.logger import KVWriter, Logger  # noqa: E402
from stable_baselines3.common.policies import BasePolicy  # noqa: E402

from vla_policies.openvla_oft.action_tokenizer import ActionTokenDistribution  # noqa: E402


class StateObservation(gym.ObservationWrapper):
    """The clone's input (proprio, the task's yaws and points in the robot frame), standardised."""

    def __init__(self, env: gym.Env, mu: np.ndarray, sd: np.ndarray):
        super().__init__(env)
        self.mu, self.sd = mu.astype(np.float32), sd.astype(np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (len(mu),), np.float32)
        self.probe = None  # built at the first reset (the task's state is bound then)

    def reset(self, **kwargs):
        from behavior_gym.experts import make_expert

        obs, info = self.env.reset(**kwargs)
        if self.probe is None:
            self.probe = B._Probe(self.env, make_expert(self.env))
        return self.observation(obs), info

    def observation(self, obs) -> np.ndarray:
        y, p = self.probe.features()
        x = np.concatenate([obs["proprio"], y, p]).astype(np.float32)
        return (x - self.mu) / self.sd


class FixedStart(gym.Wrapper):
    """Every reset from one seed (`--start`): the same placement each episode, whatever seed is asked for."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self.start = int(seed)

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=self.start, options=options)


def make_env(task: str, instance_id: int, mu: np.ndarray, sd: np.ndarray, shaping: float = 1.0,
             start: int | None = None):
    def factory():
        from stable_baselines3.common.monitor import Monitor

        import behavior_gym  # noqa: F401  (registers the env)
        from behavior_gym.wrappers import ActionChunkWrapper
        from behavior_gym.wrappers.shaping import ManipulationShaping

        env = gym.make("Behavior-R1Pro-v0", task=task, instance_id=instance_id, obs_every=10**9, image_size=16,
                       success_bonus=1.0)
        env = ManipulationShaping(env, shaping) if shaping > 0 else env
        env = FixedStart(env, start) if start is not None else env
        return Monitor(ActionChunkWrapper(StateObservation(env, mu, sd), chunk=B.K), info_keywords=("success_once",))
    return factory


class StateTokenPolicy(BasePolicy):
    """The clone as an SB3 policy with OpenVLA-OFT's interface: per-token categorical actions over 256
    bins (tokens -> normalised actions -> env actions with the clone's q01/q99 statistics), per-token
    log-probs at `temperature`, and a value head on the same input."""

    def __init__(self, observation_space, action_space, lr_schedule, use_sde: bool = False, clone: dict | None = None,
                 temperature: float = 1.0, top_k: int = 0, dtype: torch.dtype = torch.float32, **kwargs):
        super().__init__(observation_space, action_space, normalize_images=False, **kwargs)
        self.net = copy.deepcopy(clone["model"]).train()
        self.norm, self.tok = clone["norm"], clone["tok"]
        self.temperature, self.top_k = float(temperature), int(top_k)
        # OFT's own action-token distribution: bins that decode to one value share its probability, and
        # dimensions whose demonstrations never varied (q01 == q99) carry no choice.
        self.collapsed = self.norm.collapsed_dims(self.tok)
        n_in = observation_space.shape[0]
        self.value_head = torch.nn.Sequential(torch.nn.Linear(n_in, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1))
        self.to(dtype)  # bfloat16: as the VLA's runner builds its policy
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _dist(self, obs):
        x = obs.to(self.value_head[0].weight.dtype)
        logits = self.net(x)
        collapsed = self.collapsed.repeat(logits.shape[-2] // len(self.collapsed))
        return ActionTokenDistribution(logits, self.temperature, self.top_k, collapsed), self.value_head(x).float()

    def _to_actions(self, bins: torch.Tensor) -> torch.Tensor:
        return self.norm.unnormalize(self.tok.decode_bins(bins.reshape(len(bins), -1))).float()

    def _to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        return self.tok.encode_bins(self.norm.normalize(actions.float())).long().view(len(actions), -1)

    def forward(self, obs, deterministic: bool = False, per_token: bool = False):
        dist, values = self._dist(obs)
        bins = dist.mode() if deterministic else dist.sample()
        log_prob = dist.log_prob(bins)
        return self._to_actions(bins), values, log_prob if per_token else log_prob.sum(-1)

    def evaluate_actions(self, obs, actions, per_token: bool = False):
        dist, values = self._dist(obs)
        log_prob, entropy = dist.log_prob(self._to_bins(actions)), dist.entropy()
        if not per_token:
            log_prob, entropy = log_prob.sum(-1), entropy.sum(-1)
        return values, log_prob, entropy

    def predict_values(self, obs):
        return self._dist(obs)[1]

    def _predict(self, observation, deterministic: bool = False):
        return self.forward(observation, deterministic)[0]


class LastValues(KVWriter):
    """Keeps the scalar metrics of the last logger dump (PPO dumps one per update)."""

    def __init__(self):
        self.values: dict[str, float] = {}

    def write(self, key_values, key_excluded, step=0):
        self.values = {k: float(v) for k, v in key_values.items() if np.isscalar(v)}


def evaluate(pool, task: str, clone: dict, model: torch.nn.Module, episodes: int, tmp: str,
             decodes: tuple[str, ...] = ("greedy",)) -> dict:
    """Held-out episodes of `model` (the clone's network) as `bc_clonability.py` runs them: greedy at the top
    level, every other `--decode` mode under "decodes"."""
    saved = {**clone, "model": copy.deepcopy(model).float().eval()}  # bf16 weights are exact in float32
    path = os.path.join(tmp, f"eval_{time.monotonic_ns()}.pt")
    torch.save(saved, path)
    result: dict = {"decodes": {}}
    for mode in dict.fromkeys(("greedy", *decodes)):
        sampling = B._sampling(mode)
        jobs = [(task, B.EVAL_SEED + s, "standoff", path, 0.0, B.K, *sampling) for s in range(episodes)]
        eps = list(pool.map(B._evaluate, jobs))
        summary = B._summary(clone, eps)  # success, reach and lift as bc_clonability counts them
        if mode == "greedy":
            result.update(summary, episodes=eps)
        else:
            result["decodes"][mode] = {**summary, "episodes": eps}
    return result


def _decodes_line(row: dict) -> str:
    return "".join(f"  {mode} {r['success']:.0%}" for mode, r in row["decodes"].items())


def main(argv=None) -> int:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from tempfile import TemporaryDirectory

    from stable_baselines3.common.vec_env import SubprocVecEnv

    from algorithms import GRPO, PPO

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="pick_and_place")
    ap.add_argument("--clone", default=None, help="a clone saved with --save-clone (else record and train one)")
    ap.add_argument("--save-clone", default=None)
    ap.add_argument("--demos", type=int, default=200)
    ap.add_argument("--clone-steps", type=int, default=2000)
    ap.add_argument("--sigma", type=float, default=0.0, help="clone on Gaussian-smoothed token targets of this many "
                    "bins (the VLA runs' train.label_sigma=2)")
    ap.add_argument("--rl-steps", type=int, default=150_000, help="env steps of RL")
    ap.add_argument("--n-envs", type=int, default=8,
                    help="training envs, one process each (instance i; GRPO: i // group size)")
    ap.add_argument("--n-steps", type=int, default=16, help="chunk steps per env per rollout")
    ap.add_argument("--start", type=int, nargs="+", default=None, help="training episodes only from these start "
                    "seeds (instance and placement; e.g. seeds the clone fails on), env i always from the i-th "
                    "(cycled; at most --n-envs seeds): can RL fix those starts, and does it carry over?")
    ap.add_argument("--algo", choices=("ppo", "grpo"), default="ppo")
    ap.add_argument("--group-size", type=int, default=4, help="GRPO: envs per group (a divisor of --n-envs)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--value-lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=0, help="PPO lr_warmup_steps")
    ap.add_argument("--desired-kl", type=float, default=None,
                    help="PPO/GRPO desired_kl: adapt the lr (at most --lr) to this per-token KL per update")
    ap.add_argument("--critic-warmup", type=int, default=0, help="PPO critic_warmup_updates (value head only)")
    ap.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature")
    ap.add_argument("--top-k", type=int, default=0, help="rollouts sample among the K most likely tokens (0: all); "
                    "PPO's log-probs are taken on the same top-k distribution")
    ap.add_argument("--eval-decode", nargs="+", default=[], type=B._decode_mode,
                    help="also evaluate these decodes at every point (sampled, sampled:T, sampled:T:K)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shaping", type=float, default=1.0)
    ap.add_argument("--episodes", type=int, default=100, help="held-out greedy episodes before and after")
    ap.add_argument("--evals", type=int, default=3, help="evaluations during RL (after the start)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--weights", choices=("fp32", "bf16"), default="fp32",
                    help="the dtype the policy is built in (bf16: as the VLA runner's policy)")
    ap.add_argument("--no-master-weights", action="store_true",
                    help="train in that dtype itself (PPO master_weights=False; the VLA runs 1-14 in bf16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/proxy_rl.json")
    a = ap.parse_args(argv)
    os.environ["BC_LAYOUT"] = "tabletop"
    ctx = get_context("forkserver")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers, mp_context=ctx) as pool, TemporaryDirectory() as tmp:
        if a.clone:
            clone = torch.load(a.clone, weights_only=False)
        else:
            demos = [d for d in pool.map(B._record, [(a.task, s, "standoff", 0.0, 0.0) for s in range(a.demos)],
                                         chunksize=4) if d is not None]
            clone = B.train(demos, 0.0, a.clone_steps, 128, seed=0, sigma=a.sigma)
            if a.save_clone:
                torch.save(clone, a.save_clone)
        print(f"clone ready ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows = [{"env_steps": 0, **evaluate(pool, a.task, clone, clone["model"], a.episodes, tmp, a.eval_decode)}]
        print(f"env steps {0:>7}  greedy success {rows[-1]['success']:.0%}  reach {rows[-1]['reached_5cm']:.0%}  "
              f"lift {rows[-1]['lifted_2cm']:.0%}" + _decodes_line(rows[-1]), flush=True)
        # GRPO's groups share one instance (the same objects), so that their seeded starts are identical.
        per_instance = a.group_size if a.algo == "grpo" else 1
        if a.start and (len(a.start) > a.n_envs or (a.algo == "grpo" and a.n_envs % (len(a.start) * a.group_size))):
            raise SystemExit(f"--start: {len(a.start)} seeds for {a.n_envs} envs; give at most --n-envs seeds (GRPO: "
                             "a number that, times --group-size, divides --n-envs)")
        # env i's start; GRPO's group members (consecutive envs) share one
        starts = [a.start[(i // per_instance) % len(a.start)] for i in range(a.n_envs)] if a.start else None
        venv = SubprocVecEnv([make_env(a.task, starts[i] if starts else i // per_instance, clone["mu"], clone["sd"],
                                       a.shaping, starts[i] if starts else None) for i in range(a.n_envs)],
                             start_method="forkserver")
        torch.set_num_threads(1)
        common = dict(learning_rate=a.lr, n_steps=a.n_steps, batch_size=a.batch, n_epochs=a.epochs, gamma=0.99,
                      clip_ratio_low=0.2, clip_ratio_high=0.28, max_grad_norm=1.0, lr_warmup_steps=a.warmup,
                      desired_kl=a.desired_kl,
                      master_weights=not a.no_master_weights, seed=a.seed, device="cpu",
                      policy_kwargs={"clone": clone, "temperature": a.temperature, "top_k": a.top_k,
                                     "dtype": torch.bfloat16 if a.weights == "bf16" else torch.float32})
        if a.algo == "grpo":
            model = GRPO(StateTokenPolicy, venv, group_size=a.group_size, **common)
        else:
            model = PPO(StateTokenPolicy, venv, value_lr=a.value_lr, gae_lambda=0.95, clip_range_vf=0.2, vf_coef=1.0,
                        value_loss_type="huber", critic_warmup_updates=a.critic_warmup, **common)
        last_update = LastValues()
        model.set_logger(Logger(None, [last_update]))  # our PPO dumps each update's metrics at the end of train()
        per_eval = a.rl_steps // B.K // max(a.evals, 1)
        log = []
        for k in range(a.evals):
            t1 = time.perf_counter()
            model.learn(per_eval, reset_num_timesteps=k == 0)
            steps = model.num_timesteps * B.K
            rows.append({"env_steps": steps, "seconds": time.perf_counter() - t1,
                         **evaluate(pool, a.task, clone, model.policy.net, a.episodes, tmp, a.eval_decode)})
            log.append({"env_steps": steps, "ep_success": [float(e.get("success_once", 0))
                                                            for e in model.ep_info_buffer]})
            rollout = float(np.mean(log[-1]["ep_success"])) if log[-1]["ep_success"] else float("nan")
            rows[-1]["rollout_success"] = rollout
            rows[-1]["train"] = dict(last_update.values)  # the last update's metrics
            if a.start:  # the greedy episode from each trained start
                path = os.path.join(tmp, f"start_{k}.pt")
                torch.save({**clone, "model": copy.deepcopy(model.policy.net).float().eval()}, path)
                rows[-1]["start_greedy"] = list(pool.map(B._evaluate, [(a.task, s, "standoff", path, 0.0, B.K, 0.0)
                                                                       for s in a.start]))
            print(f"env steps {steps:>7}  greedy success {rows[-1]['success']:.0%}  reach "
                  f"{rows[-1]['reached_5cm']:.0%}  lift {rows[-1]['lifted_2cm']:.0%}  rollout success (last "
                  f"{len(log[-1]['ep_success'])} episodes) {rollout:.0%}  ({rows[-1]['seconds']:.0f} s of RL)  "
                  + "  ".join(f"{k.split('/')[1]} {rows[-1]['train'].get(k, float('nan')):.3g}"
                              for k in ("actor/approx_kl", "actor/pg_clipfrac", "actor/entropy", "actor/lr"))
                  + _decodes_line(rows[-1])
                  + (f"  trained starts greedy {sum(e['success'] for e in rows[-1]['start_greedy'])}/{len(a.start)}"
                     if a.start else ""), flush=True)
        venv.close()
    out = {"args": vars(a), "clone_samples": clone["samples"], "evaluations": rows, "training_episodes": log}
    B.write_record(a.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
