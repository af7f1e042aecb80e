"""TRL's data flags at the data layer: assistant-only labels, the text column, hub dataset configurations."""

import pytest

from rlhfkit.data import IGNORE_INDEX, DataError, is_hub_dataset, load_records, tokenize_sft, use_text_field

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does the cat do?"},
        {"role": "assistant", "content": "the cat sings."}, {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "it sleeps."}]


def _trained(tokenizer, row):
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX])


def test_assistant_only_labels_only_the_assistant_turns(tokenizer):
    row = tokenize_sft({"messages": CHAT}, tokenizer, 256, completion_only=False, assistant_only=True)
    full = tokenize_sft({"messages": CHAT}, tokenizer, 256, completion_only=False)
    assert row["input_ids"] == full["input_ids"] and IGNORE_INDEX not in full["labels"]
    assert _trained(tokenizer, row) == "the cat sings.<|eos|>it sleeps.<|eos|>"
    # every token outside the two answers (system, user turns, role headers) is -100, token for token
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert tokenizer.decode(row["input_ids"]) == rendered
    masked = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label == IGNORE_INDEX])
    assert masked == rendered.replace("the cat sings.<|eos|>", "").replace("it sleeps.<|eos|>", "")
    assert "Be brief." in masked and "<|assistant|>" in masked


def test_assistant_only_on_prompt_completion_messages_trains_every_assistant_turn(tokenizer):
    row = tokenize_sft({"prompt": CHAT[:4], "completion": [CHAT[4]]}, tokenizer, 256, completion_only=False,
                       assistant_only=True)
    assert _trained(tokenizer, row) == "the cat sings.<|eos|>it sleeps.<|eos|>"


def test_assistant_only_refuses_text_rows(tokenizer):
    with pytest.raises(DataError, match=r"data.jsonl row 3: assistant_only_loss needs a conversation"):
        tokenize_sft({"prompt": "the cat", "completion": " sings"}, tokenizer, 64, assistant_only=True, index=3,
                     source="data.jsonl")


def test_text_field_is_read_as_text(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"content": "the cat sings", "text": "ignored", "id": 1}\n{"content": "a dog", "text": "x", "id": 2}\n')
    records = use_text_field(load_records(str(path)), "content")
    assert sorted(records.column_names) == ["id", "text"] and records["text"] == ["the cat sings", "a dog"]
    assert use_text_field(load_records(str(path)), "text")["text"] == ["ignored", "x"]
    with pytest.raises(DataError, match=r"c.jsonl: has no column 'body' \(dataset_text_field\); its columns are "
                                        r"\['content', 'id', 'text'\]"):
        use_text_field(load_records(str(path)), "body")


def test_hub_dataset_names_and_configuration(tmp_path, monkeypatch):
    import datasets

    (tmp_path / "local.jsonl").write_text('{"text": "a"}\n')
    monkeypatch.chdir(tmp_path)
    assert is_hub_dataset("owner/name") and is_hub_dataset("gsm8k")
    assert not is_hub_dataset("local.jsonl") and not is_hub_dataset("data/x.jsonl") and not is_hub_dataset("./x")
    assert not is_hub_dataset([{"text": "a"}]) and not is_hub_dataset(datasets.Dataset.from_list([{"text": "a"}]))
    seen = {}

    def fake_load_dataset(path, name=None, split=None):
        seen.update(path=path, name=name, split=split)
        return datasets.Dataset.from_list([{"text": "a"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    load_records("owner/math", split="test", name="main")
    assert seen == {"path": "owner/math", "name": "main", "split": "test"}
