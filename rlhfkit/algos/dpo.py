"""Direct preference losses: DPO and its relatives (IPO, hinge/SLiC, robust DPO, SimPO, ORPO).

Every loss takes SEQUENCE log-probs, shape (B,): log pi(y|x) of each chosen / rejected
completion, summed or averaged over its completion tokens upstream (the functions do not
know which; ``LENGTH_NORMALISED`` says which losses expect averages). Each returns

    (losses (B,), chosen_rewards (B,), rejected_rewards (B,))

with per-pair losses (the trainer takes the mean) and detached implicit rewards for
logging: ``beta * (logps - ref_logps)`` for the reference-based losses, ``beta * logps``
for SimPO and ORPO. With the log-ratios h_c = c - ref_c and h_r = r - ref_r, the
reference-based losses share the logits

    z = h_c - h_r = (c - r) - (ref_c - ref_r)

Reference for equality: Hugging Face TRL 1.16.0 (``DPOTrainer._compute_loss``,
``trl.experimental.cpo.CPOTrainer.cpo_loss``, ``trl.experimental.orpo.ORPOTrainer.
odds_ratio_loss``); ``tests/algos/test_dpo.py`` checks every loss against values TRL
computed (``tests/fixtures/make_trl116_dpo_reference.py``). Where TRL 1.16 differs from
the papers or from older TRL, the docstring says so.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

_LN2 = math.log(2.0)


def _check_beta(beta: float, name: str = "beta") -> None:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not (0 < beta < math.inf):
        raise ValueError(f"{name} must be a positive finite number, got {beta!r}")


def _check_label_smoothing(label_smoothing: float, loss: str) -> None:
    ok = isinstance(label_smoothing, numbers.Real) and not isinstance(label_smoothing, bool)
    if not ok or not (0.0 <= label_smoothing < 0.5):
        raise ValueError(
            f"{loss}: label_smoothing is the probability that a preference label is flipped and must lie "
            f"in [0, 0.5), got {label_smoothing!r}"
        )


def _check_logps(**logps: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in logps.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"log-prob tensors must all have the same shape (B,), got {shapes}")


def _smoothed_sigmoid_loss(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-(1 - eps) * log sigmoid(z) - eps * log sigmoid(-z): the BCE of sigmoid(z) against 1 - eps."""
    return -F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing


def _log_ratios(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    _check_beta(beta)
    _check_logps(chosen_logps=chosen_logps, rejected_logps=rejected_logps,
                 ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    chosen_logratios = chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = rejected_logps - ref_rejected_logps  # (B,)
    return chosen_logratios, rejected_logratios


def dpo_sigmoid_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO, the logistic (Bradley–Terry) loss on implicit rewards, with conservative smoothing.

        z    = (c - ref_c) - (r - ref_r)
        loss = -(1 - eps) * log sigmoid(beta * z) - eps * log sigmoid(-beta * z)

    Shapes: four (B,) sequence log-probs (summed over completion tokens in TRL) ->
    (losses, chosen_rewards, rejected_rewards), each (B,); rewards = beta * (logps - ref_logps).
    eps = ``label_smoothing`` in [0, 0.5): the probability a label is flipped (cDPO); 0 is DPO.
    Papers: Rafailov et al. 2023, "Direct Preference Optimization" (eq. 7); Mitchell 2023,
    "A note on DPO with noisy preferences" (cDPO). Equals TRL 1.16 ``loss_type="sigmoid"``
    at eps = 0; TRL 1.16's DPOTrainer IGNORES ``label_smoothing`` for "sigmoid" (older TRL
    and TRL 1.16's CPOTrainer apply the cDPO formula above, which is what this does).
    """
    _check_label_smoothing(label_smoothing, "dpo_sigmoid_loss")
    chosen_lr, rejected_lr = _log_ratios(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )  # (B,), (B,)
    logits = chosen_lr - rejected_lr  # (B,)
    losses = _smoothed_sigmoid_loss(beta * logits, label_smoothing)  # (B,)
    return losses, beta * chosen_lr.detach(), beta * rejected_lr.detach()


def ipo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPO: regress the log-ratio margin onto 1 / (2 beta) instead of pushing it to infinity.

        z    = (c - ref_c) - (r - ref_r)
        loss = (z - 1 / (2 * beta))**2

    Shapes: four (B,) log-probs -> three (B,); rewards = beta * (logps - ref_logps) of the inputs.
    ``beta`` is the paper's regulariser tau. Paper: Azar et al. 2023, "A General Theoretical
    Paradigm to Understand Learning from Human Preferences" (eq. 17). Length-normalised:
    TRL 1.16 ``loss_type="ipo"`` divides each log-ratio by its completion's token count
    (``completion_mask.sum(1).clamp(min=1)``; confirmed with the IPO authors, per TRL's
    comment), which equals passing per-token AVERAGE log-probs here (policy and reference
    share the token count). TRL's logged rewards for IPO stay on the SUMMED log-ratios,
    so a trainer matching TRL's metrics computes them from the sums. No label smoothing.
    """
    chosen_lr, rejected_lr = _log_ratios(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )  # (B,), (B,)
    logits = chosen_lr - rejected_lr  # (B,)
    losses = (logits - 1 / (2 * beta)) ** 2  # (B,)
    return losses, beta * chosen_lr.detach(), beta * rejected_lr.detach()


def hinge_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hinge (SLiC) loss on the log-ratio margin.

        z    = (c - ref_c) - (r - ref_r)
        loss = relu(1 - beta * z)

    Shapes: four (B,) log-probs -> three (B,); rewards = beta * (logps - ref_logps).
    beta acts as an inverse margin: loss = beta * relu(1/beta - z). Paper: Zhao et al. 2023,
    "SLiC-HF: Sequence Likelihood Calibration with Human Feedback" (here against the
    reference model as in TRL). Equals TRL 1.16 ``loss_type="hinge"``; no label smoothing.
    """
    chosen_lr, rejected_lr = _log_ratios(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )  # (B,), (B,)
    logits = chosen_lr - rejected_lr  # (B,)
    losses = torch.relu(1 - beta * logits)  # (B,)
    return losses, beta * chosen_lr.detach(), beta * rejected_lr.detach()


def robust_dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Robust DPO (rDPO): an unbiased DPO loss under labels flipped with probability eps.

        z    = (c - ref_c) - (r - ref_r)
        loss = (-(1 - eps) * log sigmoid(beta * z) + eps * log sigmoid(-beta * z)) / (1 - 2 * eps)

    Shapes: four (B,) log-probs -> three (B,); rewards = beta * (logps - ref_logps).
    eps = ``label_smoothing`` in [0, 0.5) (0.1 is the paper's typical value); eps = 0 is DPO.
    The loss can be negative for eps > 0 (it is unbiased, not a log-likelihood).
    Paper: Chowdhury et al. 2024, "Provably Robust DPO". Equals TRL 1.16
    ``loss_type="robust"`` (which only warns about eps outside [0, 0.5); here it is an error).
    """
    _check_label_smoothing(label_smoothing, "robust_dpo_loss")
    chosen_lr, rejected_lr = _log_ratios(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )  # (B,), (B,)
    z = beta * (chosen_lr - rejected_lr)  # (B,)
    clean = -(1 - label_smoothing) * F.logsigmoid(z)  # (B,)
    flipped = -label_smoothing * F.logsigmoid(-z)  # (B,)
    losses = (clean - flipped) / (1 - 2 * label_smoothing)  # (B,)
    return losses, beta * chosen_lr.detach(), beta * rejected_lr.detach()


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    beta: float,
    gamma_beta_ratio: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO: reference-free DPO on length-normalised log-probs with a target margin.

        z    = (c - r) - gamma_beta_ratio
        loss = -(1 - eps) * log sigmoid(beta * z) - eps * log sigmoid(-beta * z)

    Shapes: chosen_logps, rejected_logps (B,) PER-TOKEN AVERAGE log-probs -> three (B,);
    rewards = beta * logps. The reward margin is gamma = gamma_beta_ratio * beta (the SimPO
    repository's parameterisation). Paper: Meng et al. 2024, "SimPO: Simple Preference
    Optimization with a Reference-Free Reward". Equals TRL 1.16
    ``CPOTrainer`` ``loss_type="simpo"`` with ``simpo_gamma = gamma_beta_ratio * beta`` (TRL
    subtracts ``simpo_gamma / beta``; its defaults beta=0.1, simpo_gamma=0.5 mean a ratio of
    5) and ``cpo_alpha=0`` (TRL's CPO adds ``cpo_alpha`` (default 1) times the chosen NLL).
    """
    _check_beta(beta)
    _check_label_smoothing(label_smoothing, "simpo_loss")
    ok = isinstance(gamma_beta_ratio, numbers.Real) and not isinstance(gamma_beta_ratio, bool)
    if not ok or not math.isfinite(gamma_beta_ratio):
        raise ValueError(f"gamma_beta_ratio must be a finite number, got {gamma_beta_ratio!r}")
    _check_logps(chosen_logps=chosen_logps, rejected_logps=rejected_logps)
    logits = (chosen_logps - rejected_logps) - gamma_beta_ratio  # (B,)
    losses = _smoothed_sigmoid_loss(beta * logits, label_smoothing)  # (B,)
    return losses, beta * chosen_logps.detach(), beta * rejected_logps.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate everywhere (Mächler 2012, "Accurately Computing
    log(1 - exp(-|a|))"): log(-expm1(x)) near 0, log1p(-exp(x)) below -ln 2. Same values as
    TRL 1.16; unlike TRL, each branch only sees inputs it is valid for, so where() does not
    turn an unused branch's inf into a NaN gradient (e.g. float32 x = -1e-9: exp(x) == 1)."""
    far = x < -_LN2
    x_far = torch.where(far, x, -1.0)  # the other entries are dummies, valid for log1p(-exp)
    x_near = torch.where(far, -0.5, x)  # valid for log(-expm1)
    return torch.where(far, torch.log1p(-torch.exp(x_far)), torch.log(-torch.expm1(x_near)))


def orpo_log_odds(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> torch.Tensor:
    """Log odds ratio of chosen over rejected, odds(y) = P / (1 - P) with P = exp(logp).

        log_odds = (c - r) - (log(1 - exp(c)) - log(1 - exp(r)))

    Shapes: (B,) per-token AVERAGE log-probs, all < 0 -> (B,), in at least float32 (bf16 /
    fp16 inputs are upcast, as TRL casts to float32). A chosen log-prob of exactly 0 gives
    +inf, a rejected one -inf. Paper: Hong et al. 2024, "ORPO: Monolithic Preference
    Optimization without Reference Model" (eqs. 4, 7). TRL 1.16's ORPOTrainer logs
    ``log_odds_chosen = mean(log_odds)`` and ``log_odds_ratio = mean(log sigmoid(log_odds))``.
    """
    _check_logps(chosen_logps=chosen_logps, rejected_logps=rejected_logps)
    dtype = torch.promote_types(torch.promote_types(chosen_logps.dtype, rejected_logps.dtype), torch.float32)
    c, r = chosen_logps.to(dtype), rejected_logps.to(dtype)  # (B,)
    return (c - r) - (_log1mexp(c) - _log1mexp(r))  # (B,)


def orpo_odds_ratio_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO's odds-ratio term, to be ADDED to the NLL of the chosen response.

        loss = -beta * log sigmoid(log_odds),   log_odds = orpo_log_odds(c, r)
        total ORPO loss = NLL(chosen) + mean(loss)

    Shapes: (B,) per-token AVERAGE log-probs (< 0) -> three (B,) in at least float32;
    rewards = beta * logps (what TRL's ORPO logs). ``beta`` is the paper's lambda.
    Paper: Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference
    Model" (eqs. 4 and 7). TRL 1.16 ``ORPOTrainer.odds_ratio_loss`` returns ``beta * log
    sigmoid(log_odds)`` (the negative of this) and SUBTRACTS its mean from the NLL: same
    total. TRL's metrics ``log_odds_ratio`` / ``log_odds_chosen``: see ``orpo_log_odds``.
    """
    _check_beta(beta)
    log_odds = orpo_log_odds(chosen_logps, rejected_logps)  # (B,)
    losses = -beta * F.logsigmoid(log_odds)  # (B,)
    dtype = log_odds.dtype
    return losses, beta * chosen_logps.detach().to(dtype), beta * rejected_logps.detach().to(dtype)


# loss_type=... dispatch (names as in TRL). Reference-free losses take (chosen, rejected, beta, ...).
DPO_LOSSES = {
    "sigmoid": dpo_sigmoid_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "robust": robust_dpo_loss,
    "simpo": simpo_loss,
    "orpo": orpo_odds_ratio_loss,
}
# Losses without a reference model: called as fn(chosen_logps, rejected_logps, beta, ...).
REFERENCE_FREE = {"simpo", "orpo"}
# Losses whose sequence log-probs are per-token AVERAGES in TRL 1.16 (the others use sums):
# DPOTrainer "ipo" divides the log-ratios by the completion length; CPOTrainer averages for
# "simpo" (and its own "ipo"); ORPOTrainer always averages.
LENGTH_NORMALISED = {"ipo", "simpo", "orpo"}
