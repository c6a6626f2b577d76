"""Everything between the language model's action logits and the environment's actions.

OpenVLA discretises each normalised action value in [-1, 1] into 256 bins and writes bin `d`
(1..256, `np.digitize` against 256 edges) as the vocabulary id `vocab_end - d`, i.e. the last 256
ids below the padding region (31744..31999 for Llama-2's 32000-token vocabulary). Decoding maps an
id to one of the 255 bin centres; ids `vocab_end - 256` and `vocab_end - 255` both decode to the
top centre (reference: OpenVLA/OFT `prismatic/vla/action_tokenizer.py`).

Three pieces live here:

- `ActionTokenizer`: normalised actions <-> token ids <-> bin indices (0..255, `id - token_begin`).
- `ActionNormalizer`: normalised actions <-> environment actions with a checkpoint's `norm_stats`
  (BOUNDS_Q99: q01/q99, or BOUNDS: min/max; a mask leaves some dimensions un-normalised).
- `ActionTokenDistribution`: the categorical distribution over the 256 bins at every action
  position, with temperature and top-k, used for sampling, log-probs and entropy.

An environment action is a *value*, and two tokens can decode to the same value (the top bin, and
every bin of a dimension whose range is empty). So that a stored action can be re-scored exactly
(PPO ratios must be 1 before the first update), log-probs and entropies are those of the decoded
values: the probability of a value is the total probability of the tokens that decode to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Normalisation schemes of OpenVLA-OFT (`prismatic/vla/constants.py`): which statistics bound the range.
NORMALIZATION_BOUNDS = {"bounds_q99": ("q01", "q99"), "bounds": ("min", "max")}
_EPS = 1e-8  # OFT adds it to the range in both directions
# Logit given to tokens outside the top-k. Finite (unlike transformers' -inf) so that merged-bin
# log-probs and entropies have finite gradients; exp() of it is exactly 0 in float32.
FILTERED_LOGIT = -1e30


class ActionTokenizer:
    """Maps normalised actions in [-1, 1] to the last `n_bins` vocabulary ids below `vocab_end` and back.

    Args:
        n_bins: number of action tokens (256 in every released OpenVLA checkpoint).
        vocab_end: first id after the action tokens: the tokenizer's base vocabulary size, i.e.
            the language model's vocabulary minus its padding region (32064 - 64 = 32000).
        min_action, max_action: the normalised range that the bins cover.
    """

    def __init__(self, n_bins: int = 256, vocab_end: int = 32000, min_action: float = -1.0, max_action: float = 1.0):
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {n_bins}")
        if vocab_end < n_bins:
            raise ValueError(f"vocab_end ({vocab_end}) must be at least n_bins ({n_bins}): the action tokens "
                             "are the last n_bins ids of the base vocabulary")
        self.n_bins = n_bins
        self.vocab_end = vocab_end
        self.token_begin = vocab_end - n_bins
        self.min_action, self.max_action = float(min_action), float(max_action)
        # float64, as the reference computes them with numpy; on the CPU even inside a meta-device build
        self.bins = torch.linspace(min_action, max_action, n_bins, dtype=torch.float64, device="cpu")
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2

    def __repr__(self) -> str:
        return f"ActionTokenizer(n_bins={self.n_bins}, token ids {self.token_begin}..{self.vocab_end - 1})"

    def encode(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised actions -> token ids (int64), as `vocab_end - np.digitize(clip(a), bins)`."""
        x = torch.as_tensor(normalized).to(torch.float64).clamp(self.min_action, self.max_action)
        # bucketize(right=True) returns i with bins[i-1] <= x < bins[i]: exactly np.digitize(x, bins)
        d = torch.bucketize(x, self.bins.to(x.device), right=True)
        return (self.vocab_end - d).long()

    def decode(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> normalised actions (float32 bin centres); out-of-range ids are clipped like the reference."""
        ids = torch.as_tensor(token_ids).long()
        idx = (self.vocab_end - ids - 1).clamp(0, self.n_bins - 2)
        return self.bin_centers.to(ids.device)[idx].float()

    def ids_to_bins(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> bin indices 0..n_bins-1 (the index into the action logits)."""
        ids = torch.as_tensor(token_ids).long()
        bad = (ids < self.token_begin) | (ids >= self.vocab_end)
        if bad.any():
            raise ValueError(f"token ids must lie in [{self.token_begin}, {self.vocab_end}) (the action tokens), "
                             f"got values such as {ids[bad].flatten()[:5].tolist()}")
        return ids - self.token_begin

    def bins_to_ids(self, bins: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(bins).long() + self.token_begin

    def encode_bins(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised actions -> bin indices 0..n_bins-1."""
        return self.encode(normalized) - self.token_begin

    def decode_bins(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin indices -> normalised actions."""
        return self.decode(self.bins_to_ids(bins))


class ActionNormalizer:
    """Maps normalised actions in [-1, 1] to environment actions and back, per action dimension.

    `unnormalize(a) = 0.5 * (a + 1) * (high - low + 1e-8) + low` where `mask`, else `a` unchanged
    (OpenVLA-OFT `_unnormalize_actions`); `normalize` is its inverse, clipped to [-1, 1].
    Inputs may be wider than the statistics (an action chunk): the statistics are tiled.

    Args:
        low, high: per-dimension bounds (e.g. q01 / q99).
        mask: which dimensions are normalised (default all).
        name: where the statistics came from, for messages.
    """

    def __init__(self, low: Any, high: Any, mask: Any = None, name: str = "action"):
        self.low = torch.as_tensor(np.asarray(low, dtype=np.float64), device="cpu")
        self.high = torch.as_tensor(np.asarray(high, dtype=np.float64), device="cpu")
        if self.low.ndim != 1 or self.low.shape != self.high.shape:
            raise ValueError(f"{name}: low and high must be 1-D of equal length, got {tuple(self.low.shape)} "
                             f"and {tuple(self.high.shape)}")
        m = np.ones(self.low.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if m.shape != tuple(self.low.shape):
            raise ValueError(f"{name}: mask has shape {m.shape}, expected {tuple(self.low.shape)}")
        self.mask = torch.as_tensor(m, device="cpu")
        self.name = name

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    def __repr__(self) -> str:
        return f"ActionNormalizer({self.name!r}, dim={self.dim})"

    @classmethod
    def from_norm_stats(
        cls,
        norm_stats: Mapping[str, Any] | None,
        unnorm_key: str | None = None,
        normalization: str = "bounds_q99",
        key: str = "action",
    ) -> ActionNormalizer:
        """Build from a checkpoint's `norm_stats` (`{dataset: {"action": {q01, q99, min, max, mask, ...}}}`).

        `unnorm_key` picks the dataset; it may be omitted when there is exactly one.
        """
        if not norm_stats:
            raise ValueError(
                "this model has no norm_stats (config.json `norm_stats` or dataset_statistics.json), so its "
                "normalised actions cannot be mapped to environment actions; pass norm_stats explicitly "
                "(e.g. OpenVLAOFTPolicy(norm_stats=...)) or let the policy use the action space bounds"
            )
        if unnorm_key is None:
            if len(norm_stats) != 1:
                raise ValueError(f"this model has statistics for {len(norm_stats)} datasets; pass unnorm_key, one of: "
                                 f"{sorted(norm_stats)}")
            unnorm_key = next(iter(norm_stats))
        if unnorm_key not in norm_stats:
            raise KeyError(f"unknown unnorm_key {unnorm_key!r}; the model's norm_stats have: {sorted(norm_stats)}")
        if normalization not in NORMALIZATION_BOUNDS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {sorted(NORMALIZATION_BOUNDS)}")
        stats = norm_stats[unnorm_key]
        if key not in stats:
            raise KeyError(f"norm_stats[{unnorm_key!r}] has no {key!r} statistics (has: {sorted(stats)})")
        stats = stats[key]
        lo_name, hi_name = NORMALIZATION_BOUNDS[normalization]
        missing = [k for k in (lo_name, hi_name) if k not in stats]
        if missing:
            raise KeyError(f"norm_stats[{unnorm_key!r}][{key!r}] lacks {missing} needed by normalization "
                           f"{normalization!r} (has: {sorted(stats)})")
        return cls(stats[lo_name], stats[hi_name], stats.get("mask"), name=f"{unnorm_key}/{key}")

    def _tiled(self, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if width % self.dim:
            raise ValueError(f"{self.name}: actions of width {width} are not a whole number of "
                             f"{self.dim}-D actions (the statistics' width)")
        reps = width // self.dim
        return (self.low.repeat(reps).to(device), self.high.repeat(reps).to(device), self.mask.repeat(reps).to(device))

    def unnormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        """[..., k*dim] normalised actions -> environment actions (float32)."""
        a = torch.as_tensor(normalized)
        low, high, mask = self._tiled(a.shape[-1], a.device)
        x = a.to(torch.float64)
        out = torch.where(mask, 0.5 * (x + 1) * (high - low + _EPS) + low, x)
        return out.float()

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """[..., k*dim] environment actions -> normalised actions in [-1, 1] (float64, for exact binning)."""
        a = torch.as_tensor(actions)
        low, high, mask = self._tiled(a.shape[-1], a.device)
        x = a.to(torch.float64)
        out = torch.where(mask, 2 * (x - low) / (high - low + _EPS) - 1, x)
        return out.clamp(-1.0, 1.0)

    def collapsed_dims(self, tokenizer: ActionTokenizer) -> torch.Tensor:
        """Bool [dim]: dimensions whose environment action does not tell the bins apart.

        True where the range is so narrow that, in float32 (what rollout buffers store), decoding and
        re-encoding the bin centres does not give them back — e.g. q01 == q99. Every token of such a
        dimension yields the same action, so the action carries no choice: log-prob 0, entropy 0.
        """
        canon = torch.arange(1, tokenizer.n_bins, device="cpu")  # one canonical bin per centre (bin 0 aliases bin 1)
        normalized = tokenizer.decode_bins(canon)[:, None].expand(-1, self.dim)
        env = self.unnormalize(normalized)  # float32
        back = tokenizer.encode_bins(self.normalize(env))
        return (back != canon[:, None]).any(dim=0)


class ActionTokenDistribution:
    """Categorical distributions over the `n_bins` action tokens at each action position.

    Args:
        logits: [..., N, n_bins] raw action logits; index j is the token `token_begin + j`.
        temperature: divides the logits (> 0).
        top_k: keep the k largest logits per position (ties kept, as transformers' TopKLogitsWarper);
            0 or >= n_bins keeps all. Filtered tokens get probability 0 and log-prob about -1e30.
        collapsed: optional bool [N]: positions whose action value does not depend on the token
            (see `ActionNormalizer.collapsed_dims`); their log-prob and entropy are 0.

    Sampling and `mode` return bin indices j. `log_prob` and `entropy` are those of the decoded action
    value: bins 0 and 1 decode to the same value, so their probabilities are added.
    """

    def __init__(self, logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                 collapsed: torch.Tensor | None = None):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; use deterministic=True for greedy actions")
        self.raw_logits = logits
        n_bins = logits.shape[-1]
        x = logits.float() / temperature
        if 0 < top_k < n_bins:
            kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
            x = x.masked_fill(x < kth, FILTERED_LOGIT)
        self.logits = x
        self.token_log_probs = F.log_softmax(x, dim=-1)
        lp = self.token_log_probs
        # value-level distribution: bins 0 and 1 share the top bin centre
        self.value_log_probs = torch.cat([torch.logaddexp(lp[..., :1], lp[..., 1:2]), lp[..., 2:]], dim=-1)
        self.collapsed = None if collapsed is None else collapsed.to(logits.device, torch.bool)

    @staticmethod
    def value_index(bins: torch.Tensor) -> torch.Tensor:
        """Bin index -> index of its decoded value (bins 0 and 1 -> 0)."""
        return (bins - 1).clamp(min=0)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = self.logits.softmax(dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])

    def mode(self) -> torch.Tensor:
        """Greedy bins: argmax of the logits (temperature and top-k do not change it)."""
        return self.raw_logits.argmax(dim=-1)

    def _zero_collapsed(self, x: torch.Tensor) -> torch.Tensor:
        if self.collapsed is None:
            return x
        return x.masked_fill(self.collapsed, 0.0)

    def log_prob(self, bins: torch.Tensor) -> torch.Tensor:
        """Per-position log-probability [..., N] of the action values that `bins` decode to."""
        idx = self.value_index(bins.long().to(self.logits.device))
        lp = self.value_log_probs.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        return self._zero_collapsed(lp)

    def entropy(self) -> torch.Tensor:
        """Per-position entropy [..., N] of the action-value distribution."""
        lp = self.value_log_probs
        ent = -(lp.exp() * lp).sum(-1)  # filtered values: exp() == 0 exactly, so they add 0
        return self._zero_collapsed(ent)


def sampling_mode(mode: str, temperature: float = 1.0, top_k: int = 0) -> tuple[float, int] | None:
    """The (temperature, top_k) a decoding mode samples action tokens at; None for greedy (argmax).

    Modes: ``greedy``; ``sampled`` (the given `temperature` and `top_k`); ``sampled:T`` (temperature T over
    every token); ``sampled:T:K`` (temperature T among the K most likely tokens of each position, as
    `rollout.sampling_params.top_k` samples). A bad mode raises ValueError naming the forms.
    """
    if mode == "greedy":
        return None
    if mode == "sampled":
        return float(temperature), int(top_k)
    name, *rest = mode.split(":")
    try:
        t = float(rest[0]) if 1 <= len(rest) <= 2 else float("nan")
        k = int(rest[1]) if len(rest) == 2 else 0
    except ValueError:
        t, k = float("nan"), 0
    if name != "sampled" or not t > 0 or k < 0 or (len(rest) == 2 and k == 0):
        raise ValueError(f"unknown mode {mode!r}; choose from greedy, sampled, sampled:T with a temperature T > 0 "
                         "(e.g. sampled:0.5), or sampled:T:K to sample among the K most likely tokens "
                         "(e.g. sampled:1:3)")
    return t, k
