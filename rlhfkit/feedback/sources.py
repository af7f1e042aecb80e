"""Input files and model folders named by users: read them, or refuse naming the file, the line, the path.

Used by ``ingest`` (imports, generation), ``active`` (the reward model) and the CLI (prompt files).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..models.loading import ModelSourceError, check_model_source, check_policy_source, check_reward_model_source
from .base import check_text
from .errors import invalid


def read_records(path: str | Path):
    """``rlhfkit.data.load_records(path)``; any refusal (the data layer names the file and line, also of a
    byte that is not UTF-8) is a 422."""
    from ..data import DataError, load_records

    try:
        return load_records(str(path))
    except DataError as err:
        raise invalid(str(err)) from None


def not_utf8(path: str | Path) -> str:
    """Where a file stops being UTF-8: ``"x.jsonl line 3: not UTF-8 text (byte 0xe9 at column 25) ..."``."""
    data = Path(path).read_bytes()
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            return (f"{path} line {number}: not UTF-8 text (byte 0x{line[err.start]:02x} at column {err.start + 1}); "
                    f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    return f"{path}: not UTF-8 text; save the file as UTF-8"


def at_lines(shown: str, message: str, line_of) -> str:
    """``message`` (about rows counted from 1, as ``import_records`` counts) with each ``row N`` named by its
    file line ``line_of(N - 1)`` where the reader knows it (JSONL, CSV); Parquet rows stay rows."""
    def line(match: re.Match) -> str:
        number = line_of(int(match.group(1)) - 1)
        return match.group(0) if number is None else f"line {number}"

    message = re.sub(r"\brow (\d+)\b", line, message)
    return f"{shown} {message}" if message.startswith(("line ", "row ")) else f"{shown}: {message}"


def model_source(model_path: str | Path, what: str = "policy") -> str:
    """The model folder, or a hub name, checked by the trainers' rule (``models.loading.check_model_source``):
    a path that is not a model folder, or a name that is neither a folder nor a usable hub id, is a 422
    naming it and how to make one, never Transformers' "Repo id must be in the form ...". A "reward model"
    folder must hold a one-label classifier, a "policy" folder must not (the two are easily swapped)."""
    text = check_text(str(model_path).strip(), what)
    if not text:
        raise invalid(f"give the {what}: a folder holding the model and its tokenizer")
    check = {"reward model": check_reward_model_source, "policy": check_policy_source}.get(what, check_model_source)
    try:
        check(text, what)
        path = Path(text).expanduser()
        return str(path) if path.is_dir() else text
    except ModelSourceError as err:
        raise invalid(str(err)) from None
    except (OSError, RuntimeError) as err:  # e.g. a name too long for the file system, or ~nobody
        raise invalid(f"{what} {text[:80]!r} is not a usable path: {err}") from None
