"""Per-sequence and per-token values back from a padding-free (packed) forward pass.

A packed forward concatenates N sequences into rows without padding and computes logits only
at the n positions that score a token. Each such position p carries two indices: ``segment[p]``,
the sequence (row of the padded batch) it belongs to, and ``column[p]``, its column in that
sequence's padded region of width K. These functions turn the packed values (n, ...) into
what the padded batch would have given: a sum per sequence (S,), or the padded (S, K) layout
with 0 wherever nothing was scored (so ``(x * mask).sum(-1)`` over it is the same sum).
"""

from __future__ import annotations

import torch


def segment_sum(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum of the values of each segment.

        out[s] = sum_{p : segment[p] = s} values[p]

    Shapes: values (n, ...), segment (n,) int64 in [0, num_segments) -> (num_segments, ...);
    a segment with no value sums to 0. Differentiable in ``values`` (``index_add``).
    """
    out = values.new_zeros((num_segments, *values.shape[1:]))
    return out.index_add(0, segment, values)  # (S, ...)


def segment_mean(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Mean of the values of each segment, ``segment_sum / count`` (a segment with no value: 0).

    Shapes: values (n, ...), segment (n,) -> (num_segments, ...). The length-normalised
    log-prob of IPO/SimPO when ``values`` are the token log-probs of each sequence.
    """
    total = segment_sum(values, segment, num_segments)  # (S, ...)
    count = torch.bincount(segment, minlength=num_segments).to(total.dtype)  # (S,)
    return total / count.clamp_min(1).view(-1, *([1] * (total.dim() - 1)))


def unpack_tokens(values: torch.Tensor, segment: torch.Tensor, column: torch.Tensor,
                  shape: tuple[int, int]) -> torch.Tensor:
    """The padded (S, K, ...) layout of packed per-token values.

        out[segment[p], column[p]] = values[p];   out = 0 elsewhere

    Shapes: values (n, ...), segment (n,), column (n,) int64, each (segment, column) pair at
    most once -> (S, K, ...). Differentiable in ``values``: the gradient of ``out[s, k]``
    flows back to the one packed position it came from.
    """
    out = values.new_zeros((*shape, *values.shape[1:]))
    return out.index_put((segment, column), values)  # (S, K, ...)
