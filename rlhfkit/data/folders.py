"""Which split each data file of a folder belongs to, from its name (as ``datasets.load_dataset`` does).

    data/                      ->  {"train": [data/train.jsonl], "test": [data/test.jsonl]}
      train.jsonl  test.jsonl
      README.md                    (not a data file: ignored)

A file belongs to a split when a word of its name (split at ``-``, ``_``, ``.``, spaces and
digits) is one of the split's words: train (train, training), validation (validation, valid,
val, dev), test (test, testing, eval, evaluation). Files in a ``data/`` sub-folder count too
(the Hub's layout). When no file names a split, every data file is ``train``. A data file that
names no split while others do is an error rather than silently left out.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError

SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
               "test": ("test", "testing", "eval", "evaluation")}


def split_of(path: Path) -> str | None:
    """The split a file name names, or None (``train-00000-of-00002.parquet`` -> "train")."""
    words = {w for w in re.split(r"[-_.\s\d]+", path.name.lower()) if w}
    found = [split for split, names in SPLIT_WORDS.items() if words & set(names)]
    return found[0] if len(found) == 1 else None


def split_files(folder: Path, shown: str, extensions: tuple[str, ...]) -> dict[str, list[Path]]:
    """{split: sorted data files} of ``folder`` (see the module docstring); raises ``DataError``."""
    candidates = [p for p in sorted(folder.iterdir()) + sorted((folder / "data").glob("*"))
                  if p.is_file() and p.suffix.lower() in extensions]
    if not candidates:
        raise DataError(f"{shown}: is a folder with no data files ({', '.join(extensions)}) and not one written "
                        "by Dataset.save_to_disk; put train.jsonl (and test.jsonl) in it or pass a file")
    named = {p: split_of(p) for p in candidates}
    if all(split is None for split in named.values()):
        return {"train": candidates}
    unnamed = [p.name for p, split in named.items() if split is None]
    if unnamed:
        raise DataError(f"{shown}: cannot tell the split of {unnamed} (other files name theirs); rename each data "
                        f"file to say its split ({', '.join(SPLIT_WORDS)}), e.g. train.jsonl, test.jsonl")
    out: dict[str, list[Path]] = {}
    for path, split in named.items():
        out.setdefault(split, []).append(path)
    return out
