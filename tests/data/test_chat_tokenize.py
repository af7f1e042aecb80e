"""Chat-template rendering, tokenization, truncation and packing."""

import copy

import pytest

from rlhfkit.data import (
    IGNORE_INDEX, DataError, load_records, pack_sequences, render_conversation, render_pair, render_prompt,
    tokenize_dataset, tokenize_pair, tokenize_rating, tokenize_sft, truncate_pair,
)

USER = {"role": "user", "content": "What does the cat do?"}
ANSWER = {"role": "assistant", "content": "the cat sings."}


@pytest.fixture()
def plain_tokenizer(tokenizer):
    """The tiny tokenizer without a chat template (a base model's tokenizer)."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def ids(tokenizer, text, special=False):
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def test_render_with_the_tokenizers_template(tokenizer):
    assert render_prompt(tokenizer, [USER]) == "<|user|>What does the cat do?<|eos|><|assistant|>"
    assert render_pair(tokenizer, [USER], [ANSWER]) == (
        "<|user|>What does the cat do?<|eos|><|assistant|>", "the cat sings.<|eos|>")
    assert render_pair(tokenizer, [USER], "the cat sings.") == render_pair(tokenizer, [USER], [ANSWER])
    assert render_pair(tokenizer, "plain prompt", " plain answer") == ("plain prompt", " plain answer")


def test_render_fallback_without_a_template(plain_tokenizer):
    system = {"role": "system", "content": "Be brief."}
    assert render_prompt(plain_tokenizer, [system, USER]) == (
        "<|system|>\nBe brief.\n<|user|>\nWhat does the cat do?\n<|assistant|>\n")
    assert render_pair(plain_tokenizer, [USER], [ANSWER])[1] == "the cat sings.<|eos|>"


def test_template_that_is_not_prefix_stable(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match="not prefix-stable"):
        render_pair(tok, [USER], [ANSWER])


def test_conversation_segments_mark_every_assistant_turn(tokenizer):
    turns = [USER, ANSWER, {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "joy."}]
    segments = render_conversation(tokenizer, turns)
    assert [answer for _, answer in segments] == [False, True, False, True]
    assert "".join(text for text, _ in segments) == tokenizer.apply_chat_template(turns, tokenize=False)


def test_sft_labels_mask_exactly_the_prompt(tokenizer):
    row = tokenize_sft({"prompt": "the cat", "completion": " sings all night."}, tokenizer, 64)
    prompt, completion = ids(tokenizer, "the cat", special=True), ids(tokenizer, " sings all night.")
    assert row["input_ids"] == prompt + completion + [tokenizer.eos_token_id]
    assert row["labels"] == [IGNORE_INDEX] * len(prompt) + completion + [tokenizer.eos_token_id]
    assert row["attention_mask"] == [1] * len(row["input_ids"])
    full = tokenize_sft({"prompt": "the cat", "completion": " sings"}, tokenizer, 64, completion_only=False)
    assert full["labels"] == full["input_ids"]


def test_sft_eos_is_not_doubled(tokenizer):
    row = tokenize_sft({"prompt": "a", "completion": " b<|eos|>"}, tokenizer, 64)
    assert row["input_ids"][-1] == tokenizer.eos_token_id and row["input_ids"][-2] != tokenizer.eos_token_id


def test_sft_conversation_trains_assistant_turns_only(tokenizer):
    row = tokenize_sft({"messages": [USER, ANSWER]}, tokenizer, 128)
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "the cat sings.<|eos|>"


def test_sft_truncates_from_the_right(tokenizer):
    row = tokenize_sft({"prompt": "the cat", "completion": " sings all night again and again."}, tokenizer, 5)
    assert len(row["input_ids"]) == 5 and row["input_ids"][:2] == ids(tokenizer, "the cat")
    assert row["labels"][:2] == [IGNORE_INDEX] * 2 and row["labels"][2:] == row["input_ids"][2:]


def test_sft_raises_when_no_completion_token_survives(tokenizer):
    with pytest.raises(DataError, match=r"train\.jsonl row 3: no completion token is left after truncating to "
                                        r"max_length=2.*raise max_length"):
        tokenize_sft({"prompt": "the cat sings all night", "completion": " yes"}, tokenizer, 2,
                     index=3, source="train.jsonl")


def test_pair_ids_and_prompt_length(tokenizer):
    row = tokenize_pair({"prompt": "the cat", "chosen": " sings", "rejected": " sleeps", "margin": 1.0},
                        tokenizer, 64)
    prompt = ids(tokenizer, "the cat", special=True)
    eos = tokenizer.eos_token_id
    assert row["prompt_length"] == len(prompt)
    assert row["chosen_input_ids"] == prompt + ids(tokenizer, " sings") + [eos]
    assert row["rejected_input_ids"] == prompt + ids(tokenizer, " sleeps") + [eos]
    assert (row["margin"], row["weight"]) == (1.0, 1.0)


def test_truncate_pair_cuts_completions_first_then_the_prompt_from_the_left():
    prompt, completions = [0, 1, 2], [[10, 11, 12, 13], [20, 21]]
    assert truncate_pair(prompt, completions, 7) == (prompt, completions)  # fits
    assert truncate_pair(prompt, completions, 6) == (prompt, [[10, 11, 12], [20, 21]])  # completions give way
    # Completions keep half the budget (4 of 8), so the prompt loses its start.
    long_prompt = list(range(12))
    assert truncate_pair(long_prompt, [[10, 11, 12, 13, 14, 15]], 8) == ([8, 9, 10, 11], [[10, 11, 12, 13]])


def test_pair_identical_after_truncation_raises(tokenizer):
    example = {"prompt": "the cat", "chosen": " sings all night", "rejected": " sings all day"}
    with pytest.raises(DataError, match=r"row 0: chosen and rejected are identical after truncation"):
        tokenize_pair(example, tokenizer, 4, index=0)


def test_conversational_pair_masks_the_rendered_prompt(tokenizer):
    row = tokenize_pair({"prompt": [USER], "chosen": [ANSWER], "rejected": [{"role": "assistant", "content": "no."}]},
                        tokenizer, 128)
    prompt_text = render_prompt(tokenizer, [USER])
    assert row["prompt_length"] == len(ids(tokenizer, prompt_text))
    assert tokenizer.decode(row["chosen_input_ids"][row["prompt_length"]:]) == "the cat sings.<|eos|>"


def test_rating_tokens(tokenizer):
    row = tokenize_rating({"prompt": "the cat", "response": " sings", "score": "2.5"}, tokenizer, 64)
    assert row == {"input_ids": ids(tokenizer, "the cat", True) + ids(tokenizer, " sings") + [1], "score": 2.5}


def test_tokenize_dataset_names_the_file_line(tmp_path, tokenizer):
    path = tmp_path / "sft.jsonl"
    path.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "the cat sings all night", "completion": " c"}\n')
    records = load_records(path)
    assert tokenize_dataset(records.select([0]), tokenizer, 8).column_names == ["input_ids", "attention_mask",
                                                                                  "labels"]
    with pytest.raises(DataError, match=r"sft\.jsonl line 2 \(row 1\): no completion token"):
        tokenize_dataset(records, tokenizer, 3)


def test_pack_sequences_restarts_positions_and_masks_boundaries():
    rows = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]},
            {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9]}]
    blocks = pack_sequences(rows, 6)
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert blocks[0]["position_ids"] == [0, 1, 2, 0, 1]
    assert blocks[0]["labels"] == [-100, 2, 3, -100, 5]
    assert blocks[1]["labels"] == [-100, 7, 8, 9]
    assert blocks[0]["attention_mask"] == [1] * 5
    with pytest.raises(DataError, match="row 2: 4 tokens, more than max_length=3"):
        pack_sequences(rows, 3)


def test_ranked_pairs_tokenize_and_regroup(tokenizer):
    from rlhfkit.data import PairCollator, to_preference_pairs

    pairs = to_preference_pairs(load_records([{"prompt": "the cat", "responses": [" sings", " runs", " waits"]}]))
    tokenized = tokenize_dataset(pairs, tokenizer, 32, kind="pair").add_column("group", pairs["group"])
    batch = PairCollator(tokenizer.pad_token_id)(list(tokenized))
    assert batch["input_ids"].shape[0] == 6 and batch["group"].tolist() == [0, 0, 0]
