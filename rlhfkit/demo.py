"""Offline examples of the whole loop on a tiny model (no hub, no GPU, minutes on a laptop).

``rlhfkit ppo-example`` trains a randomly initialised tiny GPT-2 with PPO against a rule
reward: the share of words in the response that belong to a small "rock song" lexicon.
The reward rises within a few dozen steps; the run writes metrics, checkpoints and the
final model (a normal Transformers checkpoint) under ``--output_dir``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .models import AutoModelForCausalLMWithValueHead
from .testing import tiny_causal_lm, tiny_tokenizer
from .trainers import PPOConfig, PPOTrainer

ROCK_LEXICON = frozenset({"rock", "song", "night", "moon", "sings", "dances", "plays", "band", "again", "all"})
PROMPTS = ["we're halfway", "the band", "all night", "a robot", "my friend", "under the moon", "they", "the river"]


def rock_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Share of the response's words that are in ``ROCK_LEXICON`` (0 for an empty response)."""
    scores = []
    for text in responses:
        words = [w.strip(".,!?").lower() for w in text.split()]
        scores.append(sum(w in ROCK_LEXICON for w in words) / len(words) if words else 0.0)
    return scores


def ppo_example(output_dir: str = "runs/ppo-example", steps: int = 100, seed: int = 0, progress: bool = True,
                config_overrides: dict | None = None) -> dict:
    """Train the tiny model; returns a summary with the reward at the start and the end."""
    tok = tiny_tokenizer()
    policy = AutoModelForCausalLMWithValueHead(tiny_causal_lm("gpt2", tok, seed=seed), summary_dropout_prob=0.0)
    # A random-init model needs a large step size; clipping keeps those steps stable.
    options = dict(batch_size=16, mini_batch_size=8, ppo_epochs=2, learning_rate=5e-3, init_kl_coef=0.02,
                   adap_kl_ctrl=False, max_grad_norm=1.0, seed=seed, output_dir=output_dir, save_steps=max(1, steps // 2),
                   log_with="jsonl", project_kwargs={"logging_dir": output_dir})
    options.update(config_overrides or {})
    trainer = PPOTrainer(PPOConfig(**options), policy, None, tok)
    start = time.time()
    history = trainer.train(rock_reward, PROMPTS, steps=steps, progress=progress,
                            generation_kwargs=dict(max_new_tokens=8, min_new_tokens=8))
    window = max(1, len(history) // 5)
    summary = {
        "steps": len(history),
        "reward_first": sum(r["reward"] for r in history[:window]) / window,
        "reward_last": sum(r["reward"] for r in history[-window:]) / window,
        "kl_last": history[-1]["kl"],
        "seconds": round(time.time() - start, 1),
        "output_dir": str(Path(output_dir).resolve()),
    }
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
