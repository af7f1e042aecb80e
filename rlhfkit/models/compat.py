"""What a model's forward accepts, across Transformers 5.x releases, probed once per model class.

Transformers 5.24 renamed the forward argument ``past_key_values`` to ``cache`` (the old name
is deprecated until 5.40) and outputs carry ``.cache`` (``.past_key_values`` stays as a
property). Every fast path that depends on such an argument asks here, so one probe decides
for the whole package, and a fast path that cannot be used says so once in the log instead of
switching itself off silently.
"""

from __future__ import annotations

import inspect
import logging

import torch
from torch import nn

logger = logging.getLogger("rlhfkit")
_warned: set[str] = set()


def unwrap_model(model):
    """The model whose ``forward`` signature matters: through DDP/FSDP (``.module``), PEFT
    (``get_base_model()``) and the value-head wrapper (``pretrained_model``)."""
    inner = model
    for _ in range(4):  # a value head around PEFT around DDP at most
        if isinstance(getattr(inner, "module", None), nn.Module):  # DDP, FSDP, DeepSpeed engines
            inner = inner.module
        elif callable(getattr(inner, "get_base_model", None)):
            base = inner.get_base_model()
            if base is inner:
                break
            inner = base
        elif "pretrained_model" in getattr(inner, "_modules", {}):
            inner = inner._modules["pretrained_model"]
        else:
            break
    return inner


def forward_parameters(model) -> frozenset[str]:
    """Names of the keyword arguments the (unwrapped) model's ``forward`` takes."""
    inner = unwrap_model(model)
    try:
        return frozenset(inspect.signature(inner.forward).parameters)
    except (TypeError, ValueError):  # builtins or C extensions without a signature
        return frozenset()


def cache_argument(model) -> str | None:
    """``"cache"`` (Transformers >= 5.24), ``"past_key_values"`` (earlier), or None if neither."""
    params = forward_parameters(model)
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def accepts_logits_to_keep(model) -> bool:
    """True when the forward computes the LM head on the last K positions only (``logits_to_keep=K``)."""
    return "logits_to_keep" in forward_parameters(model)


def output_cache(output):
    """The key/value cache of a model output, whichever name this Transformers version gives it."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def warn_once(key: str, message: str) -> None:
    """Log ``message`` at WARNING level the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def note_logits_to_keep(model, where: str) -> bool:
    """:func:`accepts_logits_to_keep`, logging once per model class when the answer is no (the LM
    head then runs on every position: slower and more memory, same results)."""
    ok = accepts_logits_to_keep(model)
    if not ok:
        name = type(unwrap_model(model)).__name__
        warn_once(f"logits_to_keep:{name}",
                  f"{name}.forward takes no `logits_to_keep`: {where} computes the LM head on every position "
                  "(same results, slower, more memory)")
    return ok


def enable_checkpointing(model) -> None:
    """Turn on activation (gradient) checkpointing by whichever name this Transformers has
    (``activation_checkpointing_enable`` since 5.24, ``gradient_checkpointing_enable`` before)."""
    name = "activation_checkpointing_enable" if hasattr(model, "activation_checkpointing_enable") \
        else "gradient_checkpointing_enable"
    getattr(model, name)()


def is_checkpointing(model) -> bool:
    """True while activation checkpointing is on (read by whichever name this Transformers has)."""
    inner = unwrap_model(model)
    name = "is_activation_checkpointing" if hasattr(type(inner), "is_activation_checkpointing") \
        else "is_gradient_checkpointing"
    return bool(getattr(inner, name, False))


def _first_output(out) -> torch.Tensor:
    """The main tensor of a forward's output: logits, a value tensor, or the last hidden state."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple):
        return out[0]
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


@torch.no_grad()
def packed_attention_problem(model) -> str | None:
    """None when ``model`` keeps packed sequences apart, else what happens instead.

    Padding-free batches concatenate sequences in one row with position ids restarting at 0
    for each and no attention mask; Transformers' mask builder (``masking_utils``) reads the
    restarts as sequence boundaries for eager, SDPA and flex attention, and FlashAttention reads
    them as its varlen boundaries. A model with its own attention code (OPT's learned positions,
    BLOOM's ALiBi, state-space models) lets the sequences see each other. This runs the model
    (eval mode, no grad) once on two packed sequences of 4 and 3 tokens and once on the second
    alone, and compares its outputs for the second: they must agree to float rounding of the
    model's dtype.
    """
    inner = unwrap_model(model)
    params = forward_parameters(model)
    if "position_ids" not in params and "kwargs" not in params:
        return "its forward takes no position_ids"
    weight = next((p for p in inner.parameters() if p.is_floating_point()), None)
    if weight is None:
        return "it has no floating-point weights to run"
    vocab = getattr(getattr(inner, "config", None), "vocab_size", None) or 8
    first = torch.tensor([3, 5, 7, 2], device=weight.device) % vocab
    second = torch.tensor([4, 1, 6], device=weight.device) % vocab
    ids = torch.cat([first, second])[None]  # (1, 7)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2]], device=weight.device)
    extra = {"use_cache": False} if "use_cache" in params or "kwargs" in params else {}
    was = model.training
    model.eval()
    try:
        packed = _first_output(model(input_ids=ids, position_ids=positions, **extra))[0, 4:].float()
        alone = _first_output(model(input_ids=second[None], position_ids=positions[:, :3], **extra))[0].float()
    except Exception as err:  # noqa: BLE001 - any failure means the layout cannot be used
        return f"a packed forward failed ({type(err).__name__}: {err})"
    finally:
        model.train(was)
    tol = 1e-4 if weight.dtype in (torch.float32, torch.float64) else 3e-2  # relative to the outputs' scale
    gap = float((packed - alone).abs().max())
    scale = 1.0 + float(alone.abs().max())
    if gap > tol * scale:
        return (f"the second of two packed sequences differs from the same sequence alone by {gap:.3g} (allowed "
                f"{tol * scale:.3g}): its attention crosses the position-id restarts")
    return None
