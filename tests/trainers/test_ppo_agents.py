"""PPO on multi-turn episodes: inserted tokens are context, not actions (loss, KL, entropy, value, GAE).

A random tiny model rarely ends a turn, so the trainers here bias its sampling towards EOS (the
model's generation_config: rollouts only, the training log-probs are the model's own), as
tests/trainers/test_agents_online.py does.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from rlhfkit.algos import gae
from rlhfkit.rollout.agents import Agent, environment_token_rewards
from rlhfkit.rollout.tools import ToolCall
from rlhfkit.testing import tiny_causal_lm
from tests.rollout.agent_helpers import GuessingGame, calculator, explode

TIGHT = dict(rtol=1e-6, atol=1e-9)
# one hand-built batch: row 0 has a tool span (positions 3..5) between two model turns, row 1 none
QUERIES = [torch.tensor([11, 12, 13]), torch.tensor([21, 22, 23, 24])]
RESPONSES = [torch.tensor([31, 32, 33, 34, 35, 36, 37, 38]), torch.tensor([41, 42, 43, 44, 45])]
MASKS = [torch.tensor([1, 1, 1, 0, 0, 0, 1, 1]), torch.ones(5, dtype=torch.long)]
SCORES = [1.0, -0.5]


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def policy(tokenizer, seed: int = 0):
    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32, seed=seed)
    model.generation_config.sequence_bias = {(tokenizer.eos_token_id,): 4.0}  # turns of a few tokens
    torch.manual_seed(seed)  # the value head
    return AutoModelForCausalLMWithValueHead(model)


def trainer(tokenizer, tmp_path=None, **cfg):
    cfg = {"batch_size": 2, "mini_batch_size": 1, "ppo_epochs": 2, "learning_rate": 1e-3, **cfg}
    if tmp_path is not None:
        cfg.update(output_dir=str(tmp_path), log_with="jsonl", project_kwargs={"logging_dir": str(tmp_path)})
    with pytest.warns(UserWarning, match="No dataset"):
        return PPOTrainer(PPOConfig(**cfg), policy(tokenizer), None, tokenizer)


def inserted_positions(batch) -> torch.Tensor:
    """(b, R) True on the response tokens that are inserted (real tokens with mask 0)."""
    R = batch.response_length
    return batch.attention_mask[:, -R:].bool() & ~batch.mask.bool()


# ---------------------------------------------------------------- GAE over the policy tokens


def test_gae_skip_masked_hand():
    # policy tokens 0, 1, 4 (a two-token tool span at 2, 3 with rewards and values that must not count)
    rewards = t64([[1.0, 0.0, 9.0, 9.0, 2.0]])
    values = t64([[0.5, 1.0, 7.0, 7.0, 1.5]])
    mask = t64([[1.0, 1.0, 0.0, 0.0, 1.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8, skip_masked=True)
    # over (r, V) = (1, .5), (0, 1), (2, 1.5): d = 1.4, 0.35, 0.5; A = 1.9112, 0.71, 0.5 (tests/algos/test_ppo.py)
    torch.testing.assert_close(adv, t64([[1.9112, 0.71, 0.0, 0.0, 0.5]]), **TIGHT)
    torch.testing.assert_close(ret, t64([[2.4112, 1.71, 0.0, 0.0, 2.0]]), **TIGHT)
    plain, _ = gae(rewards, values, mask, gamma=0.9, lam=0.8)  # zero-reward, zero-value steps: not the same
    assert not torch.allclose(plain[0, :2], adv[0, :2])


@pytest.mark.parametrize("seed", range(3))
def test_gae_skip_masked_equals_the_policy_tokens_alone(seed):
    g = torch.Generator().manual_seed(seed)
    B, T, gamma, lam = 4, 9, 0.97, 0.9
    rewards, values = torch.randn(B, T, generator=g, dtype=torch.float64), torch.randn(B, T, generator=g,
                                                                                        dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) < 0.6).double()  # holes anywhere, padding included
    mask[0] = t64([1, 1, 0, 0, 0, 1, 1, 0, 0])  # an inserted span, then padding
    adv, ret = gae(rewards, values, mask, gamma, lam, skip_masked=True)
    for b in range(B):
        keep = mask[b].nonzero().flatten().tolist()
        r, v = [rewards[b, t].item() for t in keep], [values[b, t].item() for t in keep]
        n = len(r)
        delta = [r[k] + gamma * (v[k + 1] if k + 1 < n else 0.0) - v[k] for k in range(n)]
        for k, t in enumerate(keep):  # A_k = sum_l (gamma * lam)^l delta_{k+l}, over the policy tokens only
            a = sum((gamma * lam) ** j * delta[k + j] for j in range(n - k))
            assert math.isclose(adv[b, t].item(), a, rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(ret[b, t].item(), a + v[k], rel_tol=1e-9, abs_tol=1e-12)
        dropped = [t for t in range(T) if t not in keep]
        assert torch.count_nonzero(adv[b, dropped]) == 0 and torch.count_nonzero(ret[b, dropped]) == 0


def test_gae_skip_masked_is_the_plain_recursion_on_right_padded_rows():
    g = torch.Generator().manual_seed(3)
    rewards, values = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    mask = (torch.arange(7)[None, :] < torch.tensor([[7], [4], [1]])).float()
    for a, b in zip(gae(rewards, values, mask, 1.0, 0.95), gae(rewards, values, mask, 1.0, 0.95, skip_masked=True)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- the PPO step on a hand-built episode


def test_the_step_batch_masks_the_tool_span_token_by_token(tokenizer):
    ppo = trainer(tokenizer, whiten_advantages=False)
    seen, optimize = {}, ppo._optimize
    ppo._optimize = lambda batch, rollout: seen.update(batch=batch, rollout=rollout) or optimize(batch, rollout)
    stats = ppo.step(QUERIES, RESPONSES, SCORES, response_masks=MASKS)
    batch, rollout = seen["batch"], seen["rollout"]
    expected = torch.zeros(2, 8)
    expected[0] = MASKS[0].float()
    expected[1, :5] = 1.0
    for t in range(8):  # the batch's mask is the policy mask, token by token
        assert torch.equal(batch.mask[:, t], expected[:, t]), f"position {t}"
    inserted = inserted_positions(batch)
    assert inserted.sum() == 3 and inserted[0, 3:6].all()
    for name in ("advantages", "returns", "values"):  # no action there: nothing to learn or to predict
        assert torch.count_nonzero(rollout[name][inserted]) == 0, name
        assert torch.count_nonzero(rollout[name][0, 6:]) > 0, name  # the second model turn still has them
    # GAE over the policy tokens alone: row 0's returns are those of its 5 policy tokens laid end to end
    keep = MASKS[0].bool()
    values = rollout["values"][0, keep][None]  # (1, 5)
    assert stats["objective/kl"] == 0.0  # policy == reference before the update: the rewards are the score alone
    rewards = torch.zeros(1, 5)
    rewards[0, -1] = SCORES[0]  # the score on the last policy token
    adv, ret = gae(rewards, values, torch.ones(1, 5), ppo.config.gamma, ppo.config.lam)
    torch.testing.assert_close(rollout["returns"][0, keep][None], ret, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rollout["advantages"][0, keep][None], adv, rtol=1e-6, atol=1e-6)


def _perturbing(ppo, grads: list):
    """Wrap ``ppo._forward``: log-probs, values and logits of inserted tokens get noise; record gradients."""
    forward, g = ppo._forward, torch.Generator().manual_seed(7)

    def noisy(model, batch, critic=None):
        logprobs, values, logits = forward(model, batch, critic)
        inserted = inserted_positions(batch).to(logprobs.dtype)  # (b, R)
        if logprobs.requires_grad:
            logprobs.register_hook(lambda grad: grads.append(("logprobs", grad, inserted.bool())))
            values.register_hook(lambda grad: grads.append(("values", grad, inserted.bool())))
        noise = (lambda t: (torch.rand(t.shape, generator=g) * 4.0 - 2.0).to(t))
        logits = logits + inserted[..., None] * noise(logits) if logits is not None else None
        return logprobs + inserted * noise(logprobs), values + inserted * noise(values), logits
    return noisy


@pytest.mark.parametrize("extra", [{}, {"kl_penalty": "full", "entropy_coef": 0.1, "whiten_rewards": True}])
def test_inserted_tokens_do_not_reach_the_loss_or_the_gradient(tokenizer, extra):
    plain, noisy = trainer(tokenizer, **extra), trainer(tokenizer, **extra)
    grads: list = []
    noisy._forward = _perturbing(noisy, grads)
    a = plain.step(QUERIES, RESPONSES, SCORES, response_masks=MASKS)
    b = noisy.step(QUERIES, RESPONSES, SCORES, response_masks=MASKS)
    for key in ("ppo/loss/total", "ppo/loss/policy", "ppo/loss/value", "ppo/policy/entropy", "objective/kl",
                "ppo/returns/mean", "ppo/val/vpred"):
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    for (name, p), q in zip(plain.model.named_parameters(), noisy.model.parameters()):
        assert torch.equal(p, q), f"{name} moved differently: an inserted token reached the update"
    assert grads and any(inserted.any() for _, _, inserted in grads)
    for name, grad, inserted in grads:
        assert torch.count_nonzero(grad[inserted]) == 0, f"gradient reaches an inserted token's {name}"
    for kind in ("logprobs", "values"):  # the policy tokens do get gradient (a clipped minibatch may get none)
        assert any(torch.count_nonzero(grad[~inserted]) > 0 for name, grad, inserted in grads if name == kind)


def test_all_ones_response_masks_is_the_classic_step(tokenizer):
    plain, masked = trainer(tokenizer), trainer(tokenizer)
    ones = [torch.ones(len(r), dtype=torch.long) for r in RESPONSES]
    for step in range(2):
        a = plain.step(QUERIES, RESPONSES, SCORES)
        b = masked.step(QUERIES, RESPONSES, SCORES, response_masks=ones)
        assert a.keys() == b.keys()
        for key in a:
            if not key.startswith("time/"):
                assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), f"step {step}: {key}"
    assert all(torch.equal(p, q) for p, q in zip(plain.model.parameters(), masked.model.parameters()))


def test_token_rewards_at_the_last_policy_token_are_the_score(tokenizer):
    by_score, by_token = trainer(tokenizer), trainer(tokenizer)
    by_score.step(QUERIES, RESPONSES, SCORES, response_masks=MASKS)
    placed = [torch.zeros(8), torch.zeros(5)]
    placed[0][7], placed[1][4] = SCORES
    by_token.step(QUERIES, RESPONSES, [0.0, 0.0], response_masks=MASKS, token_rewards=placed)
    assert all(torch.equal(p, q) for p, q in zip(by_score.model.parameters(), by_token.model.parameters()))
    on_tool = [torch.zeros(8), torch.zeros(5)]
    on_tool[0][4] = 1.0
    with pytest.raises(ValueError, match=r"token_rewards\[0\] puts a reward on token 4.*inserted"):
        by_token.step(QUERIES, RESPONSES, SCORES, response_masks=MASKS, token_rewards=on_tool)
    with pytest.raises(ValueError, match=r"response_masks\[0\] holds values other than 0 and 1"):
        by_token.step(QUERIES, RESPONSES, SCORES, response_masks=[MASKS[0] * 2, MASKS[1]])


def test_step_rewards_land_on_the_last_policy_token_of_their_turn(tokenizer):
    agent = Agent(tokenizer, environment_factory=GuessingGame, max_completion_length=256)
    eos = tokenizer.eos_token_id
    script = ["guess 3", "hmm", "guess 6"]  # higher (0.0), no number (-0.1), correct (1.0, done)
    episodes = agent.start([[{"role": "user", "content": "play"}]], [{"secret": 6}])
    agent.run(episodes, lambda contexts, n: ([torch.tensor(tokenizer(script.pop(0), add_special_tokens=False)
                                                           ["input_ids"] + [eos])], None))
    (episode,) = episodes
    assert episode.end == "environment_done" and episode.step_rewards == [0.0, -0.1, 1.0]
    rewards = environment_token_rewards(episode)
    ends = [t.end - 1 for t in episode.turns if t.role == "assistant"]  # each model turn's EOS
    assert [rewards[t] for t in ends] == [0.0, -0.1, 1.0]
    assert all(r == 0.0 for t, r in enumerate(rewards) if t not in ends)
    assert sum(rewards) == pytest.approx(episode.environment_reward)


# ---------------------------------------------------------------- PPOTrainer.train on episodes


def every_other_turn(text: str) -> list:
    """A tool parser for random text: an even-length turn is a calculator call."""
    return [ToolCall("calculator", {"expression": f"{len(text)}+1"})] if len(text) % 2 == 0 else []


PROMPTS = [[{"role": "user", "content": f"{k}+{k}="}] for k in range(8)]


def test_train_with_a_tool_masks_the_tool_results(tokenizer, tmp_path):
    ppo = trainer(tokenizer, tmp_path, max_tool_calling_iterations=3, ppo_epochs=1)
    calls, step = [], ppo.step
    ppo.step = lambda *args, **kwargs: calls.append(kwargs) or step(*args, **kwargs)
    seen = []

    def reward(prompts, completions, episodes):
        seen.append(episodes)
        return [float(c[-1]["role"] == "assistant") for c in completions]

    before = [p.detach().clone() for p in ppo.model.parameters()]
    torch.manual_seed(0)
    history = ppo.train(reward, PROMPTS, steps=2, tools=[calculator], tool_parser=every_other_turn,
                        generation_kwargs={"max_new_tokens": 40}, progress=False)
    assert len(history) == 2 and all(math.isfinite(r["loss"]) for r in history)
    assert any(not torch.equal(b, p) for b, p in zip(before, ppo.model.parameters()))
    episodes = [e for batch in seen for e in batch]
    assert any(e.rounds for e in episodes), "no episode inserted a tool result"
    for kwargs, batch in zip(calls, seen):
        for mask, episode in zip(kwargs["response_masks"], batch):
            assert mask.bool().tolist() == episode.policy_mask
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["tools/call_frequency"] > 0 and rows[0]["episodes/inserted_tokens_mean"] > 0
    assert sum(v for k, v in rows[0].items() if k.startswith("episodes/end/")) == pytest.approx(1.0)


def test_a_tool_that_raises_ends_its_episode_with_a_logged_reason(tokenizer, tmp_path, caplog):
    ppo = trainer(tokenizer, tmp_path, ppo_epochs=1)
    with caplog.at_level(logging.WARNING, logger="rlhfkit.rollout.agents"):
        history = ppo.train(lambda prompts, completions: [0.5] * len(prompts), PROMPTS, steps=1, tools=[explode],
                            tool_parser=lambda text: [ToolCall("explode", {"text": text})],
                            generation_kwargs={"max_new_tokens": 40}, progress=False)
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    warnings = [r.getMessage() for r in caplog.records if "(tool_error)" in r.getMessage()]
    assert len(warnings) == 2 and all("explode raised RuntimeError: the tool broke" in w for w in warnings)
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["episodes/end/tool_error"] == 1.0 and row["tools/failure_frequency"] == 1.0


def test_an_environment_alone_is_the_reward_per_turn(tokenizer, tmp_path):
    ppo = trainer(tokenizer, tmp_path, max_tool_calling_iterations=4, ppo_epochs=1)
    calls, step = [], ppo.step
    ppo.step = lambda *args, **kwargs: calls.append((args, kwargs)) or step(*args, **kwargs)
    torch.manual_seed(0)
    history = ppo.train(None, PROMPTS, steps=2, environment_factory=GuessingGame,
                        columns={"secret": [k % 8 + 1 for k in range(8)]},
                        generation_kwargs={"max_new_tokens": 48}, progress=False)
    assert len(history) == 2
    stepped = 0
    for (queries, responses, scores), kwargs in calls:
        assert scores == [0.0, 0.0]  # no reward_fn: the environment's rewards come per token
        for rewards, mask in zip(kwargs["token_rewards"], kwargs["response_masks"]):
            assert torch.count_nonzero(rewards[mask == 0]) == 0
            stepped += int(torch.count_nonzero(rewards))
    assert stepped > 0, "no environment step paid a reward"
    with pytest.raises(Exception, match="reward"):  # no reward_fn and an environment without a reward
        trainer(tokenizer).train(None, PROMPTS, steps=1, tools=[calculator])


# ---------------------------------------------------------------- rlhfkit ppo


def test_rlhfkit_ppo_runs_environment_episodes(tokenizer, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from rlhfkit.cli import main
    from rlhfkit.testing import save_tiny

    folder = save_tiny(tmp_path / "policy", hidden_size=32, seed=1)
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.generation_config.sequence_bias = [[[tokenizer.eos_token_id], 4.0]]  # short turns, stored as JSON
    model.save_pretrained(folder)
    data = tmp_path / "games.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"game {k}"}], "secret": k + 1}) + "\n"
                            for k in range(8)))
    out = tmp_path / "run"
    code = main(["ppo", f"model_name_or_path={folder}", f"dataset_name={data}", f"output_dir={out}",
                 "environment_factory=tests.rollout.agent_helpers:GuessingGame", "max_tool_calling_iterations=3",
                 "per_device_train_batch_size=4", "mini_batch_size=2", "num_ppo_epochs=1", "max_new_tokens=48",
                 "max_steps=2", "report_to=jsonl", "learning_rate=1e-3"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["episodes/model_turns_mean"] >= 1.0 for r in rows)
    assert all(sum(v for k, v in r.items() if k.startswith("episodes/end/")) == pytest.approx(1.0) for r in rows)
    assert "environment_factory: tests.rollout.agent_helpers:GuessingGame" in (out / "config.yaml").read_text()
    assert (out / "final" / "model.safetensors").is_file()
