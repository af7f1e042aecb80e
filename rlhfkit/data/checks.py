"""Row checks shared by validation and conversions.

``RowCheck`` knows the source, the row and what the format needs, so every failure
reads ``<source> line L (row R): field 'f' <what was found>; <what a row needs>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import datasets

from .errors import Source, describe

ROLES = ("system", "user", "assistant", "tool")


def is_conversational(value) -> bool:
    """True for a list of messages (a conversational prompt / completion)."""
    return isinstance(value, list)


def clean_messages(messages: list[dict]) -> list[dict]:
    """Messages without null-valued keys (Arrow fills absent keys with None)."""
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def iter_rows(dataset: datasets.Dataset, batch_size: int = 1024) -> Iterator[dict]:
    """Rows as dicts, read a batch at a time (much faster than ``for row in dataset``)."""
    for batch in dataset.with_format(None).iter(batch_size=batch_size):  # python objects, not tensors
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys)):
            yield dict(zip(keys, values))


@dataclass(frozen=True)
class RowCheck:
    """Field checks for one row; failures raise ``DataError`` with source, row, field, need."""

    src: Source
    row: int
    need: str

    def fail(self, field: str | None, problem: str) -> NoReturn:
        what = f"field {field!r} {problem}" if field else problem
        raise self.src.error(self.row, f"{what}; {self.need}")

    def present(self, field: str, value) -> None:
        if value is None:
            self.fail(field, "is missing (null)")

    def text(self, field: str, value) -> str:
        self.present(field, value)
        if not isinstance(value, str):
            self.fail(field, f"must be a string, found {describe(value)}")
        if not value.strip():
            self.fail(field, "is empty" if not value else "is only whitespace")
        return value

    def messages(self, field: str, value, final_assistant: bool = False) -> list[dict]:
        self.present(field, value)
        if not isinstance(value, list) or not value:
            self.fail(field, f"must be a non-empty list of {{role, content}} messages, found {describe(value)}")
        for k, message in enumerate(value):
            if not isinstance(message, dict):
                self.fail(field, f"message {k} must be an object with 'role' and 'content', found {describe(message)}")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                self.fail(field, f"message {k} has role {role!r}; roles must be one of {', '.join(ROLES)}")
            if not isinstance(content, str):
                self.fail(field, f"message {k} ({role}) 'content' must be a string, found {describe(content)}")
            if not content.strip():
                self.fail(field, f"message {k} ({role}) has empty 'content'")
        if final_assistant and value[-1]["role"] != "assistant":
            self.fail(field, f"must end with an assistant message, but the last one is {value[-1]['role']!r}")
        return clean_messages(value)

    def text_or_messages(self, field: str, value, final_assistant: bool = False):
        if is_conversational(value):
            return self.messages(field, value, final_assistant)
        return self.text(field, value)

    def number(self, field: str, value) -> float:
        self.present(field, value)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.fail(field, f"must be a number, found {describe(value)}")
        try:
            number = float(value)
        except ValueError:
            self.fail(field, f"must be a number, found {describe(value)}")
        if not math.isfinite(number):
            self.fail(field, f"must be a finite number, found {value!r}")
        return number

    def boolean(self, field: str, value) -> bool:
        """True/False, or the texts "true"/"false" in any case (CSV cells are text); nothing else."""
        self.present(field, value)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.fail(field, f"must be true or false, found {describe(value)}")

    def same_kind(self, first: str, a, second: str, b) -> None:
        """Both texts or both message lists (a text prompt cannot take a message completion)."""
        if is_conversational(a) != is_conversational(b):
            kind = {True: "a list of messages", False: "a text"}
            self.fail(None, f"field {first!r} is {kind[is_conversational(a)]} but field {second!r} is "
                            f"{kind[is_conversational(b)]}; use texts for both or messages for both")
