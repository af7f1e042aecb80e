"""Learning tests: GRPO, RLOO and REINFORCE++ must raise a rule reward on a tiny random model, on CPU.

The reward is the fraction of completion tokens in a hidden quarter of the vocabulary (ids
that are multiples of 4), so a random policy starts near 0.25 and stays there: with the learning
rate at 1e-12 the last five steps average 0.24 for every method, far below the threshold. Seeded;
30 optimiser steps of 4 prompts x 4 completions of 6 tokens each, about 1 s per method on one
quiet core, so all four run by default.
"""

import pytest

from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.trainers.rloo import RLOOConfig, RLOOTrainer
from tests.trainers.online_helpers import in_target, learning_curve, prompt_rows, small

STEPS = 30


def run(tokenizer, tmp_path, trainer_cls, config_cls, **overrides):
    args = config_cls(**small(tmp_path, per_device_train_batch_size=16, max_completion_length=6, max_steps=STEPS,
                              report_to="none", generation_kwargs={"min_new_tokens": 6}, **overrides))
    trainer = trainer_cls(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target, args=args,
                          train_dataset=prompt_rows(64), processing_class=tokenizer)
    trainer.train()
    return learning_curve(trainer)


def check(first, last, rewards):
    assert last > 0.45 and last > first + 0.15, f"mean reward did not rise enough: {first:.3f} -> {last:.3f} ({rewards})"


def test_grpo_raises_the_reward(tokenizer, tmp_path):
    check(*run(tokenizer, tmp_path, GRPOTrainer, GRPOConfig))


def test_rloo_trainer_raises_the_reward(tokenizer, tmp_path):
    check(*run(tokenizer, tmp_path, RLOOTrainer, RLOOConfig, num_generations=4, beta=0.0))


@pytest.mark.parametrize("estimator", ["reinforce++", "reinforce++_baseline"])
def test_reinforce_pp_raises_the_reward(tokenizer, tmp_path, estimator):
    check(*run(tokenizer, tmp_path, GRPOTrainer, GRPOConfig, advantage_estimator=estimator, beta=0.01))
