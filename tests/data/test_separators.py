"""TRL's separator rule: text prompt and completion are joined as they are; glued words get one warning."""

import warnings

import datasets
import pytest

from rlhfkit.data import SeparatorWarning, check_separators, load_records, tokenize_dataset, tokenize_sft


def test_glued_rows_warn_once_with_count_and_first_row(tokenizer, tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text('{"prompt": "Explain photosynthesis.", "completion": " Plants use light."}\n'
                    '{"prompt": "Say the first sentence.", "completion": "Plants use light."}\n'
                    '{"prompt": "Q:\\n", "completion": "A."}\n'
                    '{"prompt": "Another sentence.", "completion": "Plants grow."}\n')
    rows = load_records(path)
    with pytest.warns(SeparatorWarning) as caught:
        tokenize_dataset(rows, tokenizer, 64, kind="sft")
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "export.jsonl line 2 (row 1): 2 of 4 rows" in text and "the first sentence.' + 'Plants use light.'" \
        in text and "as TRL does" in text


def test_join_is_unchanged_and_clean_data_is_silent(tokenizer):
    glued = tokenize_sft({"prompt": "one.", "completion": "two"}, tokenizer, 64)
    ids = tokenizer("one.")["input_ids"] + tokenizer("two", add_special_tokens=False)["input_ids"]
    assert glued["input_ids"] == ids + [tokenizer.eos_token_id]  # nothing inserted between them
    clean = datasets.Dataset.from_list([{"prompt": "the band ", "chosen": "plays", "rejected": "waits"},
                                        {"prompt": "a robot", "chosen": " sings", "rejected": " sleeps"}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize_dataset(clean, tokenizer, 64, kind="pair")
    assert check_separators(clean, "pair") == 0


def test_pairs_and_ratings_are_checked_and_messages_are_not(tokenizer):
    pairs = datasets.Dataset.from_list([{"prompt": "Q?", "chosen": "yes", "rejected": " no"}])
    with pytest.warns(SeparatorWarning, match="prompt and the chosen/rejected"):
        assert check_separators(pairs, "pair") == 1
    ratings = datasets.Dataset.from_list([{"prompt": "Q?", "response": "fine", "score": 1.0}])
    with pytest.warns(SeparatorWarning, match="prompt and the response"):
        assert check_separators(ratings, "rating") == 1
    chat = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}], "completion": "x"}])
    assert check_separators(chat, "sft") == 0  # the chat template places the turn markers
