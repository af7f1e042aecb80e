"""RewardTrainer: pairs, rankings, ratings (pairs or regression), learning, plain-Transformers loading."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhfkit import (AutoModelForCausalLMWithValueHead, CriticModel, PPOConfig, PPOTrainer, RewardConfig, RewardModel,
                     RewardTrainer)
from rlhfkit.testing import hidden_rule_preferences as hidden_rule_pairs
from rlhfkit.testing import tiny_causal_lm, tiny_reward_model

DATA = Path(__file__).parent.parent / "fixtures" / "data"


def _cfg(out, **kw):
    base = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                logging_steps=1, report_to="jsonl", disable_tqdm=True, max_length=64)
    base.update(kw)
    return RewardConfig(**base)


def test_reward_model_learns_hidden_rule_and_loads_in_plain_transformers(tokenizer, tmp_path):
    trainer = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer, hidden_size=32),
                            args=_cfg(tmp_path, max_steps=60, per_device_train_batch_size=16, learning_rate=3e-3,
                                      logging_steps=20),
                            train_dataset=hidden_rule_pairs(400, 0), eval_dataset=hidden_rule_pairs(100, 1),
                            processing_class=tokenizer)
    before = trainer.evaluate()["eval/accuracy"]
    history = trainer.train()
    after = [r for r in history if "eval/accuracy" in r][-1]["eval/accuracy"]
    assert after >= 0.9 and after > before + 0.2, (before, after)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["the band 1 rock song night", "the band 1 waits sleeps reads"]
    with torch.no_grad():  # RewardModel closes a text with EOS, as training closed every response
        direct = [plain(input_ids=torch.tensor([tok(t)["input_ids"] + [tok.eos_token_id]])).logits.item()
                  for t in texts]
    scored = RewardModel(str(tmp_path)).score(texts)
    assert scored == pytest.approx(direct, abs=1e-5)
    assert scored[0] > scored[1]


def test_rankings_become_all_pairs_and_group_batching(tokenizer, tmp_path):
    trainer = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer), args=_cfg(tmp_path, group_by_prompt=True),
                            train_dataset=str(DATA / "rankings.json"), processing_class=tokenizer)
    groups = list(trainer.train_dataset["group"])
    assert groups == [0] * 6 + [1]  # 4 ranked responses give 6 pairs, 2 give 1
    order = list(trainer.loop.sampler_fn(trainer.train_dataset, 0))
    assert sorted(order) == list(range(7))
    where = [i for i, row in enumerate(order) if groups[row] == 0]
    assert where == list(range(where[0], where[0] + 6))  # one prompt's pairs stay together
    losses = [row["train/loss"] for row in trainer.train() if "train/loss" in row]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_ratings_as_pairs_and_as_regression_with_classification_metrics(tokenizer, tmp_path):
    pairs = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer), args=_cfg(tmp_path / "p"),
                          train_dataset=str(DATA / "ratings.csv"), processing_class=tokenizer)
    assert pairs.objective == "pairwise"
    pairs.train()
    reg = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer),
                        args=_cfg(tmp_path / "r", ratings_as="regression", rating_threshold=3.0, eval_fraction=0.3),
                        train_dataset=str(DATA / "ratings.csv"), processing_class=tokenizer)
    assert reg.objective == "regression"
    history = reg.train()
    final = [r for r in history if "eval/mse" in r][-1]
    assert {"eval/accuracy", "eval/precision", "eval/recall", "eval/f1"} <= set(final)


def test_margin_and_weight_change_the_loss(tokenizer, tmp_path):
    rows = [{"prompt": "p ", "chosen": "rock", "rejected": "waits", "margin": 2.0, "weight": 0.5}] * 4
    trainer = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer), args=_cfg(tmp_path), train_dataset=rows,
                            processing_class=tokenizer)
    batch = trainer.loop.collate_fn([trainer.train_dataset[i] for i in range(4)])
    with_margin, _ = trainer._pairwise_step(trainer.model, batch)
    trainer.args.use_margin = False
    without, _ = trainer._pairwise_step(trainer.model, batch)
    assert with_margin > without


def test_trained_reward_model_drives_ppo_and_initialises_a_critic(tokenizer, tmp_path):
    trainer = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer), args=_cfg(tmp_path / "rm"),
                            train_dataset=hidden_rule_pairs(16, 0), processing_class=tokenizer)
    trainer.train()
    reward_fn = RewardModel(str(tmp_path / "rm"), batch_size=4)
    critic = CriticModel.from_pretrained(tmp_path / "rm")
    policy = AutoModelForCausalLMWithValueHead(tiny_causal_lm("gpt2", tokenizer))
    ppo = PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2, output_dir=str(tmp_path / "ppo")), policy, None,
                     tokenizer, critic=critic)
    history = ppo.train(reward_fn, ["the band ", "a robot "], steps=1, generation_kwargs={"max_new_tokens": 4},
                        progress=False)
    assert len(history) == 1 and isinstance(history[0]["reward"], float)


def test_reward_rejects_wrong_model_and_bad_rows(tokenizer, tmp_path):
    from rlhfkit.data import DataError

    with pytest.raises(DataError, match="rejected"):
        RewardTrainer(model=tiny_reward_model("gpt2", tokenizer), args=_cfg(tmp_path),
                      train_dataset=[{"prompt": "p", "chosen": "a"}], processing_class=tokenizer)
    wide = tiny_reward_model("gpt2", tokenizer)
    wide.config.num_labels = 2
    with pytest.raises(ValueError, match="num_labels=1"):
        RewardTrainer(model=wide, args=_cfg(tmp_path), train_dataset=hidden_rule_pairs(4, 0), processing_class=tokenizer)


def test_shared_prompt_forward_gives_the_same_training_run(tokenizer, tmp_path):
    losses = {}
    for share in (True, False):
        trainer = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer, hidden_size=32),
                                args=_cfg(tmp_path / str(share), max_steps=4, share_prompt=share),
                                train_dataset=hidden_rule_pairs(32, 0), processing_class=tokenizer)
        assert trainer.share_prompt is share
        losses[share] = [row["train/loss"] for row in trainer.train()]
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
