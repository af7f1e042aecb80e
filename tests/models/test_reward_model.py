"""RewardModel scores exactly what RewardTrainer trained on: same ids, same rewards, same accuracy."""

import pytest
import torch

from rlhfkit import RewardConfig, RewardModel, RewardTrainer
from rlhfkit.data import PairCollator, tokenize_pair
from rlhfkit.testing import hidden_rule_preferences, tiny_reward_model
from rlhfkit.trainers.reward import pair_rewards


@pytest.fixture(scope="module")
def trained(tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    args = RewardConfig(output_dir=str(out), max_steps=30, per_device_train_batch_size=16, learning_rate=3e-3,
                        logging_steps=10, report_to="none", disable_tqdm=True, max_length=48)
    eval_rows = hidden_rule_preferences(40, seed=1)
    trainer = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer, hidden_size=32), args=args,
                            train_dataset=hidden_rule_preferences(200, 0), eval_dataset=eval_rows,
                            processing_class=tokenizer)
    trainer.train()
    return trainer, out, eval_rows


def test_ids_are_the_training_ids(trained, tokenizer):
    trainer, out, rows = trained
    rm = RewardModel(str(out), max_length=trainer.args.max_length)
    for row in rows[:10]:
        pair = tokenize_pair(row, tokenizer, trainer.args.max_length)
        assert rm.encode(row["prompt"], row["chosen"]) == pair["chosen_input_ids"]
        assert rm.encode(row["prompt"], row["rejected"]) == pair["rejected_input_ids"]
        assert pair["chosen_input_ids"][-1] == tokenizer.eos_token_id  # training closes responses with EOS


def test_rewards_and_heldout_accuracy_match_training(trained):
    trainer, out, rows = trained
    rm = RewardModel(str(out), max_length=trainer.args.max_length, batch_size=7)
    prompts = [r["prompt"] for r in rows]
    chosen, rejected = rm(prompts, [r["chosen"] for r in rows]), rm(prompts, [r["rejected"] for r in rows])
    batch = PairCollator(trainer.tokenizer.pad_token_id)([trainer.eval_dataset[i] for i in range(len(rows))])
    model = trainer.loop.accelerator.unwrap_model(trainer.model).eval()
    with torch.no_grad():
        want_c, want_r = pair_rewards(model, batch)
    assert chosen == pytest.approx(want_c.tolist(), abs=1e-4)
    assert rejected == pytest.approx(want_r.tolist(), abs=1e-4)
    scored_accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(rows)
    assert scored_accuracy == pytest.approx(trainer.evaluate()["eval/accuracy"])


def test_whole_texts_get_the_eos_training_appended(trained, tokenizer):
    trainer, out, rows = trained
    rm = RewardModel(str(out))
    text = rows[0]["prompt"] + rows[0]["chosen"]
    ids = tokenizer(text)["input_ids"]
    assert rm.encode_text(text) == ids + [tokenizer.eos_token_id]
    assert rm.encode_text(text + tokenizer.eos_token) == ids + [tokenizer.eos_token_id]  # never twice
    assert rm.score([text]) == pytest.approx(rm.score_ids([ids + [tokenizer.eos_token_id]]))
    assert rm.score([text], add_eos=False) == pytest.approx(rm.score_ids([ids]))


def test_chat_prompts_render_with_the_template(tokenizer):
    rm = RewardModel(tiny_reward_model("gpt2", tokenizer, seed=2), tokenizer, max_length=64)
    prompt = [{"role": "user", "content": "what does the band do?"}]
    pair = tokenize_pair({"prompt": prompt, "chosen": "it plays rock", "rejected": "it sleeps"}, tokenizer, 64)
    assert rm.encode(prompt, "it plays rock") == pair["chosen_input_ids"]
    assert rm([prompt], ["it plays rock"]) == pytest.approx(rm.score_ids([pair["chosen_input_ids"]]))


def test_errors(tokenizer, tmp_path):
    rm = RewardModel(tiny_reward_model("gpt2", tokenizer), tokenizer)
    with pytest.raises(ValueError, match="2 prompts and 1 responses"):
        rm(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="no such folder"):
        RewardModel(str(tmp_path / "missing" / "rm"))
