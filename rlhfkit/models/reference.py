"""The frozen reference policy that PPO's KL penalty is measured against."""

from __future__ import annotations

import contextlib
import copy

from torch import nn


# Where the decoder layers of common architectures live; ``{layer}`` is the layer index.
LAYER_PATTERNS = ["transformer.h.{layer}", "model.decoder.layers.{layer}", "gpt_neox.layers.{layer}",
                  "model.layers.{layer}"]


def create_reference_model(model: nn.Module, num_shared_layers: int | None = None, pattern: str | None = None) -> nn.Module:
    """Return a frozen copy of ``model`` (eval mode, no gradients) for the KL penalty.

    With ``num_shared_layers=N`` (as TRL <= 0.11) every parameter that comes before the
    layer named ``pattern.format(layer=N)`` (the embeddings and the first N layers) is
    shared: it is frozen in ``model`` too (so it trains nowhere) and the copy holds the
    very same tensors, so those layers cost no second copy of memory. ``pattern`` defaults
    to the first of ``LAYER_PATTERNS`` found in the parameter names ("transformer.h.{layer}"
    for GPT-2, "model.layers.{layer}" for Llama). Under FSDP or ZeRO-3, which re-shard the
    policy's parameters, pass a separately loaded ``ref_model`` instead.
    """
    if num_shared_layers is None:
        if pattern is not None:
            raise ValueError("create_reference_model(pattern=...) needs num_shared_layers=N as well")
        ref = copy.deepcopy(model)
        return ref.eval().requires_grad_(False)
    names = [n for n, _ in model.named_parameters()]
    if pattern is not None:
        pattern = pattern.format(layer=num_shared_layers)
    else:
        candidates = (p.format(layer=num_shared_layers) for p in LAYER_PATTERNS)
        pattern = next((c for c in candidates if any(c in n for n in names)), None)
    if pattern is None:
        raise ValueError(f"Layer pattern could not be matched: none of {LAYER_PATTERNS} with layer="
                         f"{num_shared_layers} names a parameter of {type(model).__name__}; pass "
                         "pattern='<prefix>.{layer}' (see model.named_parameters())")
    first_unshared = next((i for i, n in enumerate(names) if pattern in n), None)
    if first_unshared is None:  # TRL only warned, then froze the whole policy
        raise ValueError(f"Layer pattern could not be matched: no parameter name of {type(model).__name__} contains "
                         f"{pattern!r}, so every layer would be shared and frozen; check for a typo (see "
                         "model.named_parameters())")
    shared = [model.get_parameter(n) for n in names[:first_unshared]]
    for p in shared:
        p.requires_grad_(False)
    # deepcopy's memo maps each shared tensor to itself: the copy references, not duplicates, it
    ref = copy.deepcopy(model, memo={id(p): p for p in shared})
    return ref.eval().requires_grad_(False)


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
