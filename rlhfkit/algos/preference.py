"""Pairwise preference losses on scalar rewards."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       margin: torch.Tensor | None = None,
                       weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Bradley–Terry negative log-likelihood of the preferences, optionally with a margin.

        loss = sum_i w_i * -log sigmoid(r_c,i - r_r,i - m_i) / sum_i w_i

    Shapes: chosen_rewards, rejected_rewards, margin, weight all (B,) -> loss ().
    ``margin`` (default 0) asks the chosen reward to win by at least that much (Llama 2,
    Touvron et al. 2023, eq. 2); ``weight`` (default 1) lets noisy pairs count less.
    Source: Bradley & Terry 1952; Ouyang et al. 2022 (InstructGPT), eq. 1.
    Metrics (detached): accuracy (r_c > r_r), margin (mean r_c - r_r), chosen, rejected (means).
    """
    diff = chosen_rewards - rejected_rewards  # (B,)
    logits = diff - margin if margin is not None else diff
    losses = -F.logsigmoid(logits)  # (B,)
    if weight is None:
        loss = losses.mean()
    else:
        weight = weight.to(losses.dtype)
        loss = (losses * weight).sum() / weight.sum().clamp_min(torch.finfo(losses.dtype).tiny)
    metrics = {
        "accuracy": (diff > 0).float().mean().detach(),
        "margin": diff.mean().detach(),
        "chosen": chosen_rewards.mean().detach(),
        "rejected": rejected_rewards.mean().detach(),
    }
    return loss, metrics
