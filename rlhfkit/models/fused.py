"""Faster kernels for the same function: a fused tanh-GELU, and float32 attention under CPU autocast.

GPT-2-family checkpoints (GPT-2, GPT-J, GPT-Neo, CodeGen, ...) use ``gelu_new``, which
Transformers computes as ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``: seven
elementwise kernels forward and more backward, each reading and writing the whole
(batch, length, 4 * hidden) activation and saving intermediates for backward. That is the
tanh approximation of GELU, which ``torch.nn.functional.gelu(x, approximate="tanh")`` computes
in one kernel (one more for backward) and saves only its input. On the CPU benchmark model
(GPT-2 6x384) the composed version was ~20% of a reward-model training step.

The swap changes no weight and no config field (saved checkpoints are unchanged); outputs
agree to float rounding (tested). ``LoopConfig.fuse_activations=False`` turns it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FusedTanhGELU(nn.Module):
    """GELU, tanh approximation, as one fused kernel (same function as ``gelu_new`` / ``gelu_fast``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def _composed_tanh_gelu_types() -> tuple[type, ...]:
    from transformers import activations

    names = ("NewGELUActivation", "FastGELUActivation")  # both are the tanh approximation, written out
    return tuple(getattr(activations, n) for n in names if hasattr(activations, n))


def fuse_activations(model: nn.Module) -> int:
    """Replace composed tanh-GELU modules inside ``model`` by :class:`FusedTanhGELU`; returns how many."""
    types = _composed_tanh_gelu_types()
    if not types:
        return 0
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, types):
                setattr(parent, name, FusedTanhGELU())
                swapped += 1
    return swapped


# ---------------------------------------------------------------- attention under CPU autocast
#
# Under ``torch.autocast("cpu", torch.bfloat16)`` SDPA runs its bf16 CPU flash kernel, whose
# backward is ~6x slower than the float32 one on the (4, 6, 48, 64) PPO benchmark shapes
# (1.50 s vs 0.26 s of one classic PPO step, torch 2.13; forward 2x). Running attention in
# float32 there is faster *and* more precise; on CUDA the bf16 kernels are the fast ones, so
# the wrapper changes nothing off the CPU.
CPU_FP32_SDPA = "rlhfkit_sdpa_cpu_fp32"


def _sdpa_cpu_fp32(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    low = query.dtype in (torch.bfloat16, torch.float16)
    if query.device.type != "cpu" or not (low or torch.is_autocast_enabled("cpu")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast("cpu", enabled=False):
        if attention_mask is not None and attention_mask.dtype.is_floating_point:
            attention_mask = attention_mask.float()
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)  # out (B, T, H, D) float32
    return out.to(query.dtype), weights


def cpu_fp32_attention(model: nn.Module) -> bool:
    """Make ``model`` (a Transformers model using ``sdpa``) run attention in float32 on CPU
    tensors under autocast, via a registered attention function; returns whether it switched.

    Only models whose config says ``_attn_implementation == "sdpa"`` and that accept
    ``set_attn_implementation`` are switched; the name is not saved in ``config.json``.
    """
    from transformers import AttentionInterface, PreTrainedModel
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    # the outermost Transformers model inside a value-head model, critic or PEFT wrapper
    top = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    current = getattr(getattr(top, "config", None), "_attn_implementation", None)
    if current == CPU_FP32_SDPA:
        return True
    if current != "sdpa":
        return False
    AttentionInterface.register(CPU_FP32_SDPA, _sdpa_cpu_fp32)
    AttentionMaskInterface.register(CPU_FP32_SDPA, sdpa_mask)  # the masks SDPA expects (else: flash-style 2-D)
    try:
        top.set_attn_implementation(CPU_FP32_SDPA)
    except (ValueError, TypeError, AttributeError):  # a model class that only accepts its built-in names
        return False
    return getattr(top.config, "_attn_implementation", None) == CPU_FP32_SDPA
