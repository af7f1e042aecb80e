"""Shared pieces of the GRPO / RLOO / REINFORCE++ tests: prompts, a token-level rule reward, configs."""

from __future__ import annotations

import random

import torch

WORDS = "the cat a dog my friend sings we walk they band plays robot river moon night".split()


def prompt_rows(n: int = 16, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.choice(WORDS) for _ in range(3))} for _ in range(n)]


def in_target(prompts, completions, completion_ids, **columns):
    """Fraction of completion tokens whose id is a multiple of 4 (a hidden quarter of the vocabulary)."""
    return [sum(i % 4 == 0 for i in ids) / max(1, len(ids)) for ids in completion_ids]


def small(output_dir, **overrides) -> dict:
    """Config fields of a fast run on a tiny model (4 prompts x 4 completions per step, 4 new tokens)."""
    fields = dict(output_dir=str(output_dir), num_generations=4, per_device_train_batch_size=8, max_completion_length=4,
                  max_steps=2, logging_steps=1, learning_rate=1e-2, report_to="jsonl", disable_tqdm=True, seed=0)
    fields.update(overrides)
    return fields


def params_of(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def learning_curve(trainer) -> tuple[float, float, list[float]]:
    """(mean reward of the first 5 steps, of the last 5, all) from a finished trainer's history."""
    rewards = [row["train/reward"] for row in trainer.loop.history if "train/reward" in row]
    return sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5, rewards
