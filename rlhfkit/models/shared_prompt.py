"""Run the prompt of a preference pair once, then chosen and rejected on top of its cached keys/values.

A reward model (or DPO policy) scores ``prompt + chosen`` and ``prompt + rejected``. In a causal
model the prompt's hidden states do not depend on what follows, so the usual concatenated batch
computes every prompt twice. Here the B prompts run once with ``use_cache=True``; their key/value
cache is repeated for the two sides and the 2B completions run on top of it. Gradients flow
through the cache into the prompt pass, so losses and gradients equal the concatenated forward's
to float rounding (tested), with (P + 2C) / (2P + 2C) of the token work: 0.75 for P = C.

Layout (what ``PairCollator(split_prompt=True)`` adds to the batch):
``prompt_input_ids`` / ``prompt_attention_mask`` (B, P), LEFT-padded so every prompt ends at
column P - 1; ``completion_input_ids`` / ``completion_attention_mask`` (2B, C), RIGHT-padded,
rows 0..B-1 chosen and B..2B-1 rejected. Positions continue each prompt's own length, so the
completion tokens see exactly the positions they have in the concatenated sequence.

Models whose forward takes no cache argument (``cache`` since Transformers 5.24,
``past_key_values`` before), or that run gradient checkpointing (which turns the cache off in
training), cannot use this; :func:`supports_shared_prompt` tells, and logs once why not.
"""

from __future__ import annotations

import torch

from .compat import cache_argument, forward_parameters, is_checkpointing, output_cache, unwrap_model, warn_once


def supports_shared_prompt(model, where: str = "the prompt-once forward") -> bool:
    """True when ``model`` (possibly DDP/PEFT-wrapped) is a decoder that accepts and returns a KV cache.

    When it is not, the reason is logged once per model class and reason (``where`` names the
    caller), so a fast path never turns itself off silently.
    """
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    name = type(inner).__name__
    if config is None or getattr(config, "is_encoder_decoder", False):
        reason = "it is not a decoder-only Transformers model"
    elif is_checkpointing(inner):
        reason = "gradient checkpointing turns the KV cache off"
    elif cache_argument(inner) is None or not {"use_cache", "position_ids"} <= forward_parameters(inner):
        reason = "its forward takes no cache (`cache`/`past_key_values`), `use_cache` or `position_ids`"
    else:
        return True
    warn_once(f"shared_prompt:{where}:{name}:{reason}",
              f"{where} is off for {name}: {reason}; using the concatenated forward (same results, slower)")
    return False


def _repeat_cache(cache, copies: int):
    """Repeat every layer's keys/values ``copies`` times along the batch (block order: all of copy 0, then 1, ...)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"unsupported cache type {type(cache).__name__}: expected a transformers Cache with .layers")
    for layer in layers:
        layer.keys = torch.cat([layer.keys] * copies, dim=0)
        layer.values = torch.cat([layer.values] * copies, dim=0)
    return cache


def shared_prompt_forward(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                          completion_mask: torch.Tensor, copies: int = 2, prompt_kwargs: dict | None = None,
                          **kwargs):
    """Model output for the completions only, computed on top of one pass over the prompts.

    prompt_ids, prompt_mask: (B, P) left-padded; completion_ids, completion_mask: (copies * B, C)
    right-padded, block order (copy k of prompt b is row k * B + b). ``kwargs`` go to both calls,
    ``prompt_kwargs`` to the prompt pass only (a causal LM needs just the last prompt position's
    logits: ``prompt_kwargs={"logits_to_keep": 1}``). Returns ``(prompt_output, completion_output)``;
    the completion output's logits are (copies * B, C, ...).
    """
    if prompt_ids.shape[0] * copies != completion_ids.shape[0]:
        raise ValueError(f"{completion_ids.shape[0]} completion rows for {prompt_ids.shape[0]} prompts x {copies}")
    prompt_positions = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, P)
    prompt_out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_positions,
                       use_cache=True, **kwargs, **(prompt_kwargs or {}))
    cache = _repeat_cache(output_cache(prompt_out), copies)
    lengths = prompt_mask.long().sum(-1).repeat(copies)  # (copies * B,)
    steps = torch.arange(completion_ids.shape[1], device=completion_ids.device)
    positions = lengths[:, None] + steps[None, :]  # (copies * B, C)
    mask = torch.cat([prompt_mask.repeat(copies, 1), completion_mask], dim=1)  # (copies * B, P + C)
    out = model(input_ids=completion_ids, attention_mask=mask, position_ids=positions,
                **{cache_argument(model): cache}, use_cache=True, **kwargs)
    return prompt_out, out
