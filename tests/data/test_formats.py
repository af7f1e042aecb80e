"""Format detection and row validation: every bad input names file, line/row and field."""

import json

import pytest

from rlhfkit.data import DataError, common_prefix_at_word, detect_format, load_records, validate


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_unknown_columns_list_every_expected_set(tmp_path):
    records = load_records(write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}]))
    with pytest.raises(DataError) as err:
        detect_format(records)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'odd.jsonl'}: columns ['answer', 'question'] match no known format")
    for fmt in ("language_modeling", "prompt_completion", "conversational", "prompt_only", "preference",
                "ratings", "rankings"):
        assert fmt in message


def test_near_miss_and_mixed_columns():
    with pytest.raises(DataError, match=r"closest: ratings, which also needs \['score'\]"):
        detect_format(load_records([{"prompt": "p", "response": "r"}]))
    with pytest.raises(DataError, match=r"match no known format"):
        detect_format(load_records([{"prompt": "p", "completion": "c", "chosen": "a", "rejected": "b"}]))


def test_metadata_columns_do_not_change_the_format():
    records = load_records([{"id": 7, "prompt": "p", "chosen": "a", "rejected": "b", "weight": 2.0}])
    assert detect_format(records) == "preference"


def test_missing_column_for_a_requested_format(tmp_path):
    records = load_records(write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "chosen": "a"}]))
    with pytest.raises(DataError, match=r"train\.jsonl: missing column\(s\) \['rejected'\] for format 'preference'"):
        validate(records, "preference")


def test_non_numeric_score_in_csv(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("prompt,response,score\nwho?,the cat,3\nwho?,a dog,abc\n")
    with pytest.raises(DataError, match=r"ratings\.csv line 3 \(row 1\): field 'score' must be a number, "
                                        r"found str 'abc'"):
        validate(load_records(path), "ratings")


def test_non_finite_score():
    with pytest.raises(DataError, match=r"row 0: field 'score' must be a finite number"):
        validate(load_records([{"prompt": "p", "response": "r", "score": float("nan")}]), "ratings")


def test_empty_chosen_in_jsonl(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 6 + [{"prompt": "p", "chosen": "", "rejected": "b"}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train\.jsonl line 7 \(row 6\): field 'chosen' is empty; a preference row "
                                        r"needs non-empty 'chosen' and 'rejected'"):
        validate(load_records(path), "preference")


def test_ranking_with_one_response(tmp_path):
    path = tmp_path / "rankings.json"
    path.write_text(json.dumps([{"prompt": "p", "responses": ["a", "b"]}, {"prompt": "q", "responses": ["a"]}]))
    with pytest.raises(DataError, match=r"rankings\.json row 1: field 'responses' has 1 response\(s\); a ranking "
                                        r"needs at least 2"):
        validate(load_records(path), "rankings")


def test_ranking_with_a_repeated_response():
    with pytest.raises(DataError, match=r"row 0: field 'responses' lists the same response at positions 0 and 2"):
        validate(load_records([{"prompt": "p", "responses": ["a", "b", "a"]}]), "rankings")


def test_full_texts_must_start_with_the_prompt(tmp_path):
    rows = [{"prompt": "Q: hi", "chosen": "Q: hi A: hello", "rejected": "Q: hi A: go"},
            {"prompt": "Q: yo", "chosen": "Q: yo A: hey", "rejected": "Q: hey A: no"}]
    path = write_jsonl(tmp_path / "full.jsonl", rows)
    with pytest.raises(DataError, match=r"full\.jsonl line 2 \(row 1\): field 'rejected' does not start with the "
                                        r"prompt"):
        validate(load_records(path), "preference")


def test_implicit_prompt_without_common_prefix(tmp_path):
    path = write_jsonl(tmp_path / "implicit.jsonl", [{"chosen": "yes it is", "rejected": "no it is not"}])
    with pytest.raises(DataError, match=r"implicit\.jsonl line 1 \(row 0\): 'chosen' and 'rejected' share no "
                                        r"common prefix"):
        validate(load_records(path), "preference")


def test_identical_chosen_and_rejected():
    with pytest.raises(DataError, match=r"row 0: 'chosen' and 'rejected' are identical"):
        validate(load_records([{"prompt": "p", "chosen": "a", "rejected": "a"}]), "preference")


def test_bad_messages(tmp_path):
    bad_role = [{"role": "bot", "content": "hi"}]
    no_answer = [{"role": "user", "content": "hi"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": no_answer + [{"role": "assistant", "content": "yo"}]},
                                                 {"messages": bad_role}])
    with pytest.raises(DataError, match=r"chat\.jsonl line 2 \(row 1\): field 'messages' message 0 has role 'bot'"):
        validate(load_records(path), "conversational")
    with pytest.raises(DataError, match=r"field 'messages' must end with an assistant message"):
        validate(load_records([{"messages": no_answer}]), "conversational")


def test_text_prompt_with_message_completion():
    rows = [{"prompt": "hi", "completion": [{"role": "assistant", "content": "yo"}]}]
    with pytest.raises(DataError, match=r"field 'prompt' is a text but field 'completion' is a list of messages"):
        validate(load_records(rows), "prompt_completion")


def test_margin_and_weight_must_be_numbers():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}]
    with pytest.raises(DataError, match=r"field 'margin' must be a number, found str 'big'"):
        validate(load_records(rows), "preference")
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "weight": -1.0}]
    with pytest.raises(DataError, match=r"field 'weight' must be >= 0"):
        validate(load_records(rows), "preference")


def test_wrong_type_names_found_and_expected():
    with pytest.raises(DataError, match=r"field 'text' must be a string, found int 5; a language_modeling row"):
        validate(load_records([{"text": 5}]), "language_modeling")


@pytest.mark.parametrize("a, b, prefix", [
    ("The capital is Paris.", "The capital is Lyon.", "The capital is"),
    ("The answer is forty", "The answer is fifty", "The answer is"),
    ("Answer:\n\nfoo", "Answer:\n\nbar", "Answer:"),
    ("Hi there", "Hi there friend", "Hi"),
    ("Parisian", "Paris is", ""),
    ("x y", "x\tz", "x"),
])
def test_common_prefix_stops_at_a_word_boundary(a, b, prefix):
    assert common_prefix_at_word(a, b) == prefix


@pytest.mark.parametrize("rows,hint", [
    ([{"prompt": "a", "chosen": "b", "reject": "c"}], "rename 'reject' to 'rejected': then it is preference"),
    ([{"question": "a", "answer": "b"}], "rename 'answer' to 'completion', 'question' to 'prompt': then it is "
                                         "prompt_completion"),
    ([{"conversations": [{"role": "user", "content": "hi"}]}], "rename 'conversations' to 'messages'"),
])
def test_columns_that_a_rename_would_fix_name_the_rename(rows, hint):
    import datasets

    with pytest.raises(DataError) as err:
        detect_format(datasets.Dataset.from_list(rows), "rows.jsonl")
    assert hint in str(err.value)


def test_no_rename_hint_when_no_rename_makes_one_format():
    import datasets

    with pytest.raises(DataError) as err:
        detect_format(datasets.Dataset.from_list([{"foo": "a", "bar": "b"}]), "rows.jsonl")
    assert "rename" not in str(err.value)
