"""Collators: lists of tokenized rows -> dicts of padded tensors (for ``DataLoader(collate_fn=...)``).

Padding side. All collators pad on the right by default, because training reads
sequences from position 0: a causal LM's log-probs line up with ``labels`` and with
positions 0..len-1 (Transformers models without explicit ``position_ids`` number
positions from the left edge, so left padding would shift every position), and a reward
model's last-token pooling finds the last real token at ``attention_mask.sum(-1) - 1``.
``padding_side="left"`` is offered for SFT and pairs where a caller needs it (e.g. to
reuse batches for generation); labels and masks are built per row before padding, so
they stay correct on either side.

If ``pad_token_id`` equals the eos id, models that locate the last token by searching
for the pad id will stop before the eos; prefer a distinct pad token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenize import IGNORE_INDEX, truncate_pair

_SIDES = ("right", "left")


def pad(rows: list[list[int]], value: int, side: str = "right", multiple: int | None = None,
        dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Stack lists of different lengths into a (B, T) tensor, T = longest (rounded up to ``multiple``)."""
    if side not in _SIDES:
        raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
    length = max(len(r) for r in rows)
    if multiple:
        length = -(-length // multiple) * multiple
    out = torch.full((len(rows), length), value, dtype=dtype)  # (B, T)
    for i, row in enumerate(rows):
        if row:
            values = torch.as_tensor(row, dtype=dtype)
            if side == "right":
                out[i, : len(row)] = values
            else:
                out[i, length - len(row):] = values
    return out


@dataclass(frozen=True)
class SFTCollator:
    """Rows from ``tokenize_sft`` / ``pack_sequences`` -> batch for a causal LM.

    Returns ``input_ids`` (B, T) padded with ``pad_token_id``, ``attention_mask`` (B, T)
    0 on padding, ``labels`` (B, T) padded with -100, and ``position_ids`` (B, T) padded
    with 0 when the rows have them (packed rows).
    """

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        side, multiple = self.padding_side, self.pad_to_multiple_of
        ids = [list(r["input_ids"]) for r in rows]
        masks = [list(r.get("attention_mask") or [1] * len(i)) for r, i in zip(rows, ids)]
        labels = [list(r["labels"]) if r.get("labels") is not None else list(i) for r, i in zip(rows, ids)]
        batch = {
            "input_ids": pad(ids, self.pad_token_id, side, multiple),  # (B, T)
            "attention_mask": pad(masks, 0, side, multiple),  # (B, T)
            "labels": pad(labels, IGNORE_INDEX, side, multiple),  # (B, T)
        }
        if rows and rows[0].get("position_ids") is not None:
            batch["position_ids"] = pad([list(r["position_ids"]) for r in rows], 0, side, multiple)  # (B, T)
        return batch


@dataclass(frozen=True)
class PairCollator:
    """Rows from ``tokenize_pair`` -> one concatenated batch for a reward model or DPO.

    One forward pass scores both sides: rows 0..B-1 are the chosen sequences and rows
    B..2B-1 the rejected ones, in the same order (row b and row B + b are one pair).
    Returns ``input_ids`` (2B, T), ``attention_mask`` (2B, T), ``labels`` (2B, T) = the
    ids with -100 on the prompt and on padding (DPO's completion log-probs),
    ``prompt_lengths`` (2B,), ``margin`` (B,) and ``weight`` (B,) float, and ``group``
    (B,) when the rows have one. With ``split_prompt=True`` also the prompt-once layout of
    :func:`split_prompt_batch` (for ``rlhfkit.models.shared_prompt_forward``).
    """

    pad_token_id: int
    padding_side: str = "right"
    split_prompt: bool = False

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [list(r["chosen_input_ids"]) for r in rows] + [list(r["rejected_input_ids"]) for r in rows]
        prompt_lengths = [int(r["prompt_length"]) for r in rows] * 2
        labels = [[IGNORE_INDEX] * p + s[p:] for s, p in zip(seqs, prompt_lengths)]
        side = self.padding_side
        batch = {
            "input_ids": pad(seqs, self.pad_token_id, side),  # (2B, T)
            "attention_mask": pad([[1] * len(s) for s in seqs], 0, side),  # (2B, T)
            "labels": pad(labels, IGNORE_INDEX, side),  # (2B, T)
            "prompt_lengths": torch.tensor(prompt_lengths, dtype=torch.long),  # (2B,)
            "margin": torch.tensor([float(r.get("margin") or 0.0) for r in rows]),  # (B,)
            "weight": torch.tensor([1.0 if r.get("weight") is None else float(r["weight"]) for r in rows]),  # (B,)
        }
        if rows and rows[0].get("group") is not None:
            batch["group"] = torch.tensor([int(r["group"]) for r in rows], dtype=torch.long)  # (B,)
        if self.split_prompt:
            batch.update(split_prompt_batch(seqs, prompt_lengths, self.pad_token_id))
        return batch


def split_prompt_batch(seqs: list[list[int]], prompt_lengths: list[int], pad_token_id: int) -> dict[str, torch.Tensor]:
    """The prompt once per pair (left-padded) and the 2B completions (right-padded); see models/shared_prompt.py."""
    half = len(seqs) // 2
    prompts = [s[:p] for s, p in zip(seqs[:half], prompt_lengths[:half])]
    completions = [s[p:] for s, p in zip(seqs, prompt_lengths)]
    return {
        "prompt_input_ids": pad(prompts, pad_token_id, "left"),  # (B, P)
        "prompt_attention_mask": pad([[1] * len(p) for p in prompts], 0, "left"),  # (B, P)
        "completion_input_ids": pad(completions, pad_token_id, "right"),  # (2B, C)
        "completion_attention_mask": pad([[1] * len(c) for c in completions], 0, "right"),  # (2B, C)
    }


@dataclass(frozen=True)
class UnpairedCollator:
    """Rows from ``tokenize_unpaired`` -> a KTO batch: each row's own sequence and a mismatched one.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (B, T) (labels -100 on prompt and
    padding), ``prompt_lengths`` (B,) and ``label`` (B,) bool. With ``kl=True`` also
    ``kl_input_ids``, ``kl_attention_mask``, ``kl_labels`` (B, T') and ``kl_prompt_lengths`` (B,):
    prompt i joined with the completion of row i - 1 (row 0 takes the last row's), TRL's
    shift by one, so the mismatched completions are the batch's own completions on other
    prompts. Rows that carry ``kl_completion_ids`` (a pairing fixed over the whole dataset, for
    precomputed reference log-probs) use those instead. A mismatched sequence longer than
    ``max_length`` is cut by ``truncate_pair``.
    """

    pad_token_id: int
    max_length: int
    kl: bool = True
    padding_side: str = "right"

    def _sequences(self, prompts: list[list[int]], completions: list[list[int]], prefix: str) -> dict:
        seqs = [p + c for p, c in zip(prompts, completions)]
        side = self.padding_side
        return {
            f"{prefix}input_ids": pad(seqs, self.pad_token_id, side),  # (B, T)
            f"{prefix}attention_mask": pad([[1] * len(s) for s in seqs], 0, side),  # (B, T)
            f"{prefix}labels": pad([[IGNORE_INDEX] * len(p) + c for p, c in zip(prompts, completions)],
                                   IGNORE_INDEX, side),  # (B, T)
            f"{prefix}prompt_lengths": torch.tensor([len(p) for p in prompts], dtype=torch.long),  # (B,)
        }

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [list(r["prompt_ids"]) for r in rows]
        completions = [list(r["completion_ids"]) for r in rows]
        batch = self._sequences(prompts, completions, "")
        batch["label"] = torch.tensor([bool(r["label"]) for r in rows], dtype=torch.bool)  # (B,)
        if self.kl:
            if rows and rows[0].get("kl_completion_ids") is not None:  # a pairing fixed beforehand
                shifted = [list(r["kl_completion_ids"]) for r in rows]
            else:
                shifted = completions[-1:] + completions[:-1]  # row i gets row i-1's completion
            fitted = [truncate_pair(p, [c], self.max_length) for p, c in zip(prompts, shifted)]
            batch.update(self._sequences([p for p, _ in fitted], [c for _, (c,) in fitted], "kl_"))
        return batch


@dataclass(frozen=True)
class RatingCollator:
    """Rows from ``tokenize_rating`` -> ``input_ids`` (B, T), ``attention_mask`` (B, T), ``score`` (B,) float."""

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids = [list(r["input_ids"]) for r in rows]
        return {
            "input_ids": pad(ids, self.pad_token_id, self.padding_side),  # (B, T)
            "attention_mask": pad([[1] * len(i) for i in ids], 0, self.padding_side),  # (B, T)
            "score": torch.tensor([float(r["score"]) for r in rows]),  # (B,)
        }
