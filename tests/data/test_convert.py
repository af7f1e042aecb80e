"""Conversions between formats."""

from pathlib import Path

import pytest

from rlhfkit.data import DataError, load_records, source_name, to_preference_pairs, to_regression, to_sft

FIXTURES = Path(__file__).parent.parent / "fixtures" / "data"


def test_ranking_of_four_gives_six_ordered_pairs():
    records = load_records([{"prompt": "p", "responses": ["A", "B", "C", "D"]},
                            {"prompt": "q", "responses": ["E", "F"]}])
    pairs = to_preference_pairs(records, "rankings")
    assert [(r["chosen"], r["rejected"]) for r in pairs][:6] == [
        ("A", "B"), ("A", "C"), ("A", "D"), ("B", "C"), ("B", "D"), ("C", "D")]
    assert pairs["group"][:] == [0] * 6 + [1]
    assert set(pairs["margin"]) == {0.0} and set(pairs["weight"]) == {1.0}
    assert pairs.column_names == ["prompt", "chosen", "rejected", "margin", "weight", "group"]


def test_ratings_drop_ties_and_use_score_differences():
    pairs = to_preference_pairs(load_records(FIXTURES / "ratings.csv"))
    got = [(r["prompt"], r["chosen"], r["rejected"], r["margin"], r["group"]) for r in pairs]
    assert got == [
        ("What does the cat do?", "the cat sings all night.", "a dog sleeps.", 2.0, 0),
        ("What does the cat do?", "the cat walks.", "a dog sleeps.", 2.0, 0),  # sings (3) vs walks (3): a tie
        ("Who reads?", "the teacher reads.", "nobody.", 1.5, 1),
    ]
    assert source_name(pairs) == str(FIXTURES / "ratings.csv")


def test_ratings_of_one_response_by_several_annotators_are_averaged():
    rows = [{"prompt": "p", "response": "a", "score": 1, "annotator": "x"},
            {"prompt": "p", "response": "a", "score": 3, "annotator": "y"},
            {"prompt": "p", "response": "b", "score": 1, "annotator": "x"}]
    pairs = to_preference_pairs(load_records(rows))
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in pairs] == [("a", "b", 1.0)]


def test_ratings_with_only_ties_raise():
    rows = [{"prompt": "p", "response": "a", "score": 1}, {"prompt": "p", "response": "b", "score": 1}]
    with pytest.raises(DataError, match="no preference pairs"):
        to_preference_pairs(load_records(rows))


def test_explicit_preference_keeps_margin_and_weight():
    pairs = to_preference_pairs(load_records(FIXTURES / "preference_explicit.jsonl"))
    assert pairs[0] == {"prompt": "What does the cat do?", "chosen": " the cat sings all night.",
                        "rejected": " a dog sleeps.", "margin": 1.5, "weight": 1.0}
    weighted = load_records([{"prompt": "p", "chosen": "a", "rejected": "b", "weight": 0.25}])
    assert to_preference_pairs(weighted)["weight"][:] == [0.25]


def test_full_texts_lose_their_prompt_and_implicit_prompts_are_found():
    full = load_records([{"prompt": "Q: hi", "chosen": "Q: hi A: hello", "rejected": "Q: hi A: go"}])
    assert to_preference_pairs(full)[0]["chosen"] == " A: hello"
    implicit = load_records([{"chosen": "Q: hi A: hello", "rejected": "Q: hi A: go away"}])
    row = to_preference_pairs(implicit)[0]
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Q: hi A:", " hello", " go away")


def test_conversational_preference_keeps_message_lists():
    pairs = to_preference_pairs(load_records(FIXTURES / "preference_chat.jsonl"))
    assert pairs[0]["prompt"] == [{"role": "user", "content": "What does the cat do?"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "the cat sings."}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "a dog sleeps."}]


def test_explicit_prompt_is_stripped_from_full_conversations():
    user = {"role": "user", "content": "hi"}
    rows = [{"prompt": [user], "chosen": [user, {"role": "assistant", "content": "a"}],
             "rejected": [user, {"role": "assistant", "content": "b"}]}]
    pair = to_preference_pairs(load_records(rows))[0]
    assert pair["prompt"] == [user] and pair["chosen"] == [{"role": "assistant", "content": "a"}]


def test_implicit_conversation_needs_one_final_assistant_message():
    user = {"role": "user", "content": "hi"}
    rows = [{"chosen": [user, {"role": "assistant", "content": "a"}],
             "rejected": [user, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}]
    with pytest.raises(DataError, match=r"row 0: field 'rejected' has 2 message\(s\) after the 1 it shares"):
        to_preference_pairs(load_records(rows))


def test_message_prompt_with_text_responses():
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "responses": ["good", "bad"]}]
    pair = to_preference_pairs(load_records(rows))[0]
    assert pair["chosen"] == [{"role": "assistant", "content": "good"}]


def test_to_regression():
    out = to_regression(load_records(FIXTURES / "ratings.csv"))
    assert out.column_names == ["prompt", "response", "score"] and len(out) == 5
    assert out[3] == {"prompt": "Who reads?", "response": "the teacher reads.", "score": 2.5}
    with pytest.raises(DataError, match="missing column"):
        to_regression(load_records([{"text": "x"}]))


@pytest.mark.parametrize("name, first", [
    ("sft.jsonl", {"prompt": "", "completion": "the cat sings all night."}),
    ("prompt_completion.csv", {"prompt": "Finish the line: the cat", "completion": " sings all night."}),
    ("preference_explicit.jsonl", {"prompt": "What does the cat do?", "completion": " the cat sings all night."}),
    ("rankings.json", {"prompt": "What does the cat do?", "completion": "the cat sings all night."}),
])
def test_to_sft_texts(name, first):
    assert to_sft(load_records(FIXTURES / name))[0] == first


def test_to_sft_conversations():
    chat = to_sft(load_records(FIXTURES / "chat.jsonl"))
    assert chat.column_names == ["messages"] and len(chat[1]["messages"]) == 4
    prefs = to_sft(load_records(FIXTURES / "preference_chat.jsonl"))
    assert prefs[0]["messages"] == [{"role": "user", "content": "What does the cat do?"},
                                    {"role": "assistant", "content": "the cat sings."}]


def test_to_sft_refuses_data_without_a_target():
    with pytest.raises(DataError, match="are prompt_only data, which has no completion"):
        to_sft(load_records(FIXTURES / "prompts.jsonl"))
