"""The frozen reference policy that PPO's KL penalty is measured against."""

from __future__ import annotations

import contextlib
import copy

from torch import nn


def create_reference_model(model: nn.Module, num_shared_layers: int | None = None, pattern: str | None = None) -> nn.Module:
    """Return a frozen deep copy of ``model`` (eval mode, no gradients).

    The classic API could also share the first ``num_shared_layers`` layers between policy
    and reference to save memory; sharing frozen layers silently freezes them in the policy
    too, so rlhfkit does not do it: use PEFT (LoRA) instead, where the reference is the
    policy with its adapter disabled and costs no memory at all.
    """
    if num_shared_layers is not None or pattern is not None:
        raise ValueError(
            "create_reference_model(num_shared_layers=...) is not supported: shared layers would be frozen "
            "in the policy as well. Pass a PEFT config (LoRA) to save memory; the adapter-disabled base model "
            "then serves as the reference."
        )
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def is_peft_model(model: nn.Module) -> bool:
    inner = getattr(model, "pretrained_model", model)
    return hasattr(inner, "peft_config") and hasattr(inner, "disable_adapter")


def reference_context(model: nn.Module, ref_model: nn.Module | None):
    """Context in which ``ref_model or model`` computes reference log-probs.

    With ``ref_model=None`` on a PEFT model the adapter is disabled inside the context,
    so the base weights act as the reference.
    """
    if ref_model is None and is_peft_model(model):
        return getattr(model, "pretrained_model", model).disable_adapter()
    return contextlib.nullcontext()
