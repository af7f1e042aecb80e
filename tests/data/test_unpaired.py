"""Unpaired preference data (KTO): detection, row checks, conversions, tokenizing, the collator."""

import warnings
from pathlib import Path

import pytest
import torch

from rlhfkit.data import DataError, detect_format, load_records, to_sft, tokenize_dataset, validate
from rlhfkit.data.collate import UnpairedCollator
from rlhfkit.data.convert import to_unpaired_preference
from rlhfkit.data.tokenize import IGNORE_INDEX, tokenize_unpaired

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"
ROWS = [{"prompt": "Say hi.", "completion": " hi there", "label": True},
        {"prompt": "Say hi.", "completion": " go away", "label": False},
        {"prompt": "Count.", "completion": " one two", "label": True}]


def test_label_makes_prompt_completion_data_unpaired_but_decides_nothing_alone():
    assert detect_format(load_records(ROWS)) == "unpaired_preference"
    assert detect_format(load_records([{"prompt": "p", "completion": " c"}])) == "prompt_completion"
    assert detect_format(load_records([{"text": "t", "label": "news"}])) == "language_modeling"
    assert detect_format(load_records([{"prompt": "p", "label": True}])) == "prompt_only"
    assert detect_format(load_records([{"chosen": "a", "rejected": "b", "label": True}])) == "preference"


def test_rows_are_checked_with_file_and_line(tmp_path):
    path = tmp_path / "fb.csv"
    path.write_text("prompt,completion,label\np, a,TRUE\np, b,false\np, c,maybe\n")
    records = load_records(path)
    with pytest.raises(DataError, match=r"fb\.csv line 4 \(row 2\): field 'label' must be true or false, found "
                                        r"str 'maybe'; an unpaired_preference row needs"):
        validate(records, detect_format(records))
    path.write_text("prompt,completion,label\np, a,TRUE\np, b, false \n")
    assert to_unpaired_preference(load_records(path))["label"] == [True, False]
    with pytest.raises(DataError, match="row 1: field 'label' is missing"):
        validate(load_records([ROWS[0], {"prompt": "p", "completion": " c", "label": None}]), "unpaired_preference")
    with pytest.raises(DataError, match="field 'prompt' is a list of messages but field 'completion' is a text"):
        validate(load_records([{"prompt": [{"role": "user", "content": "hi"}], "completion": "x", "label": True}]),
                 "unpaired_preference")


def test_unpaired_rows_convert_as_they_are():
    out = to_unpaired_preference(load_records(ROWS))
    assert out.column_names == ["prompt", "completion", "label"] and out.to_list() == ROWS


def test_pairs_unpair_as_trl_does():
    pairs = load_records([{"prompt": "P1", "chosen": " good1", "rejected": " bad1"},
                          {"prompt": "P2", "chosen": " good2", "rejected": " bad2"}])
    out = to_unpaired_preference(pairs)
    assert [(r["prompt"], r["completion"], r["label"], r["group"]) for r in out] == [
        ("P1", " good1", True, 0), ("P2", " good2", True, 1), ("P1", " bad1", False, 0), ("P2", " bad2", False, 1)]
    implicit = to_unpaired_preference(load_records([{"chosen": "Q: x? yes", "rejected": "Q: x? no"}]))
    assert [(r["prompt"], r["completion"], r["label"]) for r in implicit] == [("Q: x?", " yes", True),
                                                                              ("Q: x?", " no", False)]
    chat = to_unpaired_preference(load_records(FIXTURES / "preference_chat.jsonl"))
    assert sum(chat["label"]) * 2 == len(chat) and isinstance(chat["completion"][0], list)
    with pytest.raises(DataError, match="cannot make unpaired .* from 'ratings' data"):
        to_unpaired_preference(load_records(FIXTURES / "ratings.csv"))


def test_sft_on_unpaired_feedback_imitates_the_desirable_rows():
    sft = to_sft(load_records(ROWS))
    assert list(zip(sft["prompt"], sft["completion"])) == [("Say hi.", " hi there"), ("Count.", " one two")]
    with pytest.raises(DataError, match="no desirable row"):
        to_sft(load_records([ROWS[1]]))


def test_tokenize_keeps_prompt_and_completion_apart_and_truncates(tokenizer):
    row = {"prompt": "the cat sings all night by the sea", "completion": " the dog walks", "label": False}
    full = tokenize_unpaired(row, tokenizer, 64)
    prompt = tokenizer(row["prompt"])["input_ids"]
    assert full["prompt_ids"] == prompt and full["label"] is False
    assert full["completion_ids"] == tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + \
        [tokenizer.eos_token_id]
    end = tokenize_unpaired(row, tokenizer, 64, max_prompt_length=3)
    start = tokenize_unpaired(row, tokenizer, 64, max_prompt_length=3, truncation_mode="keep_start")
    assert end["prompt_ids"] == prompt[-3:] and start["prompt_ids"] == prompt[:3]
    short = tokenize_unpaired(row, tokenizer, 6)
    assert len(short["prompt_ids"]) + len(short["completion_ids"]) <= 6 and short["completion_ids"]
    with pytest.raises(ValueError, match="truncation_mode"):
        tokenize_unpaired(row, tokenizer, 64, truncation_mode="middle")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenized = tokenize_dataset(to_unpaired_preference(load_records(ROWS)), tokenizer, 64, kind="unpaired")
    assert sorted(tokenized.column_names) == ["completion_ids", "label", "prompt_ids"]


def test_collator_pairs_each_prompt_with_the_previous_rows_completion():
    rows = [{"prompt_ids": [1, 2], "completion_ids": [10, 11, 12], "label": True},
            {"prompt_ids": [3], "completion_ids": [20], "label": False},
            {"prompt_ids": [4, 5, 6], "completion_ids": [30, 31], "label": True}]
    batch = UnpairedCollator(pad_token_id=0, max_length=5)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 10, 11, 12], [3, 20, 0, 0, 0], [4, 5, 6, 30, 31]]
    P = IGNORE_INDEX
    assert batch["labels"].tolist() == [[P, P, 10, 11, 12], [P, 20, P, P, P], [P, P, P, 30, 31]]
    assert batch["label"].tolist() == [True, False, True] and batch["label"].dtype == torch.bool
    assert batch["prompt_lengths"].tolist() == [2, 1, 3]
    # prompt i + completion of row i - 1 (row 0 takes the last one's); [4, 5, 6] + [20] fits, [3] + [10, 11, 12] too
    assert batch["kl_input_ids"].tolist() == [[1, 2, 30, 31], [3, 10, 11, 12], [4, 5, 6, 20]]
    assert batch["kl_labels"].tolist() == [[P, P, 30, 31], [P, 10, 11, 12], [P, P, P, 20]]
    assert batch["kl_attention_mask"].tolist() == [[1, 1, 1, 1]] * 3
    # a mismatched sequence longer than max_length is cut like any pair (completion first)
    cut = UnpairedCollator(pad_token_id=0, max_length=4)([rows[0], rows[2]])
    assert cut["kl_input_ids"].tolist()[1] == [5, 6, 10, 11]
    fixed = UnpairedCollator(pad_token_id=0, max_length=8)([{**r, "kl_completion_ids": [99]} for r in rows])
    assert fixed["kl_input_ids"][:, -1].tolist() == [0, 0, 99] and "kl_input_ids" not in \
        UnpairedCollator(pad_token_id=0, max_length=8, kl=False)(rows)
