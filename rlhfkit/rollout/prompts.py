"""Prompt sets for every command that samples (``rlhfkit ppo``, ``grpo``, ``rloo``, ``eval``, ``compare``,
``feedback generate``): rows -> prompts + reward columns.

``load_prompts`` is the one reader. A ``.txt`` file holds one prompt per non-empty line (no other
columns); every format the data layer reads gives prompts too (``rlhfkit.data.formats``):

    prompt_only, prompt_completion, ratings, rankings   the ``prompt`` column
    preference                                          the prompt of each pair (explicit or shared prefix)
    conversational                                      the messages before the last assistant turn
    language_modeling                                   the text itself, to be continued

A prompt is a text or a list of messages; messages are rendered with the tokenizer's chat
template (``data.render_prompt``, generation prompt appended). Every other column is kept and
handed to reward functions as keyword arguments, as TRL does (``solution=...``,
``ground_truth=...``); a conversational row's ``messages`` and a prompt-completion row's
``completion`` are passed too (a reference answer to compare against).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from .. import data
from ..data.checks import clean_messages


def prompts_from_records(records, fmt: str) -> tuple[list, dict[str, list]]:
    """(prompts, columns) of validated ``records`` in format ``fmt`` (see the module table)."""
    names = list(records.column_names)
    if fmt == "preference":
        pairs = data.to_preference_pairs(records, fmt)
        return list(pairs["prompt"]), {k: list(pairs[k]) for k in pairs.column_names
                                       if k not in ("prompt", "chosen", "rejected")}
    if fmt == "conversational":
        prompts = []
        for messages in records["messages"]:
            messages = clean_messages(messages)
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            if last == 0:
                raise data.DataError(f"{data.source_name(records)}: a conversation starts with the assistant, so "
                                     "there is no prompt before its answer; begin it with a user (or system) message")
            prompts.append(messages[:last])
    elif fmt == "language_modeling":
        prompts = list(records["text"])
    else:  # prompt_only, prompt_completion, ratings, rankings
        prompts = [clean_messages(p) if isinstance(p, list) else p for p in records["prompt"]]
    drop = {"prompt", "text"}
    return prompts, {k: list(records[k]) for k in names if k not in drop}


def load_prompts(source, split: str = "train", name: str | None = None, *, columns: bool = True,
                 texts: bool = True) -> tuple[list, dict[str, list]]:
    """Load, validate (``DataError`` names file, line and field) and turn into (prompts, columns).

    ``source``: a ``.txt`` file (one prompt per non-empty line; no columns) or anything
    ``data.load_records`` reads (``split`` picks the split of a folder, saved or hub dataset,
    ``name`` a hub dataset's configuration).
    ``columns=False``: only the prompts are wanted (``rlhfkit eval``, ``rlhfkit feedback generate``):
    rows with a ``prompt`` column are read for it alone, whatever else they hold (the feedback
    app's ``prompt`` + ``response`` rows, a ratings file without scores), and no columns come back.
    ``texts=False``: plain-text rows (``language_modeling``: a ``text`` to continue) are refused,
    for a command that must show a prompt to people."""
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".txt":
        return _text_prompts(source), {}
    records = data.load_records(source, split=split, name=name)
    if not columns and "prompt" in records.column_names:
        records = records.select_columns(["prompt"])
        data.validate(records, "prompt_only")
        return prompts_from_records(records, "prompt_only")[0], {}
    try:
        fmt = data.detect_format(records)
    except data.DataError as err:
        if columns:
            raise
        name = data.source_name(records)  # the 'prompt' column is what a prompt set is expected to have
        raise data.DataError(f"{name} has no 'prompt' column: {str(err).removeprefix(name + ': ')}") from None
    if fmt == "language_modeling" and not texts:
        raise data.DataError(f"{data.source_name(records)} has no 'prompt' column (columns: "
                             f"{sorted(records.column_names)}): its rows are texts to continue, not prompts; give "
                             "rows with a 'prompt' column, conversations ('messages') or preference pairs, or a .txt "
                             "file (one prompt per line)")
    data.validate(records, fmt)
    prompts, found = prompts_from_records(records, fmt)
    return prompts, found if columns else {}


def _text_prompts(source) -> list[str]:
    """The non-empty lines of a UTF-8 ``.txt`` file, as they are; a missing or empty file is a ``DataError``."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise data.DataError(f"{source}: no such file (a .txt file of prompts, one per line)")
    prompts = [line for line in data.read_text(path, str(source)).splitlines() if line.strip()]
    if not prompts:
        raise data.DataError(f"{source}: holds no prompts (one per line)")
    return prompts


def split_prompts(prompts: list, columns: dict, fraction: float, seed: int):
    """Hold out ``fraction`` of the prompts (seeded): ((train, train_columns), (eval, eval_columns) or None)."""
    if not fraction:
        return (prompts, columns), None
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(fraction * len(prompts)))
    if n_eval >= len(prompts):
        raise ValueError(f"eval_fraction={fraction} leaves no training prompt out of {len(prompts)}")
    held, kept = sorted(order[:n_eval]), sorted(order[n_eval:])
    pick = (lambda idx: ([prompts[i] for i in idx], {k: [v[i] for i in idx] for k, v in columns.items()}))
    return pick(kept), pick(held)


def render_prompts(tokenizer, prompts: list) -> list[str]:
    """Texts as they are; message lists through the chat template (generation prompt appended)."""
    return [data.render_prompt(tokenizer, p) for p in prompts]


class PromptSampler:
    """Prompt indices in a seeded random order, re-shuffled from ``seed + epoch`` each epoch.

    Its whole state is (epoch, position), so a checkpoint restores the exact next prompts.
    A request that crosses the end of an epoch finishes it and continues in the next one.
    """

    def __init__(self, n: int, seed: int):
        if n == 0:
            raise ValueError("the prompt dataset is empty")
        self.n, self.seed, self.epoch, self.position = n, seed, 0, 0

    def _order(self) -> list[int]:
        order = list(range(self.n))
        random.Random(self.seed + self.epoch).shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            order = self._order()
            part = order[self.position:self.position + k - len(out)]
            out += part
            self.position += len(part)
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
