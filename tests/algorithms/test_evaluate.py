"""`algorithms.evaluate`: success rate, q_score, episode length and return, per task, from final infos."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from algorithms import evaluate

GRIPPER = 14


def open_gripper(obs):
    """Always command the left gripper open: right exactly when the episode asks for open."""
    batched = np.asarray(obs["proprio"]).ndim == 2
    a = np.zeros((2, 8 * 23) if batched else (8 * 23,), dtype=np.float32)
    a[..., GRIPPER::23] = 1.0
    return a


def expected(toys, seeds):
    targets = []
    for s in seeds:
        env = toys.ToyBehaviorEnv()
        env.reset(seed=s)
        targets.append(env.target)
    return np.mean([t > 0 for t in targets])


def test_evaluate_reports_success_q_score_and_length(toys):
    env = toys.make_toy_env(monitor=False)
    stats = evaluate(open_gripper, env, episodes=12, seed=100)
    want = expected(toys, range(100, 112))
    assert 0 < want < 1  # both kinds of episode occur
    assert stats["episodes"] == 12
    assert stats["success_rate"] == pytest.approx(want)
    assert stats["q_score"] == pytest.approx(want)  # 1 when the gripper is right every step, else 0
    assert stats["episode_len"] == 24  # true length in env steps, not 3 chunks
    assert stats["return"] == pytest.approx(3.0 * want)
    assert set(stats["per_task"]) == {"toy_gripper"}
    assert stats["per_task"]["toy_gripper"]["success_rate"] == pytest.approx(want)
    assert len(stats["episode_records"]) == 12


def test_evaluate_per_task_and_vec_env(toys):
    def make(task):
        def fn():
            env = toys.make_toy_env(monitor=False)
            env.unwrapped.task = task
            return env
        return fn

    venv = DummyVecEnv([make("a"), make("b")])
    stats = evaluate(open_gripper, venv, episodes=10, seed=3)
    assert stats["episodes"] == 10
    assert set(stats["per_task"]) == {"a", "b"}
    assert sum(t["episodes"] for t in stats["per_task"].values()) == 10
    assert stats["per_task"]["a"]["episode_len"] == 24


def test_evaluate_sb3_model_and_env_without_success_info(toys):
    from algorithms import PPO

    model = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("CartPole-v1")]), n_steps=16, batch_size=16, seed=0,
                device="cpu", ratio_level="chunk")
    stats = evaluate(model, gym.make("CartPole-v1"), episodes=3, seed=0)
    assert stats["success_rate"] is None and stats["q_score"] is None
    assert stats["episode_len"] == pytest.approx(stats["return"])  # CartPole: reward 1 per step
    assert set(stats["per_task"]) == {"default"}
    with pytest.raises(ValueError):
        evaluate(model, gym.make("CartPole-v1"), episodes=0)


def _tiny_vla(image_size=32, chunk=2):
    import torch as th

    from tests.vla_policies.vla_helpers import chunked_action_space, observation_space
    from vla_policies import OpenVLAOFTPolicy
    from vla_policies.sb3_policy import make_lr_schedule

    th.manual_seed(0)
    return OpenVLAOFTPolicy(observation_space(image_size), chunked_action_space(chunk), make_lr_schedule(0.0),
                            preset="tiny", config_overrides={"image_sizes": [28, 28], "num_action_chunks": chunk})


def _count_fast_calls(monkeypatch):
    from vla_policies.openvla_oft import fast_inference as fi

    calls = []
    real = fi.FastInference.__call__

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fi.FastInference, "__call__", counted)
    return calls


def test_evaluate_with_fast_inference_gives_the_eager_results(monkeypatch):
    from tests.vla_policies.vla_helpers import TinyBehaviorEnv

    policy = _tiny_vla()
    env = TinyBehaviorEnv(chunk=2, image_size=32, episode_len=3)
    calls = _count_fast_calls(monkeypatch)
    eager = evaluate(policy, env, episodes=2, seed=0)  # default on a CPU: eager
    assert not calls and not policy.fast_inference
    fast = evaluate(policy, env, episodes=2, seed=0, fast_inference={"compile": False})
    assert len(calls) == 6  # every step of both episodes took the fast path ...
    assert not policy.fast_inference  # ... and the policy is eager again afterwards
    assert [r["return"] for r in fast["episode_records"]] == [r["return"] for r in eager["episode_records"]]
    # a policy whose fast inference is on keeps it (evaluate.py sets it up once for all modes)
    policy.enable_fast_inference(compile=False)
    evaluate(policy, env, episodes=1, seed=0, fast_inference=False)
    assert policy.fast_inference and len(calls) == 9


def test_fast_inference_by_default_on_cuda_only(monkeypatch, toys):
    import torch as th

    from algorithms import PPO
    from algorithms.evaluation import use_fast_inference
    from vla_policies import OpenVLAOFTPolicy

    policy = _tiny_vla()
    assert use_fast_inference(policy) is False and not policy.fast_inference  # a CPU policy: off
    asked = []
    monkeypatch.setattr(OpenVLAOFTPolicy, "device", property(lambda self: th.device("cuda")))
    monkeypatch.setattr(policy, "enable_fast_inference",
                        lambda **kw: asked.append(kw) or policy.model.enable_fast_inference(compile=False))
    assert use_fast_inference(policy) is True and asked == [{}]  # on CUDA: on, with the defaults
    policy.disable_fast_inference()
    assert use_fast_inference(policy, False) is False
    # SB3's own policies and plain callables have no fast path: left alone, refused when asked for
    model = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("CartPole-v1")]), n_steps=16, batch_size=16, seed=0,
                device="cpu", ratio_level="chunk")
    assert use_fast_inference(model) is False and use_fast_inference(open_gripper) is False
    with pytest.raises(TypeError, match="has no fast inference"):
        evaluate(open_gripper, toys.make_toy_env(monitor=False), episodes=1, fast_inference=True)
