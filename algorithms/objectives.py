"""The PPO and GRPO objectives as small pure functions (CleanRL style), each tested on hand-computed numbers.

Shapes: a batch has B samples (one sample = one action chunk of one env). Log-probs are either one per
sample ``[B]`` / ``[B, 1]`` (chunk level) or one per action token ``[B, T]`` (token level, T = K * 23 for
OpenVLA-OFT). Per-sample quantities (advantages, masks) broadcast over the token axis. Every mean is a
*masked* mean over all valid elements (RLinf's "token-mean"): a mask of 0 removes a sample, e.g. the
idle steps of a GRPO group member that waits for its group.
"""

from __future__ import annotations

import numpy as np
import torch


def _expand(x: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """Broadcast a per-sample tensor [B] onto `like` ([B] or [B, T, ...])."""
    if x is None:
        return None
    x = x.reshape(x.shape[0], *([1] * (like.dim() - 1)))
    return x.expand_as(like)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `x` over the elements where `mask` (per sample [B], broadcast over tokens) is non-zero.

    An all-zero mask gives 0 (not NaN), so an empty micro-batch adds nothing to a gradient.
    """
    if mask is None:
        return x.mean()
    m = _expand(mask.to(x.dtype), x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def aggregate_log_probs(log_prob: torch.Tensor, level: str, tokens_per_action: int = 23) -> torch.Tensor:
    """Sum per-token log-probs [B, T] to the ratio level: ``"token"`` keeps [B, T]; ``"action"`` sums the
    `tokens_per_action` tokens of each step of the chunk, [B, T / tokens_per_action]; ``"chunk"`` sums
    all of them, [B, 1]. (RLinf's `logprob_type` token_level / action_level / chunk_level.)"""
    if log_prob.dim() == 1:
        log_prob = log_prob[:, None]
    if level == "token":
        return log_prob
    if level == "chunk":
        return log_prob.sum(-1, keepdim=True)
    if level == "action":
        b, t = log_prob.shape
        if t % tokens_per_action:
            raise ValueError(f"action-level ratios need a multiple of {tokens_per_action} tokens, got {t}")
        return log_prob.reshape(b, t // tokens_per_action, tokens_per_action).sum(-1)
    raise ValueError(f"ratio level must be 'token', 'action' or 'chunk', got {level!r}")


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over [n_steps, n_envs] arrays (one step = one action chunk).

    `episode_starts[t]` marks that the observation of step t began a new episode (SB3's convention);
    `last_values` / `last_dones` describe the observation after the last step. Recursion:
    ``delta_t = r_t + gamma * V_{t+1} * (1 - done_{t+1}) - V_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_{t+1}) * A_{t+1}``; returns are ``A + V`` (TD(lambda)).

    Returns (advantages, returns), both float32 [n_steps, n_envs].
    """
    rewards = np.asarray(rewards, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    n_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    last_gae = np.zeros_like(rewards[0])
    for t in reversed(range(n_steps)):
        if t == n_steps - 1:
            next_non_terminal = 1.0 - np.asarray(last_dones, dtype=np.float32)
            next_values = np.asarray(last_values, dtype=np.float32).reshape(rewards[0].shape)
        else:
            next_non_terminal = 1.0 - np.asarray(episode_starts[t + 1], dtype=np.float32)
            next_values = values[t + 1]
        delta = rewards[t] + gamma * next_values * next_non_terminal - values[t]
        last_gae = delta + gamma * gae_lambda * next_non_terminal * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def grpo_advantages(returns: np.ndarray, normalize_std: bool = True, eps: float = 1e-6) -> np.ndarray:
    """GRPO advantages of a [n_groups, G] array of trajectory returns: each return minus its group's mean,
    divided by the group's standard deviation (+ eps) when `normalize_std`. The std is the sample std
    (ddof=1, `torch.std`'s default), as in verl and RLinf.

    A group whose returns are all equal gets zero advantages (nothing to learn from it).
    """
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 2 or returns.shape[1] < 2:
        raise ValueError(f"returns must be [n_groups, group_size >= 2], got shape {returns.shape}")
    adv = returns - returns.mean(axis=1, keepdims=True)
    if normalize_std:
        adv = adv / (returns.std(axis=1, ddof=1, keepdims=True) + eps)
    return adv.astype(np.float32)


def group_filter_mask(success: np.ndarray) -> np.ndarray:
    """Which groups to keep when filtering: False for groups whose members all succeeded or all failed
    ([n_groups, G] booleans -> [n_groups] booleans), as SimpleVLA-RL's accuracy filter."""
    success = np.asarray(success, dtype=bool)
    return success.any(axis=1) & ~success.all(axis=1)


def normalize(x: torch.Tensor | np.ndarray, mask=None, eps: float = 1e-8):
    """(x - mean) / (std + eps) over the valid entries (numpy or torch); invalid entries are left at 0."""
    is_np = isinstance(x, np.ndarray)
    xt = torch.as_tensor(x, dtype=torch.float64)
    m = torch.ones_like(xt) if mask is None else torch.as_tensor(mask, dtype=torch.float64)
    n = m.sum().clamp_min(1.0)
    mean = (xt * m).sum() / n
    var = (((xt - mean) * m) ** 2).sum() / (n - 1).clamp_min(1.0)
    out = ((xt - mean) / (var.sqrt() + eps)) * m
    return out.numpy().astype(np.float32) if is_np else out.to(torch.as_tensor(x).dtype)


def clipped_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
    mask: torch.Tensor | None = None,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate with an asymmetric clip range (DAPO / RLinf `clip_ratio_low/high`).

    ``ratio = exp(log_prob - old_log_prob)``;
    ``loss = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))``, masked mean over samples
    (and tokens, for [B, T] log-probs; the per-sample advantage is shared by the sample's tokens).
    With `dual_clip` = c > 1 the loss of negative-advantage samples is also capped at ``-c * A``.

    Returns (loss, clip fraction): the fraction of elements where the clipped term is the larger one,
    i.e. where clipping removed the gradient (verl's `pg_clipfrac`).
    """
    adv = _expand(advantages.to(log_prob.dtype), log_prob)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)
    clipfrac = masked_mean((clipped > unclipped).to(log_prob.dtype), mask)
    return masked_mean(loss, mask), clipfrac.detach()


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range_vf: float | None,
    mask: torch.Tensor | None = None,
    loss_type: str = "mse",
    huber_delta: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value loss with PPO's value clipping (all tensors [B]).

    ``V_clip = V_old + clip(V - V_old, -eps, +eps)``; per sample ``max(l(R - V), l(R - V_clip))`` with
    ``l`` the squared error (``"mse"``) or the Huber loss with `huber_delta` (``"huber"``, RLinf's choice).
    Without clipping (`clip_range_vf` None) it is ``l(R - V)``.

    Returns (loss, clip ratio): the fraction of samples whose prediction moved more than eps from
    the old value (where clipping is active; 0 without clipping).
    """
    values, old_values, returns = values.reshape(-1), old_values.reshape(-1), returns.reshape(-1)

    def elementwise(err: torch.Tensor) -> torch.Tensor:
        if loss_type == "mse":
            return err.pow(2)
        if loss_type == "huber":
            return torch.nn.functional.huber_loss(err, torch.zeros_like(err), reduction="none", delta=huber_delta)
        raise ValueError(f"value loss type must be 'mse' or 'huber', got {loss_type!r}")

    loss = elementwise(returns - values)
    if clip_range_vf is None:
        return masked_mean(loss, mask), torch.zeros((), device=values.device)
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
    loss = torch.maximum(loss, elementwise(returns - v_clipped))
    clip_ratio = masked_mean(((values - old_values).abs() > clip_range_vf).to(values.dtype), mask)
    return masked_mean(loss, mask), clip_ratio.detach()


def entropy_loss(entropy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The entropy bonus as a loss: minus the masked mean entropy (per token or per chunk)."""
    return -masked_mean(entropy, mask)


#: A log-prob at or below this is a token's that the policy cannot draw: outside its top-k (about -1e30).
UNDRAWABLE_LOG_PROB = -1e20


def _drawable_mask(log_prob: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    m = (log_prob > UNDRAWABLE_LOG_PROB).to(log_prob.dtype)
    return m if mask is None else m * _expand(mask.to(log_prob.dtype), log_prob)


@torch.no_grad()
def approx_kl(log_prob: torch.Tensor, old_log_prob: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Schulman's k3 estimator of KL(old || new): mean of ``(ratio - 1) - log(ratio)`` (>= 0), as SB3, over
    the valid elements the new policy can still draw.

    With top-k sampling an update can push a stored token out of the new top k; its term is infinite (its
    log-prob about -1e30), so it is left out here and counted by `undrawable_fraction` instead.
    """
    m = _drawable_mask(log_prob, mask)
    log_ratio = (log_prob - old_log_prob) * m  # 0 where undrawable: no inf - inf
    return ((torch.exp(log_ratio) - 1.0 - log_ratio) * m).sum() / m.sum().clamp_min(1.0)


@torch.no_grad()
def undrawable_fraction(log_prob: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of the valid elements (tokens, or chunks at chunk level) whose stored token the new policy can
    no longer draw (outside its top-k); 0 without top-k."""
    return masked_mean((log_prob <= UNDRAWABLE_LOG_PROB).to(log_prob.dtype), mask)
