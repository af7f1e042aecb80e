"""GRPO and RLOO on multi-turn episodes: inserted tokens stay out of the loss, KL and entropy; resume is exact.

A random tiny model rarely ends a turn, so these tests bias its sampling towards EOS (the model's
generation_config: rollouts only, the training log-probs are the model's own) and read its turns
with a ``tool_parser`` that calls the calculator on every other turn: episodes then have several
model turns, tool results and all the ways to end, in a second.
"""

from __future__ import annotations

import json

import pytest
import torch

from rlhfkit.rollout import response_logprobs
from rlhfkit.rollout.tools import ToolCall
from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.config import ConfigError
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.trainers.rloo import RLOOConfig, RLOOTrainer
from tests.rollout.agent_helpers import GuessingGame, calculator
from tests.trainers.online_helpers import in_target, params_of, small


def every_other_turn(text: str) -> list:
    """A tool parser for random text: an even-length turn is a calculator call."""
    return [ToolCall("calculator", {"expression": f"{len(text)}+1"})] if len(text) % 2 == 0 else []


def chatty_model(tokenizer, seed: int = 0):
    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32, seed=seed)
    model.generation_config.sequence_bias = {(tokenizer.eos_token_id,): 4.0}  # turns of a few tokens
    return model


def rows(n: int = 8) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"{k}+{k}="}], "secret": k % 8 + 1} for k in range(n)]


def make(trainer_cls, config_cls, tokenizer, tmp_path, model=None, **overrides):
    fields = small(tmp_path, max_completion_length=40, max_tool_calling_iterations=3, **overrides)
    tools = fields.pop("tools", [calculator])
    environment = fields.pop("environment_factory", None)
    parser = fields.pop("tool_parser", every_other_turn)
    return trainer_cls(model=model or chatty_model(tokenizer), reward_funcs=in_target, args=config_cls(**fields),
                       train_dataset=rows(), processing_class=tokenizer, tools=tools,
                       environment_factory=environment, tool_parser=parser)


def test_the_rollout_mask_is_the_policy_mask(tokenizer, tmp_path):
    run = make(GRPOTrainer, GRPOConfig, tokenizer, tmp_path).loop
    seen, sample = [], run._sample
    run._sample = lambda *args: seen.append(sample(*args)) or seen[-1]
    torch.manual_seed(0)
    rollout = run.rollout()
    (sampled,) = seen
    batch = rollout.batch
    assert any(e.rounds for e in sampled.episodes), "no episode inserted a tool result"
    for i, episode in enumerate(sampled.episodes):  # row i is episode i: its tokens, and 1 where the policy sampled
        n = len(episode.ids)
        assert torch.equal(batch.response_ids[i, :n].cpu(), torch.tensor(episode.ids))
        assert torch.equal(batch.mask[i, :n].bool().cpu(), torch.tensor(episode.policy_mask))
        assert batch.mask[i, n:].sum() == 0
    assert rollout.metrics["completions/mean_length"] == batch.mask.sum(-1).mean()  # policy tokens only, as TRL
    assert rollout.metrics["episodes/inserted_tokens_mean"] > 0


@pytest.mark.parametrize("trainer_cls, config_cls, extra", [(GRPOTrainer, GRPOConfig, {"beta": 0.1}),
                                                            (RLOOTrainer, RLOOConfig, {"beta": 0.1})])
def test_inserted_tokens_get_no_gradient_kl_or_entropy(tokenizer, tmp_path, trainer_cls, config_cls, extra):
    run = make(trainer_cls, config_cls, tokenizer, tmp_path, **extra).loop
    torch.manual_seed(0)
    rollout = run.rollout()
    part = rollout.chunk(torch.arange(rollout.batch.response_ids.shape[0]))
    batch = part["batch"]
    real = batch.attention_mask[:, -batch.response_length:].bool()  # (B, R) response tokens, inserted ones too
    inserted = real & ~batch.mask.bool()
    assert inserted.any() and batch.mask.bool().any()
    logprobs = response_logprobs(run.model, batch, temperature=run.config.temperature).float().requires_grad_(True)
    old = logprobs.detach() + 0.01 * torch.randn_like(logprobs)  # off-policy ratio, so every term is live
    loss, metrics = run.method.loss(logprobs, old, part["ref"], part["advantages"], batch.mask, 10.0)
    (grad,) = torch.autograd.grad(loss, logprobs)
    assert torch.count_nonzero(grad[inserted]) == 0  # no gradient reaches an inserted token
    assert torch.count_nonzero(grad[batch.mask.bool()]) > 0
    if "kl" in metrics:  # GRPO: the k3 KL is a masked mean; changing inserted log-probs leaves it as it is
        moved = logprobs.detach().clone()
        moved[inserted] -= 3.0
        _, shifted = run.method.loss(moved, old, part["ref"], part["advantages"], batch.mask, 10.0)
        assert torch.equal(shifted["kl"], metrics["kl"])
    _, update = run._update(run.model, part, 10.0, first_pass=True)
    assert update["num_tokens"] == batch.mask.sum()  # entropy and token counts read the policy mask


@pytest.mark.parametrize("trainer_cls, config_cls", [(GRPOTrainer, GRPOConfig), (RLOOTrainer, RLOOConfig)])
def test_grpo_and_rloo_train_on_episodes(tokenizer, tmp_path, trainer_cls, config_cls):
    trainer = make(trainer_cls, config_cls, tokenizer, tmp_path, beta=0.0)
    before = params_of(trainer.model)
    history = trainer.train()
    rows_ = [r for r in history if "train/loss" in r]
    assert len(rows_) == 2 and all(torch.isfinite(torch.tensor(r["train/loss"])) for r in rows_)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert rows_[0]["train/tools/call_frequency"] > 0
    assert sum(v for k, v in rows_[0].items() if k.startswith("train/episodes/end/")) == pytest.approx(1.0)


def test_an_environment_is_the_reward_and_resume_is_exact(tokenizer, tmp_path):
    def build(out):
        return make(GRPOTrainer, GRPOConfig, tokenizer, out, max_steps=4, save_steps=2, tools=None,
                    environment_factory=GuessingGame, tool_parser=None, reward_weights=[0.5])

    full = build(tmp_path / "full")
    assert [f.name for f in full.reward_funcs] == ["in_target", "environment"]
    history = full.train()
    assert any(r.get("train/episodes/end/environment_done", 0) > 0 for r in history)
    assert all("train/rewards/environment/mean" in r for r in history if "train/loss" in r)
    resumed = build(tmp_path / "full")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))
    steps = [json.loads(line)["step"] for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_tool_episodes_resume_exactly(tokenizer, tmp_path):
    full = make(GRPOTrainer, GRPOConfig, tokenizer, tmp_path / "full", max_steps=4, save_steps=2)
    full.train()
    resumed = make(GRPOTrainer, GRPOConfig, tokenizer, tmp_path / "full", max_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))


def test_setup_errors_name_the_field(tokenizer, tmp_path):
    def undocumented(x):
        return x

    with pytest.raises(ConfigError, match="tools.*'undocumented'.*docstring"):
        make(GRPOTrainer, GRPOConfig, tokenizer, tmp_path, tools=[undocumented])
    with pytest.raises(ConfigError, match="tools.*tools\\[0\\].*no attribute 'nope'"):
        make(GRPOTrainer, GRPOConfig, tokenizer, tmp_path, tools=["tests.rollout.agent_helpers:nope"])
    with pytest.raises(ValueError, match="environment_column"):
        GRPOConfig(**small(tmp_path, environment_column=3))
    with pytest.raises(ValueError, match="max_tool_calling_iterations"):
        GRPOConfig(**small(tmp_path, max_tool_calling_iterations=-1))


def test_dotted_paths_in_the_config(tokenizer, tmp_path):
    fields = small(tmp_path, max_completion_length=40, tools=["tests.rollout.agent_helpers:calculator"],
                   environment_factory="tests.trainers.test_agents_online:GAMES", max_steps=1)
    trainer = GRPOTrainer(model=chatty_model(tokenizer), args=GRPOConfig(**fields),
                          train_dataset=[{**r, "environment": "game"} for r in rows()], processing_class=tokenizer)
    assert trainer.environment_factory is GAMES and trainer.tools == [calculator]
    assert [f.name for f in trainer.reward_funcs] == ["environment"]  # the environment alone is the reward
    assert len(trainer.train()) == 1


GAMES = {"game": GuessingGame}
