"""Prompts -> generated responses with Hugging Face ``generate``.

Batches are left-padded (a decoder must continue right after the last prompt token), the
prompt and padding are stripped, and each response is cut after its first EOS: what a
model emits after EOS is never scored or trained on.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..models.reference import reference_context


def left_pad(sequences: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D token tensors, padding on the left. Returns ``(input_ids, attention_mask)`` (B, L)."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long, device=sequences[0].device)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, length - len(s):] = s
            mask[i, length - len(s):] = 1
    return ids, mask


def truncate_after_eos(response: torch.Tensor, eos_token_id) -> torch.Tensor:
    """Keep everything up to and including the first EOS (``eos_token_id`` may be a list)."""
    eos_ids = torch.as_tensor(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id],
                              device=response.device)
    hits = torch.isin(response, eos_ids).nonzero()
    return response[: hits[0, 0] + 1] if len(hits) else response


@torch.no_grad()
def generate_responses(model, queries: list[torch.Tensor], *, pad_token_id: int, eos_token_id, batch_size: int = 4,
                       return_prompt: bool = True, remove_padding: bool = True,
                       length_sampler: Callable[[], int] | None = None, use_reference: bool = False,
                       generation_kwargs: dict | None = None) -> list[torch.Tensor]:
    """Generate one response per query, ``batch_size`` queries per ``generate`` call.

    ``pad_token_id`` left-pads the prompts; ``generation_kwargs`` go to ``model.generate``.
    ``model`` is anything with ``.generate`` (our value-head model or a plain causal LM).
    With ``remove_padding`` the response ends at its first EOS (kept) and carries no pad;
    the EOS search covers the response only, never the prompt. ``use_reference`` runs a
    PEFT policy with its adapter disabled. For an encoder-decoder model each output is the
    decoder sequence, decoder start token first (as TRL), and ``return_prompt`` is ignored.
    """
    was_training = model.training
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    model.eval()
    outputs: list[torch.Tensor] = []
    generation_kwargs = dict(generation_kwargs or {})
    generation_kwargs.setdefault("pad_token_id", pad_token_id)
    try:
        with reference_context(model, None) if use_reference else contextlib.nullcontext():
            for start in range(0, len(queries), batch_size):
                if length_sampler is not None:
                    generation_kwargs["max_new_tokens"] = length_sampler()
                chunk = queries[start:start + batch_size]
                input_ids, attention_mask = left_pad(chunk, pad_token_id)
                generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, **generation_kwargs)
                if encoder_decoder:  # the decoder output: start token + response, never the prompt
                    for row in generated:
                        outputs.append(torch.cat([row[:1], truncate_after_eos(row[1:], eos_token_id)])
                                       if remove_padding else row)
                    continue
                for query, row in zip(chunk, generated[:, input_ids.shape[1]:]):
                    response = truncate_after_eos(row, eos_token_id) if remove_padding else row
                    outputs.append(torch.cat([query, response]) if return_prompt else response)
    finally:
        model.train(was_training)
    return outputs

