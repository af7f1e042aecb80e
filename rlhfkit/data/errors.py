"""Data errors and where they come from.

Every message this layer raises names the source, the row and the field, so a user can
open the file and fix the line:

    data/train.jsonl line 7 (row 6): field 'chosen' is empty; a preference row needs ...

Source-name mechanism: ``load_records`` returns a plain ``datasets.Dataset`` and writes
one line ``rlhfkit-source: {"name": ..., "line_base": ..., "lines": ...}`` at the end of
``dataset.info.description``. That ``info`` travels with the dataset through
``map``/``filter``/``select``/``shuffle``/``save_to_disk``, so later functions
(``detect_format``, ``validate``, conversions) can name the file without being told.
``source_name(dataset)`` reads it back ("<in-memory dataset>" when absent). Every
function that raises also takes ``source=`` to override it.

Line numbers are exact for the rows as loaded: JSONL row i is line i + 1, CSV row i is
line i + 2 (header), unless blank JSONL lines or multi-line CSV cells shift them, in which
case the exact line of each row is stored in ``lines``. After a shuffle or a split the row
indices no longer match the file, so validate right after loading (``load_records`` does
not reorder anything).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import datasets

IN_MEMORY = "<in-memory dataset>"
_TAG = "rlhfkit-source: "


class DataError(ValueError):
    """Bad input data: the message names the source, the row (and line), the field,
    what was found and what was expected."""


@dataclass(frozen=True)
class Source:
    """Where rows come from: a display name and how to turn a row index into a line.

    ``line_base``: line of row 0 (1 for JSONL, 2 for CSV), None when lines are unknown.
    ``lines``: the exact line of every row when it is not ``row + line_base``.
    """

    name: str = IN_MEMORY
    line_base: int | None = None
    lines: tuple[int, ...] | None = None

    def line(self, row: int) -> int | None:
        """1-based line of a 0-based row, or None when unknown."""
        if self.lines is not None:
            return self.lines[row] if 0 <= row < len(self.lines) else None
        return None if self.line_base is None else row + self.line_base

    def at(self, row: int | None = None) -> str:
        """``"data/x.jsonl line 7 (row 6)"``, ``"<in-memory dataset> row 6"`` or the name."""
        if row is None:
            return self.name
        line = self.line(row)
        return f"{self.name} row {row}" if line is None else f"{self.name} line {line} (row {row})"

    def error(self, row: int | None, message: str) -> DataError:
        """A DataError whose message starts with this source and row."""
        return DataError(f"{self.at(row)}: {message}")

    def without_lines(self) -> Source:
        """Same name, no line numbers (for derived datasets whose rows are not file rows)."""
        return Source(self.name)


def tag_source(dataset: datasets.Dataset, source: Source) -> datasets.Dataset:
    """A shallow copy of ``dataset`` (same Arrow table) whose info records ``source``.

    A copy, not in place: the caller's dataset object (maybe cached by ``datasets``)
    keeps its own description.
    """
    tagged = copy.deepcopy(dataset)  # datasets deep-copies metadata only; the table is shared
    payload = {"name": source.name, "line_base": source.line_base,
               "lines": list(source.lines) if source.lines is not None else None}
    kept = [ln for ln in (dataset.info.description or "").splitlines() if not ln.startswith(_TAG)]
    tagged.info.description = "\n".join(kept + [_TAG + json.dumps(payload)])
    return tagged


def _read_tag(dataset) -> Source | None:
    info = getattr(dataset, "info", None)
    for line in reversed((getattr(info, "description", None) or "").splitlines()):
        if line.startswith(_TAG):
            payload = json.loads(line[len(_TAG):])
            lines = payload.get("lines")
            return Source(payload["name"], payload.get("line_base"), tuple(lines) if lines is not None else None)
    return None


def source_of(dataset, source: str | Source | None = None) -> Source:
    """The ``Source`` for messages: ``source`` if given, else the dataset's tag.

    A plain string ``source`` equal to the tagged name keeps the tag's line numbers.
    """
    if isinstance(source, Source):
        return source
    tagged = _read_tag(dataset)
    if source is None:
        return tagged or Source()
    if tagged is not None and tagged.name == str(source):
        return tagged
    return Source(str(source))


def source_name(dataset) -> str:
    """The display name ``load_records`` attached (file path or hub id), else "<in-memory dataset>"."""
    tagged = _read_tag(dataset)
    return tagged.name if tagged is not None else IN_MEMORY


def describe(value, limit: int = 60) -> str:
    """Short ``type value`` text for messages: ``str 'abc'``, ``int 3``, ``list of 1``."""
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"
