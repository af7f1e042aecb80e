"""Loading records from every supported source, and loader errors."""

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from rlhfkit.data import DataError, detect_format, load_records, source_name, train_eval_split, validate

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"

EXPECTED = {
    "sft.jsonl": "language_modeling",
    "prompt_completion.csv": "prompt_completion",
    "chat.jsonl": "conversational",
    "prompts.jsonl": "prompt_only",
    "preference_explicit.jsonl": "preference",
    "preference_chat.jsonl": "preference",
    "ratings.csv": "ratings",
    "rankings.json": "rankings",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_loads_detects_and_validates(name):
    path = str(FIXTURES / name)
    records = load_records(path)
    assert isinstance(records, datasets.Dataset)
    assert source_name(records) == path
    assert detect_format(records) == EXPECTED[name]
    validate(records, EXPECTED[name])


def test_parquet_implicit_preference(tmp_path):
    path = tmp_path / "preference_implicit.parquet"
    pd.DataFrame({"chosen": ["Q: who sings? A: the cat", "Q: who runs? A: a dog"],
                  "rejected": ["Q: who sings? A: nobody", "Q: who runs? A: the river"]}).to_parquet(path)
    records = load_records(path)
    assert detect_format(records) == "preference"
    validate(records, "preference")
    assert source_name(records) == str(path)


def test_saved_dataset_and_dataset_dict_folders(tmp_path):
    rows = {"prompt": ["a", "b"], "completion": [" x", " y"]}
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "single")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({"text": ["t"]})}).save_to_disk(tmp_path / "dict")
    assert detect_format(load_records(tmp_path / "single")) == "prompt_completion"
    assert detect_format(load_records(tmp_path / "dict", split="test")) == "language_modeling"
    train = load_records(str(tmp_path / "dict"))
    assert len(train) == 2 and str(tmp_path / "dict") in source_name(train)
    with pytest.raises(DataError, match=r"no split 'validation'.*'test', 'train'"):
        load_records(tmp_path / "dict", split="validation")


def test_in_memory_sources():
    rows = [{"text": "a b"}, {"text": "c d"}]
    from_list = load_records(rows)
    assert from_list["text"][:] == ["a b", "c d"] and source_name(from_list) == "<in-memory dataset>"
    dataset = datasets.Dataset.from_list(rows)
    assert load_records(dataset) is dataset
    assert len(load_records(datasets.DatasetDict({"train": dataset}))) == 2


def test_keys_missing_from_the_first_row_are_kept_as_null():
    records = load_records([{"prompt": "p", "chosen": "a"}, {"prompt": "p", "chosen": "b", "rejected": "c"}])
    assert records.column_names == ["prompt", "chosen", "rejected"] and records[0]["rejected"] is None
    with pytest.raises(DataError, match=r"<in-memory dataset> row 0: field 'rejected' is missing"):
        validate(records, "preference")


def test_json_lines_under_a_json_name_and_blank_lines(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"text": "a"}\n\n{"text": ""}\n')
    records = load_records(path)
    assert len(records) == 2
    # The blank line 2 is skipped, yet the error points at the real line 3.
    with pytest.raises(DataError, match=r"data\.json line 3 \(row 1\): field 'text' is empty"):
        validate(records, "language_modeling")


def test_malformed_json_line_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"broken\.jsonl line 3 \(row 2\): malformed JSON"):
        load_records(path)


def test_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a"}\n["text"]\n')
    with pytest.raises(DataError, match=r"list\.jsonl line 2 \(row 1\): expected a JSON object"):
        load_records(path)


def test_type_that_changes_between_rows(tmp_path):
    path = tmp_path / "ratings.jsonl"
    lines = [{"prompt": "p", "response": "r", "score": 1}, {"prompt": "p", "response": "s", "score": "abc"}]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    with pytest.raises(DataError, match=r"ratings\.jsonl line 2 \(row 1\): field 'score' is str 'abc'"):
        load_records(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: unknown file extension '\.txt'; supported: \.jsonl, \.json, "
                                        r"\.csv, \.parquet"):
        load_records(path)


def test_missing_file_is_not_sent_to_the_hub():
    with pytest.raises(DataError, match=r"missing/train\.jsonl: no such file or folder"):
        load_records("missing/train.jsonl")


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest already set it before huggingface_hub was imported
    with pytest.raises(DataError, match=r"nobody-here/no-such-dataset: does not exist locally.*Hub.*HF_HUB_OFFLINE"):
        load_records("nobody-here/no-such-dataset")


def test_csv_row_with_wrong_cell_count(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,completion\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"bad\.csv line 3 \(row 1\): 3 cells, but the header has 2"):
        load_records(path)


def test_csv_multiline_cell_keeps_exact_lines(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('prompt,completion\n"two\nlines",b\nc,\n')
    with pytest.raises(DataError, match=r"multi\.csv line 4 \(row 1\): field 'completion' is empty"):
        validate(load_records(path), "prompt_completion")


def test_csv_json_cells_for_lists(tmp_path):
    path = tmp_path / "rankings.csv"
    path.write_text('prompt,responses\nwho?,"[""a"", ""b""]"\nwhat?,not json\n')
    with pytest.raises(DataError, match=r"rankings\.csv line 3 \(row 1\): field 'responses' must hold a JSON list"):
        load_records(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: contains no records"):
        load_records(path)


def test_train_eval_split_is_deterministic():
    records = load_records([{"text": f"t {i}"} for i in range(20)])
    train, held = train_eval_split(records, 0.25, seed=3)
    again_train, again_held = train_eval_split(records, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert held["text"][:] == again_held["text"][:] and train["text"][:] == again_train["text"][:]
    assert set(held["text"]).isdisjoint(train["text"])
    assert train_eval_split(records, 0.0, seed=3) == (records, None)
    with pytest.raises(ValueError):
        train_eval_split(records, 1.0, seed=0)


def test_train_eval_split_keeps_groups_whole():
    pairs = datasets.Dataset.from_dict({"group": [0, 0, 0, 1, 1, 2, 3, 3], "chosen": list("abcdefgh")})
    train, held = train_eval_split(pairs, 0.5, seed=0)
    assert set(train["group"]).isdisjoint(held["group"])
    assert len(train) + len(held) == len(pairs)


# ---- folders of data files (split from the file names, as datasets.load_dataset does) ----
def _write(folder, name, rows):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_folder_of_jsonl_files_splits_by_file_name(tmp_path):
    _write(tmp_path, "train.jsonl", [{"text": "a"}, {"text": "b"}])
    _write(tmp_path, "test.jsonl", [{"text": "c"}])
    (tmp_path / "README.md").write_text("# not data\n")
    assert load_records(tmp_path)["text"] == ["a", "b"]
    assert load_records(tmp_path, split="test")["text"] == ["c"]
    with pytest.raises(DataError, match=r"has no split 'validation'; its data files give the splits \['test', 'train'\]"):
        load_records(tmp_path, split="validation")


def test_split_words_shards_and_hub_layout(tmp_path):
    from rlhfkit.data import split_of

    assert [split_of(Path(n)) for n in ("train.jsonl", "train-00000-of-00002.parquet", "my_dev.csv",
                                        "evaluation.json", "data.jsonl", "train_test.jsonl")] == \
        ["train", "train", "validation", "test", None, None]
    _write(tmp_path / "data", "train-00000-of-00002.jsonl", [{"text": "a"}])
    _write(tmp_path / "data", "train-00001-of-00002.jsonl", [{"text": "b"}, {"text": "c"}])
    loaded = load_records(tmp_path)
    assert loaded["text"] == ["a", "b", "c"] and "split 'train'" in source_name(loaded)


def test_folder_without_split_names_is_all_train_and_errors_keep_file_lines(tmp_path):
    _write(tmp_path, "part1.jsonl", [{"text": "a"}])
    _write(tmp_path, "part2.jsonl", [{"text": "b"}, {"text": ""}])
    with pytest.raises(DataError, match=r"part2.jsonl line 2 \(row 1\): field 'text' is empty"):
        load_records(tmp_path)
    (tmp_path / "part2.jsonl").write_text('{"text": "b"}\n')
    assert load_records(tmp_path)["text"] == ["a", "b"]


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is a folder with no data files"):
        load_records(tmp_path / "empty")
    _write(tmp_path / "mixed", "train.jsonl", [{"text": "a"}])
    _write(tmp_path / "mixed", "more.jsonl", [{"text": "b"}])
    with pytest.raises(DataError, match=r"cannot tell the split of \['more.jsonl'\]"):
        load_records(tmp_path / "mixed")
    _write(tmp_path / "clash", "a_train.jsonl", [{"text": "a"}])
    _write(tmp_path / "clash", "b_train.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(DataError, match="have different columns"):
        load_records(tmp_path / "clash")


# ---- text encoding ----
@pytest.mark.parametrize("name, content, line", [("x.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', 2),
                                                 ("x.json", b'[{"text": "ok"},\n {"text": "caf\xe9"}]', 2),
                                                 ("x.csv", b"text\nok\ncaf\xe9\n", 3)])
def test_non_utf8_bytes_name_file_line_and_offset(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    offset = content.index(b"\xe9")
    with pytest.raises(DataError, match=rf"{name} line {line}: byte 0xe9 at offset {offset} is not UTF-8"):
        load_records(path)
