"""The objectives on numbers worked out by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer

from algorithms.objectives import (
    aggregate_log_probs,
    approx_kl,
    clipped_policy_loss,
    clipped_value_loss,
    compute_gae,
    entropy_loss,
    group_filter_mask,
    grpo_advantages,
    masked_mean,
    normalize,
    undrawable_fraction,
)


def t(x):
    return th.tensor(x, dtype=th.float64)


def test_masked_mean_per_sample_and_per_token():
    assert masked_mean(t([1, 2, 3, 4]), t([1, 0, 1, 0])).item() == pytest.approx(2.0)  # (1 + 3) / 2
    assert masked_mean(t([[1, 2], [3, 4]]), t([1, 0])).item() == pytest.approx(1.5)  # tokens of sample 0
    assert masked_mean(t([1, 2]), t([0, 0])).item() == 0.0  # empty: 0, not NaN
    assert masked_mean(t([1, 2, 3])).item() == pytest.approx(2.0)


def test_gae_by_hand():
    # one env, three chunk steps; an episode ends after step 1 (step 2 starts a new one)
    rewards = np.array([[1.0], [0.0], [2.0]])
    values = np.array([[0.5], [1.0], [0.0]])
    starts = np.array([[1.0], [0.0], [1.0]])
    adv, ret = compute_gae(rewards, values, starts, last_values=np.array([3.0]), last_dones=np.array([0.0]),
                           gamma=0.9, gae_lambda=0.8)
    # t=2: delta = 2 + 0.9*3 - 0 = 4.7 ; A = 4.7
    # t=1: next is a new episode: delta = 0 - 1 = -1 ; A = -1
    # t=0: delta = 1 + 0.9*1 - 0.5 = 1.4 ; A = 1.4 + 0.9*0.8*(-1) = 0.68
    np.testing.assert_allclose(adv[:, 0], [0.68, -1.0, 4.7], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [1.18, 0.0, 4.7], rtol=1e-6)
    # terminal last step: no bootstrap from last_values
    adv, _ = compute_gae(rewards[2:], values[2:], starts[2:], np.array([3.0]), np.array([1.0]), 0.9, 0.8)
    assert adv[0, 0] == pytest.approx(2.0)


def test_gae_matches_sb3():
    rng = np.random.default_rng(0)
    n_steps, n_envs = 7, 3
    buf = RolloutBuffer(n_steps, spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)), gamma=0.97, gae_lambda=0.9,
                        n_envs=n_envs)
    buf.rewards[:] = rng.normal(size=(n_steps, n_envs))
    buf.values[:] = rng.normal(size=(n_steps, n_envs))
    buf.episode_starts[:] = rng.random((n_steps, n_envs)) < 0.3
    last, dones = rng.normal(size=n_envs).astype(np.float32), rng.random(n_envs) < 0.5
    buf.compute_returns_and_advantage(th.as_tensor(last), dones)
    adv, ret = compute_gae(buf.rewards, buf.values, buf.episode_starts, last, dones, 0.97, 0.9)
    np.testing.assert_allclose(adv, buf.advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, buf.returns, rtol=1e-5, atol=1e-6)


def test_grpo_advantages_by_hand():
    returns = np.array([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # group 0: mean 0.5 -> [0.5, -0.5, -0.5, 0.5]; sample std = sqrt(4 * 0.25 / 3) = 0.57735
    np.testing.assert_allclose(grpo_advantages(returns, normalize_std=False)[0], [0.5, -0.5, -0.5, 0.5])
    s = 0.5 / math.sqrt(1 / 3)
    np.testing.assert_allclose(grpo_advantages(returns)[0], [s, -s, -s, s], rtol=1e-5)
    np.testing.assert_allclose(grpo_advantages(returns)[1], 0.0)  # all equal: nothing to learn
    with pytest.raises(ValueError):
        grpo_advantages(np.array([1.0, 2.0]))


def test_group_filter_mask():
    success = np.array([[True, True], [False, False], [True, False]])
    assert group_filter_mask(success).tolist() == [False, False, True]


def test_clipped_policy_loss_asymmetric_by_hand():
    ratio = t([1.5, 0.5, 1.1, 0.7])
    adv = t([1.0, 1.0, -1.0, -1.0])
    log_prob = th.log(ratio).requires_grad_(True)
    old = th.zeros(4, dtype=th.float64)
    # clip range [0.8, 1.28]; per sample max(-A r, -A clip(r)):
    # s0: max(-1.5, -1.28) = -1.28 (clipped)   s1: max(-0.5, -0.8) = -0.5
    # s2: max(1.1, 1.1) = 1.1                  s3: max(0.7, 0.8) = 0.8 (clipped)
    loss, clipfrac = clipped_policy_loss(log_prob, old, adv, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 1.1 + 0.8) / 4)
    assert clipfrac.item() == pytest.approx(0.5)
    loss.backward()
    # d/dlogp of -A r = -A r: s1 -> -0.5/4, s2 -> 1.1/4; clipped samples have no gradient
    np.testing.assert_allclose(log_prob.grad.numpy(), [0.0, -0.125, 0.275, 0.0], atol=1e-12)

    # symmetric 0.2 clips s0 at 1.2 instead
    loss_sym, _ = clipped_policy_loss(th.log(ratio), old, adv, 0.2, 0.2)
    assert loss_sym.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8) / 4)

    # masked: s2 left out
    loss_m, frac_m = clipped_policy_loss(th.log(ratio), old, adv, 0.2, 0.28, mask=t([1, 1, 0, 1]))
    assert loss_m.item() == pytest.approx((-1.28 - 0.5 + 0.8) / 3)
    assert frac_m.item() == pytest.approx(2 / 3)


def test_clipped_policy_loss_token_level_and_dual_clip():
    # two samples x two tokens, the sample's advantage shared by its tokens
    ratio = t([[1.5, 1.0], [0.7, 1.0]])
    loss, clipfrac = clipped_policy_loss(th.log(ratio), th.zeros(2, 2, dtype=th.float64), t([1.0, -1.0]), 0.2, 0.28)
    # tokens: -1.28, -1.0 | 0.8, 1.0
    assert loss.item() == pytest.approx((-1.28 - 1.0 + 0.8 + 1.0) / 4)
    assert clipfrac.item() == pytest.approx(0.5)
    # dual clip: A = -1, ratio 5 -> max(5, 1.28) = 5, capped at c * |A| = 3
    loss, _ = clipped_policy_loss(th.log(t([5.0])), t([0.0]), t([-1.0]), 0.2, 0.28, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0)
    loss, _ = clipped_policy_loss(th.log(t([5.0])), t([0.0]), t([-1.0]), 0.2, 0.28)
    assert loss.item() == pytest.approx(5.0)


def test_clipped_value_loss_by_hand():
    values, old, returns = t([1.0, 2.0, 0.0]), t([0.5, 2.0, 0.5]), t([2.0, 1.0, 0.0])
    # clip 0.2: V_clip = [0.7, 2.0, 0.3]
    # s0: max((2-1)^2, (2-0.7)^2) = 1.69   s1: 1   s2: max(0, 0.09) = 0.09 ; clipping active in s0, s2
    loss, ratio = clipped_value_loss(values, old, returns, 0.2)
    assert loss.item() == pytest.approx((1.69 + 1.0 + 0.09) / 3)
    assert ratio.item() == pytest.approx(2 / 3)
    loss, ratio = clipped_value_loss(values, old, returns, None)
    assert loss.item() == pytest.approx(2 / 3) and ratio.item() == 0.0
    # Huber, delta 1: s0 max(0.5, 1.3 - 0.5 = 0.8) = 0.8 ; s1 0.5 ; s2 max(0, 0.5 * 0.09) = 0.045
    loss, _ = clipped_value_loss(values, old, returns, 0.2, loss_type="huber", huber_delta=1.0)
    assert loss.item() == pytest.approx((0.8 + 0.5 + 0.045) / 3)
    loss, _ = clipped_value_loss(values, old, returns, 0.2, mask=t([1, 0, 0]))
    assert loss.item() == pytest.approx(1.69)


def test_approx_kl_entropy_aggregate_normalize():
    # log ratio = [log 2, 0]: k3 = (2 - 1 - log 2) + 0, mean over 2
    kl = approx_kl(t([math.log(2.0), 0.0]), t([0.0, 0.0]))
    assert kl.item() == pytest.approx((1 - math.log(2.0)) / 2)
    assert entropy_loss(t([[1, 2], [3, 4]]), t([0, 1])).item() == pytest.approx(-3.5)
    # a token outside the new top-k (log-prob ~ -1e30) leaves the KL mean and is counted on its own
    new, old = t([[-1e30, math.log(2.0)], [0.0, 0.0]]), t([[-1.0, 0.0], [0.0, -5.0]])
    kl = approx_kl(new, old, mask=t([1, 0]))
    assert kl.item() == pytest.approx(1 - math.log(2.0))  # the one drawable valid token
    assert undrawable_fraction(new, mask=t([1, 0])).item() == pytest.approx(0.5)
    assert undrawable_fraction(new).item() == pytest.approx(0.25)

    lp = th.arange(46, dtype=th.float64)[None]
    assert aggregate_log_probs(lp, "chunk").item() == pytest.approx(sum(range(46)))
    np.testing.assert_allclose(aggregate_log_probs(lp, "action", 23).numpy(), [[sum(range(23)), sum(range(23, 46))]])
    assert aggregate_log_probs(lp, "token").shape == (1, 46)
    assert aggregate_log_probs(t([1.0, 2.0]), "chunk").shape == (2, 1)
    with pytest.raises(ValueError):
        aggregate_log_probs(lp, "action", 5)

    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0], dtype=np.float32)
    out = normalize(x, mask=np.array([1, 1, 1, 1, 0]))
    # mean 2.5, sample std sqrt(5/3) = 1.290994 over the four valid entries; the masked one -> 0
    np.testing.assert_allclose(out, [-1.161895, -0.387298, 0.387298, 1.161895, 0.0], rtol=1e-5)
