"""Packing: several short SFT examples in one row, so little compute goes to padding.

Rule: examples are taken in order and appended to the current block while it stays
within ``max_length`` tokens; the next example that does not fit starts a new block. No
example is split, so a block is at most ``max_length`` long (padding comes later, in
``SFTCollator``) and the waste per block is smaller than the next example.

Inside a block, ``position_ids`` restart at 0 for each example, so positions match what
the model sees unpacked. The first label of each example is set to -100: a causal LM
predicts token t from tokens < t, and the token before an example's first token belongs
to the previous example, so that prediction must not be trained.

Attention still crosses examples with eager/SDPA attention (the usual packing
approximation). With ``attn_implementation="flash_attention_2"``, Transformers reads the
restarting ``position_ids`` as sequence boundaries and attention stays inside each example.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import DataError
from .tokenize import IGNORE_INDEX


def pack_sequences(tokenized_rows: Iterable[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Pack tokenized SFT rows (``input_ids``, ``labels``) into blocks of <= ``max_length``.

    Returns rows ``{"input_ids", "attention_mask", "labels", "position_ids"}`` (lists of
    one length per row). Raises ``DataError`` for a row longer than ``max_length``
    (tokenize with the same ``max_length`` first).
    """
    blocks: list[dict[str, list[int]]] = []
    block = None
    for i, row in enumerate(tokenized_rows):
        ids, labels = list(row["input_ids"]), list(row["labels"])
        if len(ids) > max_length:
            raise DataError(f"row {i}: {len(ids)} tokens, more than max_length={max_length}; tokenize with the "
                            "same max_length before packing")
        if not ids:
            continue  # an empty row adds nothing to a block
        if block is None or len(block["input_ids"]) + len(ids) > max_length:
            block = {"input_ids": [], "attention_mask": [], "labels": [], "position_ids": []}
            blocks.append(block)
        labels[0] = IGNORE_INDEX  # never predicted from the previous example's last token
        block["input_ids"] += ids
        block["attention_mask"] += [1] * len(ids)
        block["labels"] += labels
        block["position_ids"] += list(range(len(ids)))
    return blocks
