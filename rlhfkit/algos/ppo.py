"""PPO for language models: advantages (GAE), the clipped policy and value losses.

Token t of a response is an action; its state is the prompt plus tokens < t. Tensors are
(B, T) over the response grid with ``mask`` = 1 on real response tokens. Semantics
follow Hugging Face TRL 0.11.4 ``PPOTrainer.compute_advantages`` and ``PPOTrainer.loss``.
"""

from __future__ import annotations

import torch

from rlhfkit.algos.stats import masked_mean


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    last_values: torch.Tensor | None = None,
    dones: torch.Tensor | None = None,
    *,
    skip_masked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation.

        delta_t = r_t + gamma * (1 - d_t) * V_{t+1} - V_t   (V_T = last_values, or 0)
        A_t     = delta_t + gamma * lam * (1 - d_t) * A_{t+1}
        R_t     = A_t + V_t                              (value-function targets)

    Rewards and values are multiplied by ``mask`` first, so padding contributes nothing
    and the value after the last valid token of a right-padded row is 0 (episode end).
    Shapes: rewards, values, mask (B, T) -> (advantages (B, T), returns (B, T)), detached.
    Advantages are returned un-whitened; PPO whitens them with ``masked_whiten``.

    An LLM response is one episode per row, so ``last_values`` and ``dones`` stay None. A
    control rollout is a (envs, steps) window of several episodes: ``last_values`` (B,) is
    V(s_T) of the state after the window (bootstrap), ``dones`` (B, T) is 1 where the episode
    terminated at step t, which stops both the bootstrap and the advantage recursion there.
    Source: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
    Advantage Estimation"; TRL 0.11.4 ``PPOTrainer.compute_advantages`` (same loop); the done
    handling as in cleanrl's ``ppo.py`` (Huang et al. 2022, "The 37 Implementation Details of PPO").

    ``skip_masked=True`` (multi-turn episodes: the policy's turns with inserted tool results or
    observations between them) runs the recursion over each row's mask = 1 positions only.
    With p_1 < p_2 < ... < p_n the row's positions where ``mask`` is 1:

        delta_k = r_{p_k} + gamma * V_{p_{k+1}} - V_{p_k}       (V_{p_{n+1}} = last_values, or 0)
        A_{p_k} = delta_k + gamma * lam * A_{p_{k+1}}

    so an inserted span is skipped: it is neither discounted nor bootstrapped through, and the
    last policy token of a turn bootstraps from the value of the first policy token of the next
    turn. Rewards, values (and ``dones``) on masked positions are ignored, and the advantages and
    returns there are 0. For a right-padded mask (ones, then zeros) it is the plain recursion,
    bit for bit. Computed by moving each row's policy positions to the front (a stable sort),
    running the recursion above on that prefix, and scattering the result back.
    """
    if skip_masked:
        order = torch.sort((mask <= 0).to(torch.int8), dim=-1, stable=True).indices  # (B, T) policy first
        packed = gae(rewards.gather(-1, order), values.gather(-1, order), mask.gather(-1, order), gamma, lam,
                     last_values, dones.gather(-1, order) if dones is not None else None)
        return tuple(torch.zeros_like(p).scatter(-1, order, p) for p in packed)  # (B, T) each
    values = values.detach() * mask  # (B, T)
    rewards = rewards.detach() * mask  # (B, T)
    T = rewards.shape[-1]
    bootstrap = last_values.detach() if last_values is not None else 0.0  # (B,) or scalar
    lastgaelam = 0.0
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else bootstrap  # (B,)
        if dones is None:
            delta = rewards[:, t] + gamma * nextvalues - values[:, t]  # (B,)
            lastgaelam = delta + gamma * lam * lastgaelam  # (B,)
        else:
            nonterminal = 1.0 - dones[:, t].to(values.dtype)  # (B,)
            delta = rewards[:, t] + gamma * nonterminal * nextvalues - values[:, t]  # (B,)
            lastgaelam = delta + gamma * lam * nonterminal * lastgaelam  # (B,)
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)  # (B, T)
    returns = advantages + values  # (B, T)
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate objective (as a loss to minimise), optionally dual-clipped.

        ratio = exp(logp - old_logp)
        l_t   = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))
        l_t   = min(l_t, -A * c)   where A < 0                 # dual clip, c > 1
        loss  = masked_mean(l_t, mask)

    Shapes: logprobs, old_logprobs, advantages, mask (B, T) -> loss (), metrics.
    Metrics (detached): clipfrac, approxkl = 0.5 * mean((logp - old)**2),
    policykl = mean(old - logp), ratio_mean, dual_clipfrac (0 when off), ratio (B, T).
    Source: Schulman et al. 2017, "Proximal Policy Optimization Algorithms"; TRL 0.11.4
    ``PPOTrainer.loss``. Dual clip: Ye et al. 2020, "Mastering Complex Control in MOBA
    Games with Deep Reinforcement Learning" (bounds the loss when A < 0 and ratio >> 1).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    log_ratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg_losses = -advantages * ratio  # (B, T)
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)  # (B, T)
    per_token = torch.max(pg_losses, pg_losses2)  # (B, T)

    dual_clipfrac = torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    if dual_clip is not None:
        pg_losses3 = -advantages * dual_clip  # (B, T)
        negative = advantages < 0  # (B, T)
        dual_clipfrac = masked_mean((negative & (per_token > pg_losses3)).float(), mask)
        per_token = torch.where(negative, torch.min(per_token, pg_losses3), per_token)  # (B, T)

    loss = masked_mean(per_token, mask)
    metrics = {
        "clipfrac": masked_mean(torch.gt(pg_losses2, pg_losses).float(), mask).detach(),
        "approxkl": (0.5 * masked_mean(log_ratio**2, mask)).detach(),
        "policykl": masked_mean(old_logprobs - logprobs, mask).detach(),
        "ratio_mean": masked_mean(ratio, mask).detach(),
        "dual_clipfrac": dual_clipfrac.detach(),
        "ratio": ratio.detach(),
    }
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value-function loss.

        v_clip = clip(V, V_old - eps_v, V_old + eps_v)
        loss   = 0.5 * masked_mean(max((V - R)**2, (v_clip - R)**2), mask)

    Shapes: values, old_values, returns, mask (B, T) -> loss (), metrics.
    Metrics (detached): clipfrac (share of tokens where the clipped error is larger),
    error = masked_mean((V - R)**2), vpred = masked_mean(V).
    Source: TRL 0.11.4 ``PPOTrainer.loss`` (from OpenAI baselines ppo2); value clipping is
    detail 9 of Huang et al. 2022, "The 37 Implementation Details of PPO".
    """
    # torch.max/min with tensor bounds (TRL's clip_by_value); clamp wants scalar bounds on older torch
    vpredclipped = torch.max(
        torch.min(values, old_values + cliprange_value), old_values - cliprange_value
    )  # (B, T)
    vf_losses1 = (values - returns) ** 2  # (B, T)
    vf_losses2 = (vpredclipped - returns) ** 2  # (B, T)
    loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    metrics = {
        "clipfrac": masked_mean(torch.gt(vf_losses2, vf_losses1).float(), mask).detach(),
        "error": masked_mean((values - returns) ** 2, mask).detach(),
        "vpred": masked_mean(values, mask).detach(),
    }
    return loss, metrics


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, coef: float) -> torch.Tensor:
    """Entropy bonus as a loss term: -coef * masked_mean(entropy, mask).

    Shapes: entropy, mask (B, T) -> (). Minimising it raises the policy's entropy
    (Mnih et al. 2016, "Asynchronous Methods for Deep RL"; Schulman et al. 2017, eq. 9).
    """
    return -coef * masked_mean(entropy, mask)
