"""Divergences between a student's and a teacher's next-token distributions, for knowledge distillation.

The generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024, "On-Policy Distillation of
Language Models: Learning from Self-Generated Mistakes", arXiv:2306.13649, eq. 4) at one position,
with teacher distribution P = softmax(teacher_logits / tau) and student Q = softmax(student_logits / tau):

    M        = beta * P + (1 - beta) * Q
    JSD_beta = beta * KL(P || M) + (1 - beta) * KL(Q || M)

JSD_beta tends to 0 at both ends of [0, 1] (M becomes Q or P), while its gradient, divided by beta or
1 - beta, tends to that of forward or reverse KL. As in TRL's ``generalized_jsd_loss`` the ends are
therefore the KL divergences themselves:

    beta = 0   forward KL(P || Q) = sum_v P_v (log P_v - log Q_v)    (mode covering, supervised KD)
    beta = 1   reverse KL(Q || P) = sum_v Q_v (log Q_v - log P_v)    (mode seeking)
"""

from __future__ import annotations

import math

import torch

from .logprobs import _upcast

DISTILL_REDUCTIONS = ("mean", "sum", "none")


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    x = _upcast(logits)  # (B, T, V) at least float32
    if temperature != 1.0:
        x = x / temperature
    return torch.log_softmax(x, dim=-1)  # (B, T, V)


def token_divergence(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """JSD_beta (forward KL at 0, reverse KL at 1) at each position, from log-probabilities.

    Shapes: (..., V), (..., V) -> (...). The mixture M is formed in log space,
    ``log M = logaddexp(log P + log beta, log Q + log(1 - beta))``, so it never underflows.
    """
    s, t = student_logprobs, teacher_logprobs
    if beta == 0.0:
        return (t.exp() * (t - s)).sum(-1)  # KL(teacher || student)
    if beta == 1.0:
        return (s.exp() * (s - t)).sum(-1)  # KL(student || teacher)
    mixture = torch.logaddexp(t + math.log(beta), s + math.log(1.0 - beta))  # (..., V) log M
    return beta * (t.exp() * (t - mixture)).sum(-1) + (1.0 - beta) * (s.exp() * (s - mixture)).sum(-1)


def generalized_jsd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         mask: torch.Tensor | None = None, beta: float = 0.5, temperature: float = 1.0,
                         reduction: str = "mean") -> tuple[torch.Tensor, dict]:
    """GKD's per-token generalised JSD between student and teacher (see the module docstring).

        d_t  = JSD_beta(softmax(teacher_logits_t / tau), softmax(student_logits_t / tau))
        loss = sum_t mask_t d_t / sum_t mask_t       ("mean": over the real tokens of the batch)
               sum_t mask_t d_t                      ("sum")
               mask_t d_t                            ("none": (B, T))

    Shapes: student_logits (B, T, V), teacher_logits (B, T, V) with the same vocabulary,
    mask (B, T) (1 on the tokens scored; None: all). Gradients flow into ``student_logits`` only:
    the teacher's logits are detached. Each side's log-softmax is taken once (float32 at least);
    the mixture is the one further (B, T, V) tensor, and only for 0 < beta < 1. Logits must be
    finite. Metrics (detached): ``divergence_mean`` (the token mean), ``divergence_max`` (the
    largest d_t of a real token) and ``num_tokens``.
    Source: Agarwal et al. 2024 (arXiv:2306.13649), eq. 4; TRL's ``GKDTrainer.generalized_jsd_loss``
    (same ends at beta = 0 and 1, same token mean).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} differ; distillation needs the same positions and the same "
                         "vocabulary (a teacher that shares the student's tokenizer)")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if reduction not in DISTILL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(DISTILL_REDUCTIONS)}, got {reduction!r}")
    student = _log_probs(student_logits, temperature)  # (B, T, V)
    teacher = _log_probs(teacher_logits.detach(), temperature)  # (B, T, V)
    per_token = token_divergence(student, teacher, beta)  # (B, T)
    mask = torch.ones_like(per_token) if mask is None else mask.to(per_token.dtype)  # (B, T)
    per_token = per_token * mask  # (B, T)
    n = mask.sum()
    total = per_token.sum()
    mean = total / n.clamp_min(1)
    with torch.no_grad():
        real = per_token.detach().masked_fill(mask == 0, float("-inf"))  # (B, T)
        top = real.max() if real.numel() else real.new_zeros(())
        metrics = {"divergence_mean": mean.detach(), "num_tokens": n.detach(),
                   "divergence_max": torch.where(n > 0, top, torch.zeros_like(top))}  # no real token: 0
    loss = {"mean": mean, "sum": total, "none": per_token}[reduction]
    return loss, metrics
