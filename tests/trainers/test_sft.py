"""SFTTrainer: every data shape and file format, completion-only loss, packing, learning."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit import SFTConfig, SFTTrainer
from rlhfkit.data import DataError
from rlhfkit.testing import tiny_causal_lm

DATA = Path(__file__).parent.parent / "fixtures" / "data"


def _cfg(out, **kw):
    base = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3, logging_steps=1,
                report_to="jsonl", disable_tqdm=True, max_length=64)
    base.update(kw)
    return SFTConfig(**base)


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.iterdir() if p.suffix in (".jsonl", ".json", ".csv", ".parquet")
                                        and not p.name.startswith(("bad", "ratings", "rankings", "prompts"))))
def test_sft_trains_from_each_file(tokenizer, tmp_path, name):
    trainer = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), args=_cfg(tmp_path),
                         train_dataset=str(DATA / name), processing_class=tokenizer)
    history = trainer.train()
    losses = [r["train/loss"] for r in history if "train/loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.model_type == "gpt2"


def test_completion_only_masks_the_prompt(tokenizer, tmp_path):
    rows = [{"prompt": "the cat sings", "completion": " all night."}]
    only = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / "a"), train_dataset=rows,
                      processing_class=tokenizer)
    full = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / "b", completion_only_loss=False),
                      train_dataset=rows, processing_class=tokenizer)
    n_prompt = len(tokenizer("the cat sings")["input_ids"])
    labels_only, labels_full = only.train_dataset[0]["labels"], full.train_dataset[0]["labels"]
    assert labels_only[:n_prompt] == [-100] * n_prompt and -100 not in labels_only[n_prompt:]
    assert -100 not in labels_full


def test_packing_fills_blocks(tokenizer, tmp_path):
    rows = [{"text": f"the cat sings number {i}."} for i in range(20)]
    trainer = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path, packing=True, max_length=48),
                         train_dataset=rows, processing_class=tokenizer)
    assert len(trainer.train_dataset) < 20 and "position_ids" in trainer.train_dataset.column_names
    trainer.train()


def test_sft_learns_completions_and_reports_perplexity(tokenizer, tmp_path):
    rows = [{"prompt": f"{w} says", "completion": " rock song all night."} for w in
            ["the cat", "a dog", "we", "they", "the band", "a robot", "my friend", "the river"] * 6]
    trainer = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32),
                         args=_cfg(tmp_path, max_steps=40, per_device_train_batch_size=8, learning_rate=3e-3,
                                   eval_fraction=0.2, eval_steps=40, logging_steps=10),
                         train_dataset=rows, processing_class=tokenizer)
    before = trainer.evaluate()["eval/loss"]
    history = trainer.train()
    after = [r for r in history if "eval/loss" in r][-1]
    assert after["eval/loss"] < 0.5 * before, (before, after)
    assert after["eval/perplexity"] == pytest.approx(torch.tensor(after["eval/loss"]).exp().item(), rel=1e-5)


@pytest.mark.parametrize("eval_fraction", [0.0, 0.3])
def test_bad_data_names_file_and_true_line(tokenizer, tmp_path, eval_fraction):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "a", "completion": "b"}) + "\n"
    bad.write_text(good * 5 + json.dumps({"prompt": "a", "completion": ""}) + "\n" + good * 4)
    with pytest.raises(DataError, match=r"bad.jsonl line 6"):  # validated before any split
        SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path, eval_fraction=eval_fraction),
                   train_dataset=str(bad), processing_class=tokenizer)


def test_causal_lm_loss_skipping_prompt_logits_equals_full_loss(tokenizer):
    from rlhfkit.trainers.sft import causal_lm_loss

    model = tiny_causal_lm("llama", tokenizer).eval()
    ids = torch.randint(5, 200, (3, 12))
    labels = ids.clone()
    labels[0, :5], labels[1, :7], labels[2, :4] = -100, -100, -100
    labels[2, 10:] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        fast, n = causal_lm_loss(model, batch)
        full = model(input_ids=ids, labels=labels).loss  # Transformers' own shifted loss over all positions
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    assert int(n) == int((labels[:, 1:] != -100).sum())
