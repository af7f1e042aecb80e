"""Padding-free forward passes: the sequences of a padded batch, concatenated without padding.

A padded batch (N, T) spends compute on every pad position. The padding-free layout takes
each row's real tokens (``attention_mask == 1``) and places whole sequences one after another
in packed rows of at most ``max_packed_length`` tokens (longest first, each into the first
packed row with room: first-fit decreasing; no limit: one packed row), the short tail of a
packed row filled with padding. Position ids restart at 0 for every sequence and for the
tail, and no attention mask is passed: Transformers then reads each restart as a sequence
boundary (``masking_utils.find_packed_sequence_indices``, for eager, SDPA and flex attention
on any device; FlashAttention uses the same restarts as its varlen boundaries), so a token
attends only to earlier tokens of its own sequence and computes what it would in the padded
batch. Two conditions make Transformers see the restarts: ``attention_mask`` is None and no
cache is built (``use_cache=False``; a model in eval mode otherwise builds one and the
boundaries are silently ignored). Models with their own attention code do not follow them;
:func:`require_padding_free` checks that once per model before training.

Only the positions that score a token reach the LM head (Transformers' boolean
``logits_to_keep``), and the results come back in the padded (N, K) layout of
``token_logprobs`` through ``algos.unpack_tokens`` (0 where nothing was scored), so the losses
run unchanged. Attention in a packed row of L tokens costs L^2 even where the mask is empty
(eager and SDPA compute every pair), which is what ``max_packed_length`` bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algos import logprobs_from_logits, segment_mean, segment_sum, unpack_tokens
from ..models.compat import packed_attention_problem, unwrap_model
from .batch import RolloutBatch
from .logprobs import keep_kwargs


def require_padding_free(model, option: str = "padding_free") -> None:
    """Raise ValueError naming the model type and ``option`` when ``model`` lets packed sequences see each other."""
    problem = packed_attention_problem(model)
    if problem is None:
        return
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    kind = getattr(config, "model_type", None)
    attention = getattr(config, "_attn_implementation", None)
    what = type(inner).__name__ + (f" (model_type {kind!r}, attn_implementation {attention!r})" if kind else "")
    raise ValueError(f"{option}=True cannot be used with {what}: {problem}. Set {option}=False (padded batches), or "
                     "train a model whose attention follows position ids (GPT-2, Llama, Mistral, Qwen2/3, Gemma, "
                     "Phi, GPT-NeoX, ...; see docs/dpo.md, 'Padding-free batches')")


def pack_rows(lengths: list[int], max_packed_length: int | None, where: str = "the forward pass") -> list[list[int]]:
    """Which sequences share each packed row: indices into ``lengths``, first-fit decreasing.

    Longest first, each sequence goes into the first packed row whose total stays within
    ``max_packed_length``; None puts every sequence in one row (in order). A sequence longer
    than the limit raises ValueError (sequences are never split).
    """
    if max_packed_length is None:
        return [list(range(len(lengths)))]
    longest = max(range(len(lengths)), key=lambda i: lengths[i], default=None)
    if longest is not None and lengths[longest] > max_packed_length:
        raise ValueError(f"{where}: sequence {longest} has {lengths[longest]} tokens, more than "
                         f"max_packed_length={max_packed_length}; raise max_packed_length to at least the longest "
                         "prompt + completion")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable: ties keep their order
        r = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if r is None:
            rows.append([])
            room.append(max_packed_length)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


@dataclass
class PackedLayout:
    input_ids: torch.Tensor     # (G, W) the packed rows; each row's tail after its sequences is padding
    position_ids: torch.Tensor  # (G, W) 0, 1, ... within each sequence (and within the tail)
    keep: torch.Tensor          # (G, W) bool: the positions whose logits are computed
    segment: torch.Tensor       # (n,) the padded row of each kept position, in packed (row-major) order
    column: torch.Tensor        # (n,) its column in the (N, K) region
    shape: tuple[int, int]      # (N, K)


def pack_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor,
                max_packed_length: int | None = None, where: str = "the forward pass") -> PackedLayout:
    """The packed layout of a padded batch whose last K columns hold the scored positions.

    ``input_ids`` (N, T) and ``attention_mask`` (N, T): any padding side, each row's real tokens
    in order; ``scored`` (N, K) bool: which of the last K columns need their logits (a pad
    position is never kept). A row's position ids count its real tokens, as ``build_batch``'s do.
    """
    N, T = input_ids.shape
    K = scored.shape[1]
    real = attention_mask.bool()  # (N, T)
    keep = torch.zeros_like(real)
    keep[:, T - K:] = scored.bool() & real[:, T - K:]  # (N, T)
    positions = real.long().cumsum(-1) - 1  # (N, T): restart at 0 in every row
    lengths = real.sum(-1).tolist()
    groups = pack_rows(lengths, max_packed_length, where)
    order = torch.tensor([i for g in groups for i in g], device=input_ids.device)  # (N,) rows, packed-row by row
    sizes = torch.tensor([sum(lengths[i] for i in g) for g in groups], device=input_ids.device)  # (G,)
    G, W = len(groups), int(sizes.max())
    real_o = real[order]  # (N, T)
    flat_ids = input_ids[order][real_o]  # (M,) every real token, packed row after packed row
    flat_pos = positions[order][real_o]  # (M,)
    flat_keep = keep[order][real_o]  # (M,)
    row = torch.repeat_interleave(torch.arange(G, device=input_ids.device), sizes)  # (M,) packed row of each token
    offset = torch.arange(len(flat_ids), device=input_ids.device) - (sizes.cumsum(0) - sizes)[row]  # (M,)
    ids = input_ids.new_zeros((G, W))
    ids[row, offset] = flat_ids
    # the tail restarts at 0 too: a segment of its own that no real token can see
    pos = (torch.arange(W, device=input_ids.device)[None] - sizes[:, None]).clamp_min(0)  # (G, W)
    pos[row, offset] = flat_pos
    kept = torch.zeros((G, W), dtype=torch.bool, device=input_ids.device)
    kept[row, offset] = flat_keep
    r, c = keep[order].nonzero(as_tuple=True)  # row-major, the order of ``kept``'s True positions
    return PackedLayout(ids, pos, kept, order[r], c - (T - K), (N, K))


@dataclass
class PackedRegion:
    """What :func:`packed_token_logprobs` returns: the padded (N, K) results and the packed ones."""
    logprobs: torch.Tensor          # (N, K) float32, 0 where nothing was scored
    values: torch.Tensor | None     # (N, K) float32 from a value-head model or critic, else None
    token_logprobs: torch.Tensor    # (n,) the scored positions' log-probs, in packed order
    logits: torch.Tensor            # (n, V) their logits (divided by the temperature)
    layout: PackedLayout

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """Packed per-token values (n, ...) -> the padded (N, K, ...) layout (0 where nothing was scored)."""
        return unpack_tokens(x, self.layout.segment, self.layout.column, self.layout.shape)

    def sums(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sequence sums (N, ...) of packed per-token values (n, ...)."""
        return segment_sum(x, self.layout.segment, self.layout.shape[0])

    def means(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sequence means (N, ...) over the scored positions (0 for a sequence with none)."""
        return segment_mean(x, self.layout.segment, self.layout.shape[0])


def _kept(x: torch.Tensor, keep: torch.Tensor, cut: bool) -> torch.Tensor:
    """(n, ...) at the kept positions: ``x`` itself when the model already cut it (``cut``), else ``x[keep]``."""
    return x if cut else x[keep]


def packed_token_logprobs(model, input_ids: torch.Tensor, targets: torch.Tensor, attention_mask: torch.Tensor, *,
                          scored: torch.Tensor | None = None, max_packed_length: int | None = None,
                          temperature: float = 1.0, critic=None,
                          where: str = "the forward pass") -> PackedRegion:
    """``token_logprobs`` of a padded batch, computed padding-free (see the module docstring).

    Position ``T - K + k`` of ``input_ids`` (N, T) predicts ``targets[:, k]`` (N, K) (valid ids);
    ``scored`` (N, K) bool (default: every real position) picks the targets to compute. One
    forward runs all packed rows. ``model``: a causal LM, a PEFT model around one, or the
    value-head model (its values come back in ``values``); with ``critic`` (``CriticModel``) the
    values come from the critic's own packed forward instead.
    """
    T, K = input_ids.shape[1], targets.shape[1]
    if scored is None:
        scored = attention_mask[:, T - K:].bool()
    layout = pack_layout(input_ids, attention_mask, scored, max_packed_length, where)
    keep = keep_kwargs(model, layout.keep, where)
    out = model(input_ids=layout.input_ids, position_ids=layout.position_ids, use_cache=False, **keep)
    logits, values = (out[0], out[2]) if isinstance(out, tuple) else (out.logits, None)
    # a forward that took logits_to_keep returns the kept positions only (the value-head model its values too)
    logits = _kept(logits, layout.keep, cut=bool(keep))  # (n, V)
    values = _kept(values, layout.keep, cut=bool(keep)) if values is not None else None  # (n,)
    if temperature != 1.0:
        logits = logits / temperature
    if critic is not None:
        values = critic(input_ids=layout.input_ids, position_ids=layout.position_ids, logits_to_keep=layout.keep)
    target = targets[layout.segment, layout.column]  # (n,)
    token = logprobs_from_logits(logits[None], target[None])[0]  # (n,)
    region = PackedRegion(unpack_tokens(token, layout.segment, layout.column, layout.shape), None, token, logits,
                          layout)
    if values is not None:
        region.values = region.unpack(values.float())  # (N, K)
    return region


def packed_response_forward(model, batch: RolloutBatch, *, temperature: float = 1.0,
                            max_packed_length: int | None = None, critic=None,
                            where: str = "the rollout forward") -> PackedRegion:
    """:func:`packed_token_logprobs` of a rollout's response tokens (B, R) in ``build_batch``'s layout."""
    L, R = batch.input_ids.shape[1], batch.response_length
    return packed_token_logprobs(model, batch.input_ids[:, :-1], batch.response_ids, batch.attention_mask[:, :-1],
                                 scored=batch.attention_mask[:, L - R:].bool(),  # the real response tokens
                                 max_packed_length=max_packed_length, temperature=temperature, critic=critic,
                                 where=where)


def packed_forward_batch(model, batch: RolloutBatch, critic=None, max_packed_length: int | None = None):
    """``forward_batch`` computed padding-free: log-probs (B, R), values (B, R) or None, logits (B, R, V).

    The logits come back in the padded layout (0 at padding) because PPO's full KL and entropy
    read them per position; ``critic`` as in ``forward_batch``.
    """
    out = packed_response_forward(model, batch, max_packed_length=max_packed_length, critic=critic,
                                  where="the PPO forward")
    return out.logprobs, out.values, out.unpack(out.logits)
