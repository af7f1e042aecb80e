"""Load records from files, saved datasets, in-memory data or the Hub.

``load_records`` always returns one ``datasets.Dataset`` whose rows are exactly the
records of the source, in file order: nothing is dropped, fixed or reordered, so row
``i`` is line ``i + 1`` of a JSONL file and line ``i + 2`` of a CSV file (the header is
line 1). The source name travels in ``dataset.info.description`` (see ``errors.py``).

Readers, and the few documented conversions they make:

- ``.jsonl``: one JSON object per line; blank lines are skipped (line numbers stay exact).
- ``.json``: a JSON list of objects, or JSON lines under a ``.json`` name.
- ``.csv``: every cell is text. Columns named ``score``, ``margin`` or ``weight`` become
  floats when every cell parses as a number (else they stay text and ``validate`` names
  the first bad cell). Cells of ``messages`` and ``responses`` are parsed as JSON lists,
  because CSV has no lists.
- ``.parquet``: read with pyarrow as is.
- a folder from ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (``split`` picks).
- a folder of data files: the split comes from the file names (``train.jsonl`` -> train,
  ``test.jsonl`` -> test; see ``folders.py``). A split of several files is checked file by file
  (``detect_format`` and ``validate``, so errors name the file and line) and then concatenated.

Text files must be UTF-8 (a byte-order mark is allowed); a byte that is not names the file,
the line and the byte offset.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.table import InMemoryTable

from .errors import IN_MEMORY, DataError, Source, describe, source_of, tag_source
from .folders import split_files

SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
CSV_NUMERIC_FIELDS = ("score", "margin", "weight")
CSV_JSON_FIELDS = ("messages", "responses")
# Names that are clearly meant as local files: never sent to the Hub when missing.
_PATH_SUFFIXES = SUPPORTED_EXTENSIONS + (".tsv", ".txt", ".arrow", ".gz", ".zst")


def _looks_like_path(shown: str) -> bool:
    """A Hub id is "name" or "owner/name"; anything else that looks like a path stays local."""
    return Path(shown).suffix.lower() in _PATH_SUFFIXES or shown.startswith((".", "/", "~")) or "\\" in shown \
        or shown.count("/") > 1


def is_hub_dataset(source) -> bool:
    """True when :func:`load_records` would send ``source`` to the Hub: a name that is no existing file or
    folder and does not look like a path."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    return not Path(source).expanduser().exists() and not _looks_like_path(str(source))


def use_text_field(dataset: datasets.Dataset, field: str) -> datasets.Dataset:
    """``dataset`` with its column ``field`` read as ``text`` (TRL's ``dataset_text_field``); a ``text`` column
    beside it is left out. ``field == "text"`` changes nothing; a missing column raises ``DataError``."""
    if field == "text":
        return dataset
    source = source_of(dataset)
    if field not in dataset.column_names:
        raise source.error(None, f"has no column {field!r} (dataset_text_field); its columns are "
                                 f"{sorted(dataset.column_names)}")
    kept = dataset.remove_columns([c for c in ("text",) if c in dataset.column_names])
    return tag_source(kept.rename_column(field, "text"), source)


def load_records(source, split: str = "train", name: str | None = None) -> datasets.Dataset:
    """Load ``source`` as one ``datasets.Dataset`` of records (one row per record).

    ``source``: a path to ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet``; a folder written
    by ``save_to_disk`` (a ``DatasetDict`` folder: ``split`` picks the split); a
    ``datasets.Dataset`` (returned unchanged) or ``DatasetDict`` (``split`` picks); a list
    of dicts; otherwise a Hub id for ``datasets.load_dataset(source, name, split=split)``.
    ``split`` and ``name`` are ignored for single files and lists.
    Raises ``DataError`` for missing paths, unknown extensions, malformed lines, rows that
    are not objects, fields whose type changes from row to row, and empty sources.
    """
    if isinstance(source, datasets.Dataset):
        _require_rows(source, source_of(source))
        return source
    if isinstance(source, datasets.DatasetDict):
        return _pick_split(source, split, Source(IN_MEMORY))
    if isinstance(source, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise DataError(f"{IN_MEMORY}: streaming (iterable) datasets are not supported; validation needs "
                        "every row, so load it with streaming=False")
    if isinstance(source, list):
        return rows_to_dataset(source, Source(IN_MEMORY))
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"cannot load records from a {type(source).__name__}; expected a file path, a folder, "
                        "a datasets.Dataset/DatasetDict, a list of dicts or a Hub dataset id")
    shown, path = str(source), Path(source).expanduser()
    if path.is_file():
        return _load_file(path, shown)
    if path.is_dir():
        if any((path / marker).exists() for marker in ("dataset_dict.json", "state.json", "dataset_info.json")):
            return _load_saved(path, shown, split)
        return _load_folder(path, shown, split)
    if _looks_like_path(shown):
        raise DataError(f"{shown}: no such file or folder (looked in {Path.cwd()})")
    return _load_hub(shown, name, split)


def _load_file(path: Path, shown: str) -> datasets.Dataset:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, shown)
    if suffix == ".json":
        return _read_json(path, shown)
    if suffix == ".csv":
        return _read_csv(path, shown)
    if suffix == ".parquet":
        return _read_parquet(path, shown)
    raise DataError(f"{shown}: unknown file extension {path.suffix or '(none)'!r}; supported: "
                    f"{', '.join(SUPPORTED_EXTENSIONS)}, or a folder written by save_to_disk")


def read_text(path, shown: str | None = None) -> str:
    """A text file's content; a byte that is not UTF-8 raises ``DataError`` naming file, line and offset."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{shown or path} line {line}: byte 0x{raw[err.start]:02x} at offset {err.start} is not "
                        "UTF-8 text; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)") from None


def _load_folder(path: Path, shown: str, split: str) -> datasets.Dataset:
    files = split_files(path, shown, SUPPORTED_EXTENSIONS)
    if split not in files:
        raise DataError(f"{shown}: has no split {split!r}; its data files give the splits {sorted(files)} "
                        f"(from their names); pick one with --dataset_split / --eval_dataset_split")
    parts = [_load_file(p, str(p)) for p in files[split]]
    if len(parts) == 1:
        return parts[0]
    from .formats import detect_format, validate

    columns = {p.name: sorted(part.column_names) for p, part in zip(files[split], parts)}
    if len({tuple(c) for c in columns.values()}) > 1:
        raise DataError(f"{shown}: the files of split {split!r} have different columns {columns}; give every file "
                        "the same columns")
    for part in parts:  # rows of a concatenation have no file lines, so check each file first
        validate(part, detect_format(part))
    try:
        joined = datasets.concatenate_datasets([datasets.Dataset(p.data) for p in parts])
    except ValueError as err:
        raise DataError(f"{shown}: the files of split {split!r} ({[p.name for p in files[split]]}) have different "
                        f"columns or types ({err}); give every file the same columns") from None
    return tag_source(joined, Source(f"{shown} (split {split!r})"))


def _lines_source(shown: str, lines: list[int], base: int) -> Source:
    """Store explicit line numbers only when they are not simply ``row + base``."""
    if lines == list(range(base, base + len(lines))):
        return Source(shown, base)
    return Source(shown, None, tuple(lines))


def _read_jsonl(path: Path, shown: str) -> datasets.Dataset:
    rows, lines = [], []
    with io.StringIO(read_text(path, shown)) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{shown} line {number} (row {len(rows)}): malformed JSON ({err.msg} at column "
                                f"{err.colno}); each line must be one JSON object") from None
            if not isinstance(record, dict):
                raise DataError(f"{shown} line {number} (row {len(rows)}): expected a JSON object {{...}}, "
                                f"found {describe(record)}")
            rows.append(record)
            lines.append(number)
    return rows_to_dataset(rows, _lines_source(shown, lines, base=1))


def _read_json(path: Path, shown: str) -> datasets.Dataset:
    text = read_text(path, shown)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several top-level values: JSON lines under a .json name
            return _read_jsonl(path, shown)
        raise DataError(f"{shown} line {err.lineno}: malformed JSON ({err.msg} at column {err.colno}); "
                        "expected a JSON list of objects or one JSON object per line") from None
    if isinstance(records, dict):
        records = [records]  # a single object is one record (JSON lines with one line)
    if not isinstance(records, list):
        raise DataError(f"{shown}: expected a JSON list of objects, found {describe(records)}")
    return rows_to_dataset(records, Source(shown))


def _read_csv(path: Path, shown: str) -> datasets.Dataset:
    rows, lines = [], []
    with io.StringIO(read_text(path, shown), newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise DataError(f"{shown}: empty CSV file; the first line must be a header naming the columns")
        if len(set(header)) != len(header):
            raise DataError(f"{shown} line 1: duplicate column names in the header {header}")
        start = reader.line_num + 1
        for cells in reader:
            if cells:  # csv yields [] for a blank line
                if len(cells) != len(header):
                    raise DataError(f"{shown} line {start} (row {len(rows)}): {len(cells)} cells, but the header "
                                    f"has {len(header)} columns {header}")
                rows.append(dict(zip(header, cells)))
                lines.append(start)
            start = reader.line_num + 1
    source = _lines_source(shown, lines, base=2)
    for field in header:
        if field in CSV_NUMERIC_FIELDS:
            _csv_numbers(rows, field)
        elif field in CSV_JSON_FIELDS:
            _csv_json(rows, field, source)
    return rows_to_dataset(rows, source)


def _csv_numbers(rows: list[dict], field: str) -> None:
    """Turn a numeric column into floats, only when every cell is a number (else leave text)."""
    try:
        values = [float(row[field]) for row in rows]
    except ValueError:
        return  # validate() reports the first cell that is not a number, with its line
    for row, value in zip(rows, values):
        row[field] = value


def _csv_json(rows: list[dict], field: str, source: Source) -> None:
    for i, row in enumerate(rows):
        try:
            row[field] = json.loads(row[field])
        except json.JSONDecodeError as err:
            raise source.error(i, f"field {field!r} must hold a JSON list in CSV ({err.msg}), found "
                                  f"{describe(row[field])}") from None


def _read_parquet(path: Path, shown: str) -> datasets.Dataset:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{shown}: could not read Parquet ({err})") from None
    dataset = datasets.Dataset(InMemoryTable(table))
    _require_rows(dataset, Source(shown))
    return tag_source(dataset, Source(shown))


def rows_to_dataset(rows: list, source: Source) -> datasets.Dataset:
    """Build a dataset from dicts; columns are the union of all keys (absent keys -> None).

    ``Dataset.from_list`` would keep only the first row's keys; here a key missing from
    some rows stays visible as null so ``validate`` can report it.
    """
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise source.error(i, f"expected a record (a dict / JSON object), found {describe(row)}")
    _require_rows(rows, source)
    columns: dict[str, list] = {key: [] for row in rows for key in row}
    for row in rows:
        for key, values in columns.items():
            values.append(row.get(key))
    try:
        dataset = datasets.Dataset.from_dict(columns)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as err:
        raise _type_clash(columns, source, err) from None
    return tag_source(dataset, source)


def _type_clash(columns: dict[str, list], source: Source, err: Exception) -> DataError:
    """Find the first row whose field cannot share one Arrow type with the rows before it."""
    for field, values in columns.items():
        if _arrow_ok(values):
            continue
        lo, hi = 1, len(values)  # invariant: values[:lo] converts, values[:hi] does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _arrow_ok(values[:mid]) else (lo, mid)
        row = hi - 1
        first = next((v for v in values if v is not None), None)
        return source.error(row, f"field {field!r} is {describe(values[row])}, but earlier rows hold "
                                 f"another type (first: {describe(first)}); a field must have one type in every row")
    return source.error(None, f"records could not be stored as a table ({err})")


def _arrow_ok(values: list) -> bool:
    try:
        pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return False
    return True


def _require_rows(rows, source: Source) -> None:
    if len(rows) == 0:
        raise source.error(None, "contains no records")


def _load_saved(path: Path, shown: str, split: str | None) -> datasets.Dataset:
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return _pick_split(loaded, split, Source(f"{shown} (split {split!r})"))
    _require_rows(loaded, Source(shown))
    return tag_source(loaded, Source(shown))


def _pick_split(dataset_dict: datasets.DatasetDict, split: str | None, source: Source) -> datasets.Dataset:
    if split not in dataset_dict:
        raise source.error(None, f"has no split {split!r}; available splits: {sorted(dataset_dict)}")
    dataset = dataset_dict[split]
    _require_rows(dataset, source)
    return tag_source(dataset, source)


def _load_hub(hub_id: str, name: str | None, split: str) -> datasets.Dataset:
    try:
        dataset = datasets.load_dataset(hub_id, name, split=split)
    except Exception as err:  # noqa: BLE001 - any Hub failure means the same thing to the user
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        raise DataError(
            f"{hub_id}: does not exist locally (no such file or folder) and could not be loaded from the "
            f"Hugging Face Hub ({type(err).__name__}: {err}). "
            + ("HF_HUB_OFFLINE is set, so the Hub was not contacted." if offline
               else "Check the dataset id, the network, or set HF_HUB_OFFLINE=1 to work offline.")
        ) from err
    if isinstance(dataset, datasets.DatasetDict):
        return _pick_split(dataset, split, Source(hub_id))
    _require_rows(dataset, Source(hub_id))
    return tag_source(dataset, Source(hub_id))


def train_eval_split(dataset: datasets.Dataset, eval_fraction: float, seed: int = 0,
                     group_column: str = "group") -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Deterministic split into (train, eval); ``eval_fraction == 0`` -> (dataset, None).

    ``eval`` gets ``max(1, round(eval_fraction * n))`` rows, chosen by ``random.Random(seed)``;
    both parts keep file order. When ``group_column`` exists (pairs made from rankings or
    ratings), whole groups are split instead of rows, so no prompt is in both parts
    (otherwise eval accuracy would be inflated by prompts seen in training).
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0:
        return dataset, None
    source = source_of(dataset)
    grouped = group_column in dataset.column_names
    owners = list(dataset[group_column]) if grouped else list(range(len(dataset)))
    keys = list(dict.fromkeys(owners))  # distinct groups (or rows), file order
    n_eval = max(1, round(eval_fraction * len(keys)))
    if n_eval >= len(keys):
        unit = "groups" if grouped else "rows"
        raise source.error(None, f"only {len(keys)} {unit}: too few to hold out {eval_fraction:.0%} for evaluation "
                                 "and keep at least one for training")
    held_out = set(random.Random(seed).sample(keys, n_eval))
    eval_rows = [i for i, key in enumerate(owners) if key in held_out]
    train_rows = [i for i, key in enumerate(owners) if key not in held_out]
    return dataset.select(train_rows), dataset.select(eval_rows)
