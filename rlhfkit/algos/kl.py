"""KL divergence to the reference policy: estimators, the KL-penalised reward, controllers.

RLHF keeps the policy pi close to the frozen reference pi_ref by subtracting
``kl_coef * KL(pi || pi_ref)`` from the reward (Ziegler et al. 2019, "Fine-Tuning
Language Models from Human Preferences"). Per token, KL is estimated from the log-probs
of the sampled tokens (Schulman 2020, "Approximating KL Divergence",
http://joschu.net/blog/kl-approx.html), or computed exactly from the full logits.
"""

from __future__ import annotations

import torch


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log pi(y) - log pi_ref(y). Unbiased for KL(pi || pi_ref), high variance, can be < 0.

    Shapes: (B, T), (B, T) -> (B, T). TRL 0.11.4 ``kl_penalty="kl"``.
    """
    return logprobs - ref_logprobs


def kl_abs(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """|k1| = |log pi(y) - log pi_ref(y)|. Biased, never negative.

    Shapes: (B, T), (B, T) -> (B, T). TRL 0.11.4 ``kl_penalty="abs"``.
    """
    return (logprobs - ref_logprobs).abs()


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (log pi(y) - log pi_ref(y))**2. Low variance, biased (Schulman 2020).

    Shapes: (B, T), (B, T) -> (B, T). TRL 0.11.4 ``kl_penalty="mse"``.
    """
    return 0.5 * (logprobs - ref_logprobs).square()


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = r - 1 - log r with log r = log pi_ref(y) - log pi(y). Unbiased and >= 0.

        k3 = exp(ref - logp) - 1 - (ref - logp)

    Shapes: (B, T), (B, T) -> (B, T). Schulman 2020; used by GRPO (Shao et al. 2024).
    """
    log_ratio = ref_logprobs - logprobs  # (B, T)
    # expm1 keeps precision when the ratio is near 1, where exp(x) - 1 cancels.
    return torch.expm1(log_ratio) - log_ratio  # (B, T)


# kl_penalty(kind=...) dispatch; "kl", "abs", "mse" are TRL 0.11.4's names.
KL_ESTIMATORS = {"kl": kl_k1, "k1": kl_k1, "abs": kl_abs, "mse": kl_k2, "k2": kl_k2, "k3": kl_k3}


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """Per-token KL estimate chosen by name from ``KL_ESTIMATORS``.

    Shapes: (B, T), (B, T) -> (B, T). ``kind="full"`` needs logits: use ``kl_full``.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(
            f"unknown KL penalty {kind!r}; valid: {sorted(KL_ESTIMATORS)} "
            "(or 'full', computed from logits with kl_full)"
        )
    return KL_ESTIMATORS[kind](logprobs, ref_logprobs)


def kl_full(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || pi_ref) over the vocabulary at each position.

        KL_t = sum_v p(v) * (log p(v) - log p_ref(v)),   p = softmax(logits_t)

    Shapes: logits (B, T, V), ref_logits (B, T, V) -> (B, T) float32.
    Equals TRL 0.11.4 ``kl_penalty="full"``:
    ``F.kl_div(ref_logp, logp, log_target=True, reduction="none").sum(-1)``.
    """
    # at least float32: bf16 log-probs are too coarse for a difference of near-equal values
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logp = torch.log_softmax(logits.to(dtype), dim=-1)  # (B, T, V)
    ref_logp = torch.log_softmax(ref_logits.to(dtype), dim=-1)  # (B, T, V)
    return (logp.exp() * (logp - ref_logp)).sum(-1)  # (B, T)


def kl_penalized_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: the KL penalty everywhere, the sequence score on the last token.

        non_score_t = -kl_coef * kl_t * mask_t
        reward_t    = non_score_t + score * [t is the last position with mask_t = 1]

    Shapes: scores (B,), kl (B, T), mask (B, T) -> (rewards (B, T), non_score (B, T)).
    Source: TRL 0.11.4 ``PPOTrainer.compute_rewards`` (Ziegler et al. 2019). TRL leaves
    non-score rewards unmasked and masks rewards before GAE, so valid positions agree.
    """
    valid = mask.bool()  # (B, T)
    non_score = -kl_coef * kl * mask  # (B, T)
    # the last valid token: its running count of valid tokens reaches the row total
    counts = valid.long().cumsum(-1)  # (B, T)
    last = valid & (counts == counts[:, -1:])  # (B, T)
    # where() rather than score * last: a NaN/inf score must not leak onto other tokens.
    rewards = torch.where(last, non_score + scores.unsqueeze(-1), non_score)  # (B, T)
    return rewards, non_score


class FixedKLController:
    """A constant KL coefficient ``value``; ``update`` does nothing."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current: float, n_steps: int) -> None:
        """No-op (same interface as AdaptiveKLController)."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController:
    """Proportional controller steering the observed KL towards ``target``.

        e      = clip(current / target - 1, -0.2, 0.2)
        value *= 1 + e * n_steps / horizon

    ``current`` is the observed KL (a plain float), ``n_steps`` the number of samples
    (the batch size) since the last update. Plain Python floats: Python-side state.
    Source: Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"
    (section 2.2); TRL 0.11.4 ``trl.trainer.utils.AdaptiveKLController``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current: float, n_steps: int) -> None:
        proportional_error = min(max(current / self.target - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]
