"""DPOTrainer: every loss, references (copy, PEFT, none, precomputed), learning, data shapes."""

import math
from pathlib import Path

import pytest
import torch

from rlhfkit import DPOConfig, DPOTrainer
from rlhfkit.data import DataError, PairCollator
from rlhfkit.testing import hidden_rule_preferences, tiny_causal_lm
from rlhfkit.trainers.dpo import shared_completion_logps
from rlhfkit.trainers.logps import completion_logps

DATA = Path(__file__).parent.parent / "fixtures" / "data"


def _cfg(out, **kw):
    base = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                report_to="jsonl", disable_tqdm=True, max_length=64)
    base.update(kw)
    return DPOConfig(**base)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "robust", "simpo", "orpo"])
def test_each_loss_trains_and_keeps_reference_frozen(tokenizer, tmp_path, loss_type):
    extra = {"label_smoothing": 0.1} if loss_type == "robust" else {}
    trainer = DPOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path, loss_type=loss_type, **extra),
                         train_dataset=hidden_rule_preferences(16, 0), processing_class=tokenizer)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ref_before = None if trainer.ref_model is None else {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    history = trainer.train()
    row = [r for r in history if "train/loss" in r][-1]
    assert torch.isfinite(torch.tensor(row["train/loss"]))
    assert {"train/rewards/chosen", "train/rewards/margins", "train/logps/rejected", "train/logits/chosen"} <= set(row)
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    if loss_type in ("simpo", "orpo"):
        assert trainer.ref_model is None
    else:
        assert all(torch.equal(v, ref_before[k]) for k, v in trainer.ref_model.state_dict().items())


def test_completion_logps_with_logits_to_keep_equal_full_computation(tokenizer, tmp_path):
    trainer = DPOTrainer(model=tiny_causal_lm("llama", tokenizer), args=_cfg(tmp_path),
                         train_dataset=hidden_rule_preferences(6, 0), processing_class=tokenizer)
    batch = PairCollator(tokenizer.pad_token_id)([trainer.train_dataset[i] for i in range(3)])
    model = trainer.model.eval()
    with torch.no_grad():
        fast, *_ = completion_logps(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        labels = batch["labels"][:, 1:]
        naive = torch.stack([sum(logp[i, t, labels[i, t]] for t in range(labels.shape[1]) if labels[i, t] != -100)
                             for i in range(labels.shape[0])])
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prompt_once_logps_equal_concatenated_forward(tokenizer, tmp_path, arch):
    trainer = DPOTrainer(model=tiny_causal_lm(arch, tokenizer), args=_cfg(tmp_path),
                         train_dataset=hidden_rule_preferences(6, 0), processing_class=tokenizer)
    assert trainer.share_prompt
    batch = trainer._collate([trainer.train_dataset[i] for i in range(3)])
    model = trainer.model.double()
    full = completion_logps(model, batch)
    shared = shared_completion_logps(model, batch)
    for name, a, b in zip(["seq", "n_tokens"], full[:2], shared[:2]):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9, msg=name)
    torch.testing.assert_close(shared[4], full[4], rtol=1e-9, atol=1e-9)  # mean logits per row
    g_full = torch.autograd.grad(full[0].sum(), list(model.parameters()), allow_unused=True)
    g_shared = torch.autograd.grad(shared[0].sum(), list(model.parameters()), allow_unused=True)
    for a, b in zip(g_full, g_shared):
        if a is not None:  # llama's rotary tables are float32 even in a float64 model
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_prompt_once_gives_the_same_training_run(tokenizer, tmp_path):
    losses = {}
    for share in (True, False):
        trainer = DPOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / str(share), max_steps=3,
                                                                                 share_prompt=share),
                             train_dataset=hidden_rule_preferences(24, 0), processing_class=tokenizer)
        assert trainer.share_prompt is share
        losses[share] = [r["train/loss"] for r in trainer.train() if "train/loss" in r]
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_dpo_learns_the_hidden_preference(tokenizer, tmp_path):
    trainer = DPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32),
                         args=_cfg(tmp_path, max_steps=40, per_device_train_batch_size=16, learning_rate=2e-3,
                                   beta=0.5, logging_steps=10),
                         train_dataset=hidden_rule_preferences(320, 0), eval_dataset=hidden_rule_preferences(64, 1),
                         processing_class=tokenizer)
    before = trainer.evaluate()["eval/rewards/accuracies"]
    history = trainer.train()
    after = [r for r in history if "eval/rewards/accuracies" in r][-1]["eval/rewards/accuracies"]
    assert after >= 0.9 and after > before + 0.3, (before, after)


def test_precomputed_reference_log_probs_are_cached_and_equal(tokenizer, tmp_path):
    rows = hidden_rule_preferences(8, 0)
    live = DPOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / "live", max_steps=1),
                      train_dataset=rows, processing_class=tokenizer)
    pre = DPOTrainer(model=tiny_causal_lm("gpt2", tokenizer),
                     args=_cfg(tmp_path / "pre", max_steps=1, precompute_ref_log_probs=True),
                     train_dataset=rows, processing_class=tokenizer)
    assert pre.ref_model is None and list((tmp_path / "pre" / "ref_logps").glob("train-*.safetensors"))
    batch_rows = [live.train_dataset[i] for i in range(4)]
    loss_live, _ = live._losses(live.model, live._collate(batch_rows))
    loss_pre, _ = pre._losses(pre.model, pre._collate([pre.train_dataset[i] for i in range(4)]))
    torch.testing.assert_close(loss_pre, loss_live, rtol=1e-5, atol=1e-6)


def test_peft_reference_is_the_adapter_disabled_base(tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_causal_lm("llama", tokenizer),
                                peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainer = DPOTrainer(model=model, args=_cfg(tmp_path, max_steps=3, learning_rate=1e-2),
                         train_dataset=hidden_rule_preferences(12, 0), processing_class=tokenizer)
    assert trainer.ref_model is None
    history = trainer.train()
    first = [r for r in history if "train/rewards/margins" in r][0]
    assert abs(first["train/rewards/margins"]) < 1e-5  # policy == reference before the first update


# file -> (pairs it holds, the first pair's chosen and rejected completions)
SHAPES = {
    "preference_explicit.jsonl": (3, "the cat sings all night.", "a dog sleeps."),
    "preference_chat.jsonl": (2, "the cat sings.", "a dog sleeps."),
    "rankings.json": (7, "the cat sings all night.", "the cat sings."),  # 4 ranked + 2 ranked: 6 + 1 pairs
    "ratings.csv": (3, "the cat sings all night.", "a dog sleeps."),  # the tie (3 vs 3) makes no pair
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_dpo_reads_every_preference_shape(tokenizer, tmp_path, name):
    pairs, chosen, rejected = SHAPES[name]
    trainer = DPOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path, max_steps=1),
                         train_dataset=str(DATA / name), processing_class=tokenizer)
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(rows) == pairs
    for row in rows:  # one prompt, two different completions
        n = row["prompt_length"]
        assert n > 0 and row["chosen_input_ids"][:n] == row["rejected_input_ids"][:n]
        assert row["chosen_input_ids"][n:] != row["rejected_input_ids"][n:]
    first = rows[0]
    assert chosen in tokenizer.decode(first["chosen_input_ids"][first["prompt_length"]:])
    assert rejected in tokenizer.decode(first["rejected_input_ids"][first["prompt_length"]:])
    (row,) = [r for r in trainer.train() if "train/loss" in r]
    assert row["train/loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference: sigmoid(0) each


def test_trainer_methods_are_its_own():
    for name, value in vars(DPOTrainer).items():
        if callable(value) and hasattr(value, "__qualname__"):
            assert value.__qualname__ == f"DPOTrainer.{name}", (name, value.__qualname__)


def test_bad_config_and_data(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(DataError, match="chosen"):
        DPOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path),
                   train_dataset=[{"prompt": "p", "chosen": "", "rejected": "x"}], processing_class=tokenizer)
