"""Rollout workers with fast inference (no Ray: the class itself) act like eager ones with the same weights,
before and after weight syncs, with and without LoRA, and with FP8 like a fresh FP8 copy of the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from algorithms.distributed.rollout_worker import RolloutWorker
from tests.vla_policies.vla_helpers import chunked_action_space, make_obs, observation_space
from vla_policies import OpenVLAOFTPolicy
from vla_policies.openvla_oft.fp8 import Float8Linear, fp8_unsupported_reason

th.set_num_threads(1)
CHUNK = 2
SPACES = (observation_space(32), chunked_action_space(CHUNK))
needs_cpu_fp8 = pytest.mark.skipif(fp8_unsupported_reason(th.device("cpu")) is not None,
                                   reason="this torch has no CPU float8 _scaled_mm")

FUSED_AND_FP8 = [{"compile": False}, pytest.param({"compile": False, "fp8": True}, marks=needs_cpu_fp8)]


def policy_kwargs(**kw):
    # tiny, 28-pixel images; intermediate_size 352 (a multiple of 16) so that FP8 takes the MLPs too
    overrides = {"image_sizes": [28, 28], "num_action_chunks": CHUNK,
                 "text_config": {**_tiny_text_config(), "intermediate_size": 352}}
    return {"preset": "tiny", "config_overrides": overrides, **kw}


def _tiny_text_config():
    from vla_policies import OpenVLAOFTConfig

    return dict(OpenVLAOFTConfig.from_preset("tiny").text_config)


def worker(fast=None, seed=0, **kw):
    th.manual_seed(seed)  # the same seed: the same random weights
    return RolloutWorker(OpenVLAOFTPolicy, *SPACES, policy_kwargs(**kw), token_level=True, fast_inference=fast)


OBS = [{k: v.numpy() for k, v in make_obs(3, seed=s, image_size=32).items()} for s in (1, 2)]


def act(w, obs, seed=7):
    th.manual_seed(seed)  # the same sampling noise for both workers
    return w.act(obs)


def greedy(w, obs):
    from stable_baselines3.common.utils import obs_as_tensor

    with th.no_grad():
        return w.policy(obs_as_tensor(obs, w.device), deterministic=True)[0].numpy()


def assert_same_actions(fast, eager, rtol=1e-4):
    for obs in OBS:
        np.testing.assert_array_equal(greedy(fast, obs), greedy(eager, obs))
        a, v, lp, _ = act(fast, obs)
        b, w, lq, _ = act(eager, obs)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(lp, lq, rtol=rtol, atol=1e-4)
        np.testing.assert_allclose(v, w, rtol=rtol, atol=1e-5)


def perturbed(state, names, seed, scale=0.05):
    g = th.Generator().manual_seed(seed)
    return {k: state[k] + scale * th.randn(state[k].shape, generator=g) for k in names}


def test_fast_worker_acts_like_an_eager_one_before_and_after_weight_syncs():
    eager, fast = worker(), worker(fast={"compile": False})
    fused = fast.policy.model._fast_inference
    assert fused is not None and not fused.cuda_graphs  # CPU: no graphs
    assert_same_actions(fast, eager)
    assert fused._fused.num_fused == 4  # q/k/v and gate/up of both Llama layers run fused
    copies = [w for pair in fused._fused.layers for f in pair for w in f[:1]]
    # a full sync (as the first one after random init) and a sync of some tensors, as after an update
    state = eager.policy.state_dict()
    for step, names in enumerate([list(state), [k for k in state if "layers.1." in k or "value_head" in k]]):
        new = perturbed(state, names, seed=step)
        for w in (eager, fast):
            assert w.load_weights(new, version=step) == step
        assert_same_actions(fast, eager)
    # the fused copies were refreshed in place (what a captured CUDA graph reads)
    assert fused._fused is not None and [w for pair in fused._fused.layers for f in pair for w in f[:1]][0] is copies[0]
    # and they are not stale copies of the first weights: the fast path does see the synced ones
    layer = fast.policy.model.language_model.model.layers[1].self_attn
    th.testing.assert_close(fused._fused.layers[1][0][0], th.cat([layer.q_proj.weight, layer.k_proj.weight,
                                                                   layer.v_proj.weight]))


def test_compiled_regions_in_a_worker():
    # aot_eager: Dynamo and AOTAutograd without code generation (seconds on a CPU)
    eager, fast = worker(), worker(fast={"compile": True, "backend": "aot_eager"})
    assert fast.policy.model._fast_inference.compile
    new = perturbed(eager.policy.state_dict(), [k for k in eager.policy.state_dict() if "language_model" in k], 3)
    for w in (eager, fast):
        w.load_weights(new, version=0)
    assert_same_actions(fast, eager)


@pytest.mark.parametrize("fast", FUSED_AND_FP8, ids=["fused", "fp8"])
def test_lora_adapter_syncs_give_the_eager_actions(fast):
    # the runner's LoRA (every linear layer wrapped): those layers stay unfused and unquantized, and the
    # synced adapters and value head act exactly as in an eager copy
    eager, fast_worker = worker(lora_rank=4), worker(fast=fast, lora_rank=4)
    model = fast_worker.policy.model
    assert model._fast_inference is not None
    assert not any(isinstance(m, Float8Linear) for m in model.modules())
    trainable = [n for n, p in eager.policy.named_parameters() if p.requires_grad]
    assert any(".lora_B." in n for n in trainable)
    for step in range(2):  # lora_B starts at 0: the first sync makes the adapters change the actions
        new = perturbed(eager.policy.state_dict(), trainable, seed=10 + step, scale=0.2)
        for w in (eager, fast_worker):
            w.load_weights(new, version=step)
        assert_same_actions(fast_worker, eager)
    if model._fast_inference._fused is not None:
        assert model._fast_inference._fused.num_fused == 0


@needs_cpu_fp8
def test_fp8_worker_requantizes_synced_weights():
    # after a sync an FP8 worker acts like an FP8 worker built from the synced weights, and close to eager
    eager, fp8 = worker(), worker(fast={"compile": False, "fp8": True})
    model = fp8.policy.model
    n_fp8 = sum(isinstance(m, Float8Linear) for m in model.modules())
    assert n_fp8 == 2 * 7  # every projection of both Llama layers
    state = eager.policy.state_dict()
    new = perturbed(state, [k for k in state if "language_model" in k], seed=5, scale=0.02)
    eager.load_weights(new, version=0)
    fp8.load_weights(new, version=0)
    fresh = worker(seed=1, fast=None)  # other random weights, then all of the synced ones
    fresh.load_weights({**state, **new}, version=0)
    fresh.policy.enable_fast_inference(compile=False, fp8=True)
    for obs in OBS:
        a, _, lp, _ = act(fp8, obs)
        b, _, lq, _ = act(fresh, obs)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(lp, lq, rtol=1e-5, atol=1e-5)
        _, _, le, _ = act(eager, obs)
        assert np.abs(lp - le).mean() < 0.1  # FP8 rounding: close to the eager log-probs, not equal


class LocalGroup:
    """`RolloutGroup`'s interface over one worker in this process (no Ray)."""

    def __init__(self, w: RolloutWorker):
        self.worker, self.version = w, -1

    def sync(self, policy, version):
        self.worker.load_weights({k: v.detach().clone() for k, v in policy.state_dict().items()}, version)
        self.version = version

    def act(self, obs):
        return tuple(th.from_numpy(x) for x in self.worker.act(obs)[:3])


@pytest.mark.parametrize("fast", FUSED_AND_FP8, ids=["fused", "fp8"])
def test_the_update_recomputes_what_a_fast_worker_acted(monkeypatch, fast):
    """A trainer acting through a fast-inference worker: the update's first ratios are 1 after the
    recomputation, and the gap metric shows how far the worker's log-probs were (FP8: clearly)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from algorithms import metrics as M
    from algorithms.distributed.pipeline import PipelinedPPO
    from tests.algorithms.recording import recorded
    from tests.algorithms.test_trainers import _first_ratios
    from tests.vla_policies.vla_helpers import TinyBehaviorEnv

    venv = DummyVecEnv([lambda: TinyBehaviorEnv(chunk=CHUNK, image_size=32) for _ in range(2)])
    th.manual_seed(0)
    model = PipelinedPPO(OpenVLAOFTPolicy, venv, n_steps=2, batch_size=4, micro_batch_size=2, n_epochs=1, seed=0,
                         device="cpu", policy_kwargs=policy_kwargs(), recompute_log_probs=True)
    model.rollout_group = LocalGroup(worker(fast=fast, seed=1))  # other weights until the first sync
    rec = recorded(model)
    seen = _first_ratios(monkeypatch)
    model.learn(2 * 2, log_interval=None)
    assert model.rollout_group.version == 0 and model._n_updates == 1
    assert seen[0].abs().max() < 1e-4
    gap = rec.values[M.ROLLOUT_LOG_PROB_GAP][-1]
    if fast.get("fp8"):
        assert gap > 1e-3, gap
    else:
        assert gap < 1e-4, gap  # fused projections: the eager forward up to float rounding


def test_the_rollout_benchmark_runs_on_a_cpu():
    """benchmarks/rollout_throughput.py --quick (tiny): every variant gets a row of numbers."""
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "rollout_throughput.py")
    out = subprocess.run([sys.executable, script, "--quick", "--batch", "2", "--rollout-steps", "1", "--repeats", "1",
                          "--warmup", "0", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()
            if line.split()[:1] in (["eager"], ["fast"], ["fast-fp8"])}
    assert set(rows) == {"eager", "fast", "fast-fp8"}, out.stdout  # fast-fp8 "skipped" without CPU FP8
    assert not any("FAILED" in r for r in rows.values()), out.stdout
    for variant in ("eager", "fast"):
        assert all(x != "-" for x in rows[variant][2:7] + rows[variant][-3:]), out.stdout  # times, gap
    assert rows["fast"][7] == "1.000"  # the greedy tokens are the eager worker's
