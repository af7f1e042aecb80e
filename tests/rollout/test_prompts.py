"""One prompt reader for every command: .txt files (one prompt per line) and every data-layer format."""

import json
from pathlib import Path

import pytest

from rlhfkit import cli
from rlhfkit.data import DataError
from rlhfkit.eval.evaluate import load_prompts as eval_load_prompts
from rlhfkit.rollout.prompts import load_prompts
from rlhfkit.testing import save_tiny

ROOT = Path(__file__).resolve().parents[2]
PROMPTS_TXT = ROOT / "examples" / "data" / "prompts.txt"


def test_a_txt_file_gives_one_prompt_per_non_empty_line_and_no_columns(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("the cat \n\n  \na dog runs\n", encoding="utf-8")
    assert load_prompts(path, "train") == (["the cat ", "a dog runs"], {})
    assert load_prompts(str(path)) == (["the cat ", "a dog runs"], {})


def test_the_example_prompt_file_reads_as_its_lines():
    lines = [line for line in PROMPTS_TXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts, columns = load_prompts(str(PROMPTS_TXT), "train")
    assert prompts == lines and len(prompts) == 40 and columns == {}


def test_eval_reads_prompts_through_the_same_reader(tmp_path):
    assert eval_load_prompts(str(PROMPTS_TXT)) == load_prompts(str(PROMPTS_TXT))[0]
    rows = tmp_path / "p.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "solution": "x"}) + "\n" for p in ("a", "b")))
    assert eval_load_prompts(str(rows)) == ["a", "b"] == load_prompts(str(rows))[0]
    assert eval_load_prompts(["a", 1]) == ["a", "1"]


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_an_empty_txt_file_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=r"empty\.txt: holds no prompts \(one per line\)"):
        load_prompts(str(path), "train")


def test_a_missing_txt_file_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=r"none\.txt: no such file"):
        load_prompts(str(tmp_path / "none.txt"), "train")


@pytest.fixture
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny", hidden_size=32)


def _grpo_argv(policy, out, dataset) -> list[str]:
    return ["grpo", "--model_name_or_path", str(policy), "--dataset_name", str(dataset), "--output_dir", str(out),
            "reward_funcs=[\"examples.online_rewards:rock_words\"]", "max_steps=1", "logging_steps=1",
            "eval_steps=0", "save_steps=0", "per_device_train_batch_size=4", "num_generations=2",
            "max_completion_length=4", "disable_tqdm=true", "report_to=none", "log_completions=true"]


def test_grpo_trains_on_a_txt_prompt_file(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the reward module is named relative to the repository root
    out = tmp_path / "out"
    assert cli.main(_grpo_argv(tiny, out, "examples/data/prompts.txt")) == 0
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    lines = set(PROMPTS_TXT.read_text(encoding="utf-8").splitlines())
    assert rows and all(row["prompt"] in lines for row in rows)


def test_grpo_names_an_empty_txt_prompt_file(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    empty = tmp_path / "blank.txt"
    empty.write_text("\n\n")
    with pytest.raises(SystemExit) as err:
        cli.main(_grpo_argv(tiny, tmp_path / "out", empty))
    assert err.value.code == 2
    assert f"{empty}: holds no prompts (one per line)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_columns_false_reads_the_prompt_column_of_any_rows(tmp_path):
    """Only the prompts wanted (rlhfkit eval, rlhfkit feedback generate): rows with a 'prompt' column give it,
    whatever else they hold; the prompt itself is still checked, by file and line."""
    def rows(name, *records):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return str(path)

    imported = rows("rated.jsonl", {"prompt": "a", "response": "r"}, {"prompt": "b", "response": "s"})
    with pytest.raises(DataError, match="match no known format"):  # every column is wanted: its format must be known
        load_prompts(imported)
    assert load_prompts(imported, columns=False) == (["a", "b"], {})
    unchecked = rows("pc.jsonl", {"prompt": "a", "completion": ""})  # an empty completion, never read
    assert load_prompts(unchecked, columns=False) == (["a"], {})
    chat = rows("chat.jsonl", {"prompt": [{"role": "user", "content": "hi"}], "score": "n/a"})
    assert load_prompts(chat, columns=False) == ([[{"role": "user", "content": "hi"}]], {})
    bad = rows("bad.jsonl", {"prompt": "a", "response": "r"}, {"prompt": "", "response": "r"})
    with pytest.raises(DataError, match=r"bad\.jsonl line 2 \(row 1\): field 'prompt' is empty"):
        load_prompts(bad, columns=False)
    messages = rows("m.jsonl", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]})
    assert load_prompts(messages, columns=False) == ([[{"role": "user", "content": "hi"}]], {})
    assert load_prompts(messages)[1] == {"messages": [[{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "x"}]]}


def test_texts_false_refuses_texts_to_continue(tmp_path):
    path = tmp_path / "lm.jsonl"
    path.write_text(json.dumps({"text": "once upon a time"}) + "\n")
    assert load_prompts(str(path)) == (["once upon a time"], {})
    with pytest.raises(DataError, match=r"lm\.jsonl has no 'prompt' column \(columns: \['text'\]\): its rows are "
                                        r"texts to continue"):
        load_prompts(str(path), texts=False)


def test_a_txt_suffix_in_capitals_is_a_prompt_file(tmp_path):
    path = tmp_path / "P.TXT"
    path.write_text("one\ntwo\n")
    assert load_prompts(str(path)) == (["one", "two"], {})


def test_eval_takes_rows_with_a_prompt_column_whatever_else_they_hold(tmp_path):
    path = tmp_path / "rated.csv"
    path.write_text("prompt,response\nthe cat,sings\na dog,runs\n")
    assert eval_load_prompts(str(path)) == ["the cat", "a dog"]


def test_columns_false_says_the_prompt_column_is_missing(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "why?"}) + "\n")
    with pytest.raises(DataError, match=r"q\.jsonl has no 'prompt' column: columns \['question'\] match no known "
                                        r"format \(rename 'question' to 'prompt'"):
        load_prompts(str(path), columns=False)
