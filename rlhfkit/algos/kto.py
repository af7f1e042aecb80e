"""KTO and unpaired APO-zero: preference losses on UNPAIRED data (each completion labelled good or bad).

Every function takes SEQUENCE log-probs, shape (B,): log pi(y|x) of each row's completion,
summed over its completion tokens (as TRL sums them), and ``labels`` (B,) bool: True for a
desirable completion, False for an undesirable one. Losses come back per row, in batch order,
already multiplied by their class weight; the trainer takes their plain mean (TRL's
``losses.nanmean()``: the weights scale a class's share, they are not a weighted average).

With the log-ratio h = logps - ref_logps of each row:

    KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", eq. 7)
        z0              = max(0, mean over the batch of (kl_logps - ref_kl_logps)), no gradient
        desirable row   = desirable_weight   * (1 - sigmoid(beta * (h - z0)))
        undesirable row = undesirable_weight * (1 - sigmoid(beta * (z0 - h)))

    APO-zero, unpaired (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", eq. 7)
        desirable row   = desirable_weight   * (1 - sigmoid(beta * h))
        undesirable row = undesirable_weight * sigmoid(beta * h)

z0, the reference point, estimates KL(pi || pi_ref) from MISMATCHED pairs: each prompt x_i with
another row's completion y_j of the same batch (``kl_logps``), so it measures how far the policy
moved in general, not on the rows being rewarded. Rewards for logging: beta * h, detached.

Reference for equality: Hugging Face TRL's ``KTOTrainer.kto_loss`` (``trl/experimental/kto`` in
TRL 1.x): the same formulas, the KL mean taken over all processes before the clamp at 0 (the
trainer averages :func:`kto_kl` across processes, then passes it here).
"""

from __future__ import annotations

import torch

from .dpo import _check_beta, _check_logps


def _check_weights(desirable_weight: float, undesirable_weight: float) -> None:
    for name, value in (("desirable_weight", desirable_weight), ("undesirable_weight", undesirable_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def _check_labels(labels: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    if labels.dtype != torch.bool:
        raise ValueError(f"labels must be a bool tensor (True = desirable), got dtype {labels.dtype}")
    if labels.shape != logps.shape:
        raise ValueError(f"labels must have the shape of the log-probs (B,), got {tuple(labels.shape)} and "
                         f"{tuple(logps.shape)}")
    return labels


def kto_kl(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """The batch's KL estimate from mismatched pairs, before the clamp: mean(kl_logps - ref_kl_logps).

    Shapes: two (B,) sequence log-probs of (x_i, y_j), j != i -> () detached. Average it over
    processes (if any) and hand it to :func:`kto_loss`, which clamps it at 0 as TRL does.
    """
    _check_logps(policy_kl_logps=policy_kl_logps, reference_kl_logps=reference_kl_logps)
    return (policy_kl_logps - reference_kl_logps).mean().detach()  # ()


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KTO's loss per row (module docstring, eq. 7 of the paper).

        z0   = max(kl, 0), detached
        loss = desirable_weight * (1 - sigmoid(beta * (h - z0)))     where labels
               undesirable_weight * (1 - sigmoid(beta * (z0 - h)))   elsewhere,    h = logps - ref_logps

    Shapes: policy_logps, reference_logps (B,), labels (B,) bool, kl () from :func:`kto_kl`
    -> (losses (B,), rewards (B,) = beta * h detached, z0 ()). Equals TRL ``loss_type="kto"``.
    """
    _check_beta(beta)
    _check_weights(desirable_weight, undesirable_weight)
    _check_logps(policy_logps=policy_logps, reference_logps=reference_logps)
    labels = _check_labels(labels, policy_logps)
    z0 = kl.detach().clamp(min=0)  # () the reference point carries no gradient
    h = policy_logps - reference_logps  # (B,)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (h - z0)))  # (B,)
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - h)))  # (B,)
    return torch.where(labels, desirable, undesirable), beta * h.detach(), z0


def apo_zero_unpaired_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpaired APO-zero: push desirable log-ratios up and undesirable ones down, no reference point.

        loss = desirable_weight * (1 - sigmoid(beta * h))   where labels
               undesirable_weight * sigmoid(beta * h)       elsewhere,    h = logps - ref_logps

    Shapes: policy_logps, reference_logps (B,), labels (B,) bool -> (losses (B,), rewards (B,) =
    beta * h detached). Use it when the desirable outputs are better than the model's own (APO's
    advice). Paper: D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive
    Revisions" (unpaired eq. 7). Equals TRL ``loss_type="apo_zero_unpaired"`` (which logs kl = 0).
    """
    _check_beta(beta)
    _check_weights(desirable_weight, undesirable_weight)
    _check_logps(policy_logps=policy_logps, reference_logps=reference_logps)
    labels = _check_labels(labels, policy_logps)
    h = policy_logps - reference_logps  # (B,)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * h))  # (B,)
    undesirable = undesirable_weight * torch.sigmoid(beta * h)  # (B,)
    return torch.where(labels, desirable, undesirable), beta * h.detach()


# loss_type=... dispatch (TRL's names). Losses in USES_KL take kl=kto_kl(...) after the labels.
KTO_LOSSES = {
    "kto": kto_loss,
    "apo_zero_unpaired": apo_zero_unpaired_loss,
}
USES_KL = {"kto"}
