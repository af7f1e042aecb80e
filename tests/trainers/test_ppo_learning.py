"""Learning test: the classic loop must raise a rule-based reward on a tiny model, on CPU."""

import torch

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer


def toy_reward(response: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of response tokens that belong to a hidden target set (about 1/4 of the vocabulary)."""
    return torch.isin(response, target).float().mean()


def run_toy_ppo(steps: int, seed: int = 0):
    tok = tiny_tokenizer()
    model = AutoModelForCausalLMWithValueHead(tiny_causal_lm("gpt2", tok, seed=seed, hidden_size=32),
                                              summary_dropout_prob=0.0)
    config = PPOConfig(batch_size=16, mini_batch_size=8, ppo_epochs=2, learning_rate=1e-2, init_kl_coef=0.01,
                       adap_kl_ctrl=False, seed=seed)
    trainer = PPOTrainer(config, model, None, tok)
    target = torch.arange(0, len(tok), 4)
    g = torch.Generator().manual_seed(seed)
    gen = dict(do_sample=True, top_k=0, top_p=1.0, max_new_tokens=6, min_new_tokens=6)
    means = []
    for _ in range(steps):
        queries = [torch.randint(10, len(tok), (3,), generator=g) for _ in range(16)]
        responses = trainer.generate(queries, return_prompt=False, batch_size=16, **gen)
        rewards = [toy_reward(r, target) for r in responses]
        trainer.step(queries, responses, rewards)
        means.append(float(torch.stack(rewards).mean()))
    return means


def test_classic_loop_raises_mean_reward():
    means = run_toy_ppo(steps=20)
    first, last = sum(means[:4]) / 4, sum(means[-4:]) / 4
    assert last > 0.6 and last > first + 0.3, f"mean reward did not rise enough: {first:.3f} -> {last:.3f} ({means})"
