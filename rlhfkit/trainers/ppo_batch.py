"""PPO rollouts as tensors: validate the user's lists, lay them out, run the forward passes.

Layout. Queries are left-padded and responses right-padded, so every response starts in
the same column and the batch is ``[pad..query | response..pad]`` of width ``Lq + R``.
Position ids count real tokens only, so a padded row computes exactly what it would
alone. The forward pass feeds all but the last column and asks the model for logits at
the last ``R`` positions only: those predict the ``R`` response tokens. Prompt positions
never reach the LM head, which is most of the compute with a large vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..algos import logprobs_from_logits


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor       # (B, Lq + R) left-padded query, right-padded response
    attention_mask: torch.Tensor  # (B, Lq + R)
    position_ids: torch.Tensor    # (B, Lq + R)
    response_ids: torch.Tensor    # (B, R)
    mask: torch.Tensor            # (B, R) float: 1 on real (and unmasked) response tokens

    @property
    def response_length(self) -> int:
        return self.response_ids.shape[1]

    def rows(self, idx: torch.Tensor) -> "RolloutBatch":
        """A minibatch, with columns that are padding in every selected row cut off."""
        sub = RolloutBatch(*(t[idx] for t in (self.input_ids, self.attention_mask, self.position_ids,
                                               self.response_ids, self.mask)))
        R = self.response_length
        lead = int(sub.attention_mask[:, : sub.input_ids.shape[1] - R].sum(0).eq(0).cumprod(0).sum())
        keep_r = int(sub.attention_mask[:, -R:].sum(0).gt(0).nonzero().max()) + 1 if R else 0
        end = sub.input_ids.shape[1] - R + keep_r
        return RolloutBatch(sub.input_ids[:, lead:end], sub.attention_mask[:, lead:end], sub.position_ids[:, lead:end],
                            sub.response_ids[:, :keep_r], sub.mask[:, :keep_r])


def _as_token_tensor(x, what: str, i: int, device) -> torch.Tensor:
    t = torch.as_tensor(x, device=device)
    if t.dim() != 1:
        raise ValueError(f"{what}[{i}] must be a 1-D tensor of token ids, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point:
        raise ValueError(f"{what}[{i}] must hold integer token ids, got dtype {t.dtype}")
    return t.long()


def check_step_inputs(queries, responses, scores, response_masks, batch_size: int, max_length: int | None, device):
    """Validate ``step``'s arguments; returns (queries, responses, scores (B,), masks or None)."""
    for name, value in (("queries", queries), ("responses", responses), ("scores", scores)):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list of tensors, got {type(value).__name__}")
    if not (len(queries) == len(responses) == len(scores)):
        raise ValueError(f"queries, responses and scores must have the same length, got "
                         f"{len(queries)}, {len(responses)} and {len(scores)}")
    if len(queries) != batch_size:
        raise ValueError(f"step() got {len(queries)} samples but PPOConfig.batch_size is {batch_size}; "
                         "pass exactly batch_size samples or change the config")
    queries = [_as_token_tensor(q, "queries", i, device) for i, q in enumerate(queries)]
    responses = [_as_token_tensor(r, "responses", i, device) for i, r in enumerate(responses)]
    values = []
    for i, s in enumerate(scores):
        t = torch.as_tensor(s, dtype=torch.float32)
        if t.numel() != 1:
            raise ValueError(f"scores[{i}] must be a scalar (one number per response), got shape {tuple(t.shape)}")
        if not math.isfinite(float(t)):
            raise ValueError(f"scores[{i}] is {float(t)}: every score must be a finite number")
        values.append(t.reshape(()))
    for i, (q, r) in enumerate(zip(queries, responses)):
        if len(q) == 0:
            raise ValueError(f"queries[{i}] is empty: a query needs at least one token (e.g. BOS)")
        if len(r) == 0:
            raise ValueError(f"responses[{i}] is empty: drop the sample or score a response of at least one token")
        if max_length is not None and len(q) + len(r) > max_length:
            raise ValueError(f"queries[{i}] + responses[{i}] are {len(q)} + {len(r)} tokens, longer than the model's "
                             f"context of {max_length}; truncate the query or lower max_new_tokens")
    if response_masks is not None:
        if len(response_masks) != len(responses):
            raise ValueError(f"response_masks has {len(response_masks)} entries for {len(responses)} responses")
        response_masks = [torch.as_tensor(m, device=device) for m in response_masks]
        for i, (m, r) in enumerate(zip(response_masks, responses)):
            if m.shape != r.shape:
                raise ValueError(f"response_masks[{i}] has shape {tuple(m.shape)}, responses[{i}] {tuple(r.shape)}")
    return queries, responses, torch.stack(values).to(device), response_masks


def build_batch(queries, responses, response_masks, pad_token_id: int) -> RolloutBatch:
    """Lay out (query, response) pairs as described in the module docstring."""
    B, device = len(queries), queries[0].device
    Lq, R = max(len(q) for q in queries), max(len(r) for r in responses)
    input_ids = torch.full((B, Lq + R), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((B, Lq + R), dtype=torch.long, device=device)
    mask = torch.zeros((B, R), dtype=torch.float32, device=device)
    for i, (q, r) in enumerate(zip(queries, responses)):
        input_ids[i, Lq - len(q): Lq] = q
        input_ids[i, Lq: Lq + len(r)] = r
        attention_mask[i, Lq - len(q): Lq + len(r)] = 1
        mask[i, : len(r)] = 1.0 if response_masks is None else response_masks[i].float()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # (B, Lq + R)
    return RolloutBatch(input_ids, attention_mask, position_ids, input_ids[:, Lq:], mask)


def forward_batch(model, batch: RolloutBatch, critic=None):
    """Log-probs (B, R), values (B, R) and logits (B, R, V) of the response tokens.

    ``model`` is an ``AutoModelForCausalLMWithValueHead``; with a separate ``critic`` the
    values come from the critic instead of the shared head.
    """
    R = batch.response_length
    inputs = dict(input_ids=batch.input_ids[:, :-1], attention_mask=batch.attention_mask[:, :-1],
                  position_ids=batch.position_ids[:, :-1])
    logits, _, values = model(**inputs, logits_to_keep=R, use_cache=False)
    logits = logits[:, -R:]  # (B, R, V); a model without logits_to_keep returned every position
    if critic is not None:
        values = critic(**inputs, logits_to_keep=R)
    values = values[:, -R:].float()  # (B, R)
    return logprobs_from_logits(logits, batch.response_ids), values, logits
