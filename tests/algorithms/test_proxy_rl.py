"""benchmarks/proxy_rl.py: the state clone as an SB3 policy with OFT's interface, trained by our PPO."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))


def test_state_token_policy_round_trips_its_tokens_and_trains_with_ppo(tmp_path):
    import bc_clonability as B
    import proxy_rl as P
    from stable_baselines3.common.vec_env import DummyVecEnv

    from algorithms import PPO

    demo = B._record(("pick_and_place", 0, "standoff", 0.0, 0.0))
    clone = B.train([demo], 0.0, steps=20, batch=32, seed=0)
    venv = DummyVecEnv([P.make_env("pick_and_place", 0, clone["mu"], clone["sd"])])
    model = PPO(P.StateTokenPolicy, venv, n_steps=4, batch_size=4, n_epochs=1, learning_rate=1e-4, seed=0,
                device="cpu", policy_kwargs={"clone": clone, "temperature": 0.5})
    obs = torch.as_tensor(venv.reset())
    assert obs.shape == (1, len(clone["mu"]))
    actions, _, log_prob = model.policy(obs, per_token=True)
    assert actions.shape == (1, B.K * 23) and log_prob.shape == (1, B.K * 23)
    # The tokens PPO re-scores are the ones sampled: actions -> bins -> the same log-probs.
    _, again, _ = model.policy.evaluate_actions(obs, actions, per_token=True)
    torch.testing.assert_close(again, log_prob)
    # Greedy actions are the clone's own.
    greedy = model.policy(obs, deterministic=True)[0]
    with torch.no_grad():
        bins = clone["model"](obs).argmax(-1)
    expected = clone["norm"].unnormalize(clone["tok"].decode_bins(bins.reshape(1, -1))).float()
    torch.testing.assert_close(greedy, expected)
    before = [p.detach().clone() for p in model.policy.net.parameters()]
    model.learn(8)
    assert model.num_timesteps >= 8 and model._n_updates >= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.net.parameters()))
    assert np.isfinite(model.logger.name_to_value.get("train/value_loss", 0.0))
    venv.close()


def test_top_k_rollouts_sample_among_the_k_best_tokens_and_ppo_stays_finite():
    """Rollouts at top_k=3 draw only the 3 most likely bins per token, and PPO trains on the same top-3
    distribution with finite metrics (a stored token pushed out of the new top 3 has log-prob ~ -1e30:
    approx_kl leaves it out and actor/undrawable_fraction counts it)."""
    import bc_clonability as B
    import proxy_rl as P
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv

    from algorithms import PPO

    demo = B._record(("pick_and_place", 0, "standoff", 0.0, 0.0))
    clone = B.train([demo], 0.0, steps=20, batch=32, seed=0)
    venv = DummyVecEnv([P.make_env("pick_and_place", 0, clone["mu"], clone["sd"])])
    model = PPO(P.StateTokenPolicy, venv, n_steps=8, batch_size=8, n_epochs=4, learning_rate=1e-3, seed=0,
                device="cpu", policy_kwargs={"clone": clone, "temperature": 1.0, "top_k": 3})
    last = P.LastValues()
    model.set_logger(Logger(None, [last]))
    obs = torch.as_tensor(venv.reset())
    with torch.no_grad():
        logits = model.policy.net(obs)
        actions = model.policy(obs)[0]
    top3 = logits.topk(3, -1).indices.reshape(1, -1, 3)
    bins = model.policy._to_bins(actions)
    # bins 0 and 1 decode to one value; the policy scores the value, so compare as values
    value = lambda b: (b - 1).clamp(min=0)  # noqa: E731
    assert (value(top3) == value(bins)[..., None]).any(-1).all()
    model.learn(16)
    kl = last.values["actor/approx_kl"]
    assert np.isfinite(kl) and 0 < kl < 100, kl
    assert 0 <= last.values["actor/undrawable_fraction"] < 0.5
    assert np.isfinite(last.values["actor/policy_loss"]) and last.values["actor/entropy"] <= np.log(3) + 1e-4
    model.policy.top_k = 0  # over all 256 bins every token stays drawable: the metric is not recorded
    model.learn(8, reset_num_timesteps=False)
    assert "actor/undrawable_fraction" not in last.values and "actor/approx_kl" in last.values
    venv.close()


def test_rft_rollout_records_the_tokens_it_acted_on_and_fine_tuning_fits_them(tmp_path):
    """benchmarks/proxy_rft.py: an episode's recorded (input, tokens) pairs are the clone's inputs and top-3
    draws, and fine-tuning a network on them raises their likelihood."""
    import bc_clonability as B
    import proxy_rft as R

    threads = torch.get_num_threads()
    demo = B._record(("pick_and_place", 0, "standoff", 0.0, 0.0))
    clone = B.train([demo], 0.0, steps=20, batch=32, seed=0, sigma=2.0)
    path = str(tmp_path / "clone.pt")
    torch.save(clone, path)
    try:
        ep = R._rollout(("pick_and_place", R.RFT_SEED, path, 1.0, 3))
    finally:
        torch.set_num_threads(threads)
    assert ep["x"].shape == (len(ep["bins"]), len(clone["mu"])) and ep["bins"].shape[1] == B.K * 23
    assert ep["bins"].dtype == np.uint8 and isinstance(ep["success"], bool)
    assert B.K * (len(ep["bins"]) - 1) < ep["steps"] <= B.K * len(ep["bins"])
    model = clone["model"]
    x, bins = torch.as_tensor(ep["x"]), torch.as_tensor(ep["bins"].astype(np.int64))
    with torch.no_grad():
        logits = model(x)
    # every recorded token is among its state's 3 most likely bins (ties at the top-3 boundary aside)
    third = logits.topk(3, -1).values[..., -1]
    assert (logits.gather(-1, bins[..., None])[..., 0] >= third - 1e-5).float().mean() > 0.99

    def nll(net):
        with torch.no_grad():
            return -torch.log_softmax(net(x), -1).gather(-1, bins[..., None]).mean().item()

    torch.manual_seed(0)
    fresh = B.Clone(len(clone["mu"]))  # an untrained network: the clone itself already fits its own draws
    before = nll(fresh)
    loss = R._finetune(fresh, ep["x"], ep["bins"], steps=30, lr=1e-3, batch=16, sigma=0.0, seed=0)
    assert nll(fresh) < before - 1.0 and np.isfinite(loss)


def test_fixed_start_resets_every_episode_to_the_same_placement():
    """proxy_rl.py --start: whatever seed a reset asks for, the episode starts from the one start."""
    import bc_clonability as B
    import proxy_rl as P

    demo = B._record(("pick_and_place", 0, "standoff", 0.0, 0.0))
    clone = B.train([demo], 0.0, steps=2, batch=8, seed=0)
    fixed = P.make_env("pick_and_place", 7, clone["mu"], clone["sd"], start=7)()
    free = P.make_env("pick_and_place", 7, clone["mu"], clone["sd"])()
    first = fixed.reset(seed=1)[0]
    np.testing.assert_array_equal(fixed.reset(seed=2)[0], first)
    np.testing.assert_array_equal(fixed.reset()[0], first)
    assert not np.array_equal(free.reset(seed=1)[0], free.reset(seed=2)[0])  # seeds do move the placement
    fixed.close()
    free.close()
