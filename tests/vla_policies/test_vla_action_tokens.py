"""Action tokens, normalisation and the token distribution against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vla_policies import ActionNormalizer, ActionTokenDistribution, ActionTokenizer


def reference_encode(actions: np.ndarray, vocab_end: int = 32000, n_bins: int = 256) -> np.ndarray:
    # OpenVLA's ActionTokenizer, as in prismatic/vla/action_tokenizer.py
    bins = np.linspace(-1, 1, n_bins)
    return vocab_end - np.digitize(np.clip(actions, -1, 1), bins)


def reference_decode(ids: np.ndarray, vocab_end: int = 32000, n_bins: int = 256) -> np.ndarray:
    bins = np.linspace(-1, 1, n_bins)
    centers = (bins[:-1] + bins[1:]) / 2
    return centers[np.clip(vocab_end - ids - 1, 0, n_bins - 2)]


def test_token_ids_are_the_last_256_below_the_pad_region():
    tok = ActionTokenizer(256, vocab_end=32000)
    assert (tok.token_begin, tok.vocab_end) == (31744, 32000)
    ids = tok.encode(torch.tensor([-1.0, 1.0, 0.0]))
    assert ids.tolist() == [31999, 31744, int(reference_encode(np.array([0.0]))[0])]


def test_encode_decode_match_the_reference():
    tok = ActionTokenizer(256, vocab_end=32000)
    rng = np.random.default_rng(0)
    edges = np.linspace(-1, 1, 256)
    x = np.concatenate([rng.uniform(-1.5, 1.5, 2000), edges, [-1.0, 1.0, 0.0]]).astype(np.float32)
    np.testing.assert_array_equal(tok.encode(torch.from_numpy(x)).numpy(), reference_encode(x))
    ids = np.arange(31700, 32050)
    np.testing.assert_allclose(tok.decode(torch.from_numpy(ids)).numpy(), reference_decode(ids), atol=1e-7)
    # ids 31744 and 31745 decode to the same (top) bin centre
    assert tok.decode(torch.tensor([31744]))[0] == tok.decode(torch.tensor([31745]))[0]


def test_normalizer_matches_oft_formula_and_tiles_over_the_chunk():
    low, high = np.array([-2.0, 0.0, 5.0]), np.array([2.0, 1.0, 5.0])
    mask = np.array([True, True, False])
    norm = ActionNormalizer(low, high, mask)
    a = torch.tensor([[-1.0, 0.5, 0.3, 1.0, -0.5, -0.2]])  # two 3-D steps
    out = norm.unnormalize(a).numpy()
    lo, hi, m = np.tile(low, 2), np.tile(high, 2), np.tile(mask, 2)
    expected = np.where(m, 0.5 * (a.numpy() + 1) * (hi - lo + 1e-8) + lo, a.numpy())
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(norm.normalize(torch.from_numpy(out)).numpy(), a.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="not a whole number"):
        norm.unnormalize(torch.zeros(1, 4))


def test_round_trip_through_environment_actions_is_exact_for_every_token():
    tok = ActionTokenizer(256, vocab_end=32000)
    rng = np.random.default_rng(1)
    low = rng.uniform(-4, 0, 23)
    norm = ActionNormalizer(low, low + rng.uniform(0.05, 6, 23))
    ids = torch.arange(31745, 32000)[:, None].expand(-1, 23)  # every canonical token in every dimension
    env = norm.unnormalize(tok.decode(ids))  # float32, what a rollout buffer stores
    back = tok.encode(norm.normalize(env))
    assert torch.equal(back, ids)
    assert not norm.collapsed_dims(tok).any()


def test_collapsed_dimensions_are_detected():
    tok = ActionTokenizer()
    norm = ActionNormalizer([0.0, 0.3, -1.0], [1.0, 0.3, 1.0])  # q01 == q99 in dim 1
    assert norm.collapsed_dims(tok).tolist() == [False, True, False]


def test_norm_stats_lookup_and_errors():
    stats = {"a": {"action": {"q01": [0, 0], "q99": [1, 2], "min": [-1, -1], "max": [3, 3], "mask": [True, False]}},
             "b": {"action": {"q01": [0, 0], "q99": [1, 1]}}}
    n = ActionNormalizer.from_norm_stats(stats, "a")
    assert n.high.tolist() == [1, 2] and n.mask.tolist() == [True, False]
    assert ActionNormalizer.from_norm_stats(stats, "a", "bounds").high.tolist() == [3, 3]
    with pytest.raises(KeyError) as e:
        ActionNormalizer.from_norm_stats(stats, "libero_spatial")
    assert "'libero_spatial'" in str(e.value) and "['a', 'b']" in str(e.value)
    with pytest.raises(ValueError, match=r"pass unnorm_key, one of: \['a', 'b'\]"):
        ActionNormalizer.from_norm_stats(stats)
    assert ActionNormalizer.from_norm_stats({"only": stats["b"]}).name == "only/action"
    with pytest.raises(ValueError, match="no norm_stats"):
        ActionNormalizer.from_norm_stats({}, "a")


def _direct(logits: torch.Tensor, temperature: float, top_k: int):
    """Log-probs / entropy of action *values* computed from scratch, bin by bin."""
    x = logits.double() / temperature
    if top_k:
        kth = x.topk(top_k, -1).values[..., -1:]
        x = torch.where(x < kth, torch.full_like(x, -torch.inf), x)
    p = x.softmax(-1)
    pv = torch.cat([p[..., :1] + p[..., 1:2], p[..., 2:]], -1)  # bins 0 and 1 are one value
    ent = -(pv * torch.where(pv > 0, pv.log(), torch.zeros_like(pv))).sum(-1)
    return p, pv, ent


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.6, 0), (1.6, 50), (1.0, 5)])
def test_log_prob_and_entropy_match_direct_computation(temperature, top_k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 256, generator=g) * 3
    dist = ActionTokenDistribution(logits, temperature, top_k)
    bins = dist.sample(generator=g)
    p, pv, ent = _direct(logits, temperature, top_k)
    vidx = (bins - 1).clamp(min=0)
    expected = pv.gather(-1, vidx[..., None]).squeeze(-1).log()
    torch.testing.assert_close(dist.log_prob(bins).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dist.entropy().double(), ent, rtol=1e-5, atol=1e-5)
    # for bins >= 2 the value log-prob is the token log-prob: log_softmax(logits / T)[bin]
    tok_lp = F.log_softmax(logits / temperature, -1).gather(-1, bins[..., None]).squeeze(-1)
    if top_k == 0:
        sel = bins >= 2
        torch.testing.assert_close(dist.log_prob(bins)[sel], tok_lp[sel], rtol=1e-5, atol=1e-5)


def test_greedy_is_argmax_and_top_k_one_samples_it():
    logits = torch.randn(4, 10, 256)
    dist = ActionTokenDistribution(logits, temperature=0.7, top_k=1)
    assert torch.equal(dist.mode(), logits.argmax(-1))
    assert torch.equal(dist.sample(), logits.argmax(-1))


def test_temperature_and_top_k_shape_the_samples():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 256, generator=g).expand(2000, 1, 256)
    top5 = set(logits[0, 0].topk(5).indices.tolist())
    samples = ActionTokenDistribution(logits, top_k=5).sample(generator=g)
    assert set(samples.unique().tolist()) <= top5
    cold = ActionTokenDistribution(logits, temperature=0.1)
    hot = ActionTokenDistribution(logits, temperature=5.0)
    assert cold.entropy().mean() < ActionTokenDistribution(logits).entropy().mean() < hot.entropy().mean()
    # empirical frequencies follow softmax(logits / T)
    probs = (logits[0, 0] / 2.0).softmax(-1)
    counts = torch.bincount(ActionTokenDistribution(logits, 2.0).sample(generator=g).flatten(), minlength=256)
    top = probs.argmax()
    assert abs(counts[top].item() / 2000 - probs[top].item()) < 0.05
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ActionTokenDistribution(logits, temperature=0.0)


def test_gradients_stay_finite_with_top_k():
    logits = torch.randn(2, 5, 256, requires_grad=True)
    dist = ActionTokenDistribution(logits, 1.0, top_k=3)
    bins = dist.sample()
    (dist.log_prob(bins).sum() + dist.entropy().sum()).backward()
    assert torch.isfinite(logits.grad).all()


def test_collapsed_positions_have_zero_log_prob_and_entropy():
    logits = torch.randn(2, 4, 256)
    collapsed = torch.tensor([False, True, False, True])
    dist = ActionTokenDistribution(logits, collapsed=collapsed)
    bins = dist.sample()
    assert torch.all(dist.log_prob(bins)[:, collapsed] == 0)
    assert torch.all(dist.entropy()[:, collapsed] == 0)
    assert torch.all(dist.log_prob(bins)[:, ~collapsed] < 0)
