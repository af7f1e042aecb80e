"""Token log-probabilities and entropies from logits, without a full log-softmax copy.

A (B, T, V) logits tensor is the largest activation of an LM step (V is 32k-256k), so
these functions gather what they need and reduce over V instead of materialising
``log_softmax(logits)``. Results are float32 for bf16 / fp16 / fp32 logits (float64 stays
float64): bf16 log-probs are too coarse for PPO ratios (a 1e-2 log error is a 1% ratio error).
"""

from __future__ import annotations

import torch


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32 (bf16 / fp16 are upcast; float32 / float64 are kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _blocks(B: int, T: int, chunk_size: int | None) -> list[tuple[slice, slice]]:
    """(batch, time) slices covering a (B, T) grid, about chunk_size positions each.

    Slicing (not flattening B*T) keeps views of non-contiguous logits such as
    ``logits[:, :-1]``: a reshape there would copy the whole (B, T, V) tensor.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    if chunk_size is None or chunk_size >= B * T:
        return [(slice(0, B), slice(0, T))]
    if chunk_size >= T:  # whole sequences, several per block
        rows = chunk_size // T
        return [(slice(b, min(b + rows, B)), slice(0, T)) for b in range(0, B, rows)]
    return [
        (slice(b, b + 1), slice(t, min(t + chunk_size, T)))
        for b in range(B)
        for t in range(0, T, chunk_size)
    ]


def _blockwise(fn, logits: torch.Tensor, chunk_size: int | None, *extra: torch.Tensor):
    """fn(logits_block, *extra_blocks) -> (b, t) over the blocks, assembled into (B, T)."""
    B, T, _ = logits.shape
    blocks = _blocks(B, T, chunk_size)
    if len(blocks) == 1:
        return fn(logits, *extra)  # (B, T)
    out = logits.new_empty((B, T), dtype=torch.promote_types(logits.dtype, torch.float32))
    for bs, ts in blocks:
        # slice assignment is tracked by autograd, so gradients reach every block
        out[bs, ts] = fn(logits[bs, ts], *(x[bs, ts] for x in extra))  # (b, t)
    return out  # (B, T)


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    chunk = _upcast(logits)  # (b, t, V) ; a no-op for float32 logits
    label_logit = chunk.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (b, t)
    return label_logit - torch.logsumexp(chunk, dim=-1)  # (b, t)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    chunk = _upcast(logits)  # (b, t, V)
    p = torch.softmax(chunk, dim=-1)  # (b, t, V)
    return torch.logsumexp(chunk, dim=-1) - (p * chunk).sum(-1)  # (b, t)


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Log-probability of each label under the categorical distribution of its logits.

        log p(y_t) = logits[t, y_t] - logsumexp_v logits[t, v]

    Shapes: logits (B, T, V), labels (B, T) int64 (valid ids, no -100) -> (B, T) float32
    (float64 for float64 logits).
    Differentiable; the gradient equals that of ``log_softmax(logits).gather(labels)``
    (one_hot(y) - softmax(logits)), which is what TRL 0.11.4
    ``trl.core.logprobs_from_logits`` computes via a full log_softmax.
    ``chunk_size`` (positions of the B*T grid per block) bounds the float32 working
    copy; under autograd each block's upcast is kept for backward, so it saves memory
    mainly under ``torch.no_grad()`` (rollout and reference scoring).
    Source: https://github.com/pytorch/pytorch/issues/563#issuecomment-330103591
    """
    return _blockwise(_label_logprobs, logits, chunk_size, labels)  # (B, T)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Entropy of the categorical distribution at each position.

        H = -sum_v p(v) log p(v) = logsumexp(logits) - sum_v softmax(logits)_v * logits_v

    Shapes: logits (B, T, V) -> (B, T) float32 (float64 kept). ``chunk_size`` as in
    ``logprobs_from_logits``.
    Source: TRL 0.11.4 ``trl.core.entropy_from_logits`` (same formula, float32 here).
    """
    return _blockwise(_entropy, logits, chunk_size)  # (B, T)


def sequence_logprobs(
    logprobs: torch.Tensor, mask: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Log-probability of each whole sequence from its per-token log-probs.

        sum:     log p(y) = sum_t mask_t * log p(y_t)
        average: sum_t mask_t * log p(y_t) / sum_t mask_t     (length-normalised)

    Shapes: logprobs (B, T), mask (B, T) -> (B,).
    Used by DPO (Rafailov et al. 2023, sum) and IPO / SimPO-style losses (average).
    A row with an empty mask averages to 0 (its length is clamped to 1).
    """
    total = (logprobs * mask).sum(-1)  # (B,)
    if not average:
        return total
    return total / mask.sum(-1).clamp_min(1)  # (B,)
