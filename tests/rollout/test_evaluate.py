"""evaluate_policy's eval/* metrics by hand and against a naive loop; sample_and_score's contract."""

import functools
import math
import random

import pytest
import torch

from rlhfkit.rollout.evaluate import Sampled, evaluate_policy, reward_name, sample_and_score
from rlhfkit.rollout.sampling import Completions
from rlhfkit.testing import tiny_causal_lm


def fixed_sampler(rewards_by_prompt: dict, lengths_by_prompt: dict, calls: list):
    """``sample(prompts, columns, G)`` that returns given rewards (two functions: r and 2r) and lengths."""

    def sample(prompts, columns, G):
        calls.append((list(prompts), dict(columns), G))
        rewards = torch.tensor([r for p in prompts for r in rewards_by_prompt[p]])  # (P * G,)
        responses = [torch.ones(n, dtype=torch.long) for p in prompts for n in lengths_by_prompt[p]]
        per_func = torch.stack([rewards, 2 * rewards], dim=1)  # (P * G, 2)
        return Sampled([], responses, rewards, per_func, None, [], [])

    return sample


def named(name):
    fn = lambda prompts, completions, **_: [0.0] * len(prompts)  # noqa: E731
    fn.name = name
    return fn


def test_metrics_by_hand():
    rewards = {"a": [1.0, 1.0], "b": [0.0, 2.0], "c": [3.0, 5.0]}
    lengths = {"a": [1, 3], "b": [2, 2], "c": [4, 6]}
    calls = []
    row = evaluate_policy(fixed_sampler(rewards, lengths, calls), [named("acc"), lambda *a, **k: None],
                          ["a", "b", "c"], {"answer": [1, 2, 3]}, num_generations=2, batch_size=4)
    # 4 completions per call: 2 prompts, then the last one; columns cut alongside
    assert calls == [(["a", "b"], {"answer": [1, 2]}, 2), (["c"], {"answer": [3]}, 2)]
    # rewards 1 1 0 2 3 5: mean 2, unbiased variance (1 + 1 + 4 + 0 + 1 + 9) / 5 = 16/5
    assert row["eval/reward"] == pytest.approx(2.0, rel=1e-6)
    assert row["eval/reward_std"] == pytest.approx(math.sqrt(16 / 5), rel=1e-6)
    assert row["eval/frac_reward_zero_std"] == pytest.approx(1 / 3, rel=1e-6)  # only prompt a's group
    assert row["eval/completions/mean_length"] == pytest.approx(18 / 6, rel=1e-6)
    assert row["eval/rewards/acc/mean"] == pytest.approx(2.0, rel=1e-6)
    assert row["eval/rewards/func1/mean"] == pytest.approx(4.0, rel=1e-6)  # a lambda is named by its index
    assert set(row) == {"eval/reward", "eval/reward_std", "eval/frac_reward_zero_std",
                        "eval/completions/mean_length", "eval/rewards/acc/mean", "eval/rewards/func1/mean"}


def test_one_completion_has_std_zero():
    row = evaluate_policy(fixed_sampler({"a": [0.5]}, {"a": [2]}, []), [named("r")], ["a"],
                          num_generations=1, batch_size=8)
    assert row["eval/reward_std"] == 0.0 and row["eval/reward"] == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_matches_a_naive_loop(seed):
    rng = random.Random(seed)
    G, prompts = 3, [f"p{i}" for i in range(7)]
    rewards = {p: [float(rng.choice([0, 1, 2])) for _ in range(G)] for p in prompts}
    lengths = {p: [rng.randint(1, 9) for _ in range(G)] for p in prompts}
    row = evaluate_policy(fixed_sampler(rewards, lengths, []), [named("r"), named("double")], prompts,
                          num_generations=G, batch_size=5)
    flat = [r for p in prompts for r in rewards[p]]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((r - mean) ** 2 for r in flat) / (len(flat) - 1))
    zero = sum(1 for p in prompts if len(set(rewards[p])) == 1) / len(prompts)
    assert row["eval/reward"] == pytest.approx(mean, rel=1e-6)
    assert row["eval/reward_std"] == pytest.approx(std, rel=1e-6)
    assert row["eval/frac_reward_zero_std"] == pytest.approx(zero, rel=1e-6)
    assert row["eval/completions/mean_length"] == pytest.approx(sum(sum(v) for v in lengths.values()) / len(flat))
    assert row["eval/rewards/double/mean"] == pytest.approx(2 * mean, rel=1e-6)


class FixedCompletions:
    """``Completions``' surface with given responses (the second one empty)."""

    def __init__(self):
        self.synced, self.queries = [], None

    def sync(self, model, step):
        self.synced.append(step)

    def sample(self, model, queries):
        self.queries = queries
        return [torch.tensor([5, 6]), torch.tensor([], dtype=torch.long), torch.tensor([7]), torch.tensor([8, 9])], None


def test_sample_and_score_contract(tokenizer):
    seen = {}

    def reward(prompts, completions, completion_ids, answer, **_):
        seen.update(prompts=prompts, completions=completions, ids=completion_ids, answer=answer)
        return [float(len(ids)) for ids in completion_ids]

    completions = FixedCompletions()
    out = sample_and_score(None, tokenizer, completions, [reward], ["hello there", "a dog"], {"answer": [1, 2]}, 2,
                           max_prompt_length=1, step=7)
    assert completions.synced == [7]
    assert [q.tolist() for q in out.queries] == [q.tolist() for q in completions.queries]
    assert all(len(q) == 1 for q in out.queries)  # cut from the left to max_prompt_length
    assert out.responses[1].tolist() == [tokenizer.eos_token_id]  # an empty completion becomes one EOS
    assert seen["prompts"] == ["hello there", "hello there", "a dog", "a dog"] and seen["answer"] == [1, 1, 2, 2]
    assert seen["ids"] == [[5, 6], [tokenizer.eos_token_id], [7], [8, 9]]
    assert seen["completions"] == tokenizer.batch_decode(out.responses, skip_special_tokens=True)
    assert out.rewards.dtype == torch.float32 and out.rewards.tolist() == [2.0, 1.0, 1.0, 2.0]
    assert out.per_func.shape == (4, 1)


def test_message_prompts_get_assistant_messages(tokenizer):
    got = {}

    def reward(prompts, completions, **_):
        got["completions"] = completions
        return [0.0] * len(completions)

    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]]
    sample_and_score(None, tokenizer, FixedCompletions(), [reward], prompts, {}, 2)
    assert all(c[0]["role"] == "assistant" for c in got["completions"])


def test_with_the_generate_dispatcher_a_seed_gives_the_same_row(tokenizer):
    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32).eval()
    completions = Completions(tokenizer, dict(do_sample=True, max_new_tokens=4, eos_token_id=tokenizer.eos_token_id))
    length = lambda prompts, completions, completion_ids, **_: [len(c) for c in completion_ids]  # noqa: E731
    sample = functools.partial(sample_and_score, model, tokenizer, completions, [length])
    rows = []
    for _ in range(2):
        torch.manual_seed(0)
        rows.append(evaluate_policy(sample, [length], ["the cat", "a dog sings", "we walk"],
                                    num_generations=2, batch_size=4))
    assert rows[0] == rows[1]
    assert 1 <= rows[0]["eval/completions/mean_length"] <= 4
    assert rows[0]["eval/rewards/func0/mean"] == \
        pytest.approx(rows[0]["eval/completions/mean_length"])


def test_reward_name():
    assert reward_name(named("acc"), 0) == "acc" and reward_name(lambda: 0, 3) == "func3"
    assert reward_name(len, 1) == "len"


def test_per_sample_values_are_computed_per_call_and_averaged():
    rewards = {"a": [1.0, 3.0], "b": [0.0, 2.0], "c": [5.0, 5.0]}
    lengths = {"a": [1, 2], "b": [3, 4], "c": [5, 6]}
    seen = []

    def per_sample(sampled):  # the completion lengths, and a value missing (NaN) for even lengths
        seen.append(len(sampled.responses))
        n = torch.tensor([float(len(r)) for r in sampled.responses])
        return {"len": n, "odd": torch.where(n % 2 == 1, n, torch.full_like(n, float("nan")))}

    row = evaluate_policy(fixed_sampler(rewards, lengths, []), [named("r"), named("twice")], ["a", "b", "c"],
                          num_generations=2, batch_size=4, per_sample=per_sample)
    assert seen == [4, 2]  # once per sampling call, on that call's completions
    assert row["eval/len"] == pytest.approx(21 / 6, rel=1e-6)
    assert row["eval/odd"] == pytest.approx((1 + 3 + 5) / 3, rel=1e-6)  # nanmean: the even lengths left out
    assert row["eval/reward"] == pytest.approx(16 / 6, rel=1e-6)


def test_summary_gets_every_completion_in_prompt_order():
    rewards = {"a": [1.0], "b": [4.0], "c": [2.0]}
    lengths = {"a": [2], "b": [3], "c": [1]}
    got = {}

    def summary(evaluation):
        got["evaluation"] = evaluation
        return {"eval/reward_mean": evaluation.rewards.mean().item(),
                "eval/reward_std": evaluation.rewards.std(correction=0).item()}

    row = evaluate_policy(fixed_sampler(rewards, lengths, []), [named("r"), named("twice")], ["a", "b", "c"],
                          num_generations=1, batch_size=2, summary=summary,
                          per_sample=lambda s: {"len": torch.tensor([len(r) for r in s.responses])})
    evaluation = got["evaluation"]
    assert evaluation.rewards.tolist() == [1.0, 4.0, 2.0] and evaluation.num_generations == 1
    assert evaluation.per_func.tolist() == [[1.0, 2.0], [4.0, 8.0], [2.0, 4.0]]
    assert [len(r) for r in evaluation.responses] == [2, 3, 1] and evaluation.extra["len"].tolist() == [2, 3, 1]
    # mean 7/3; population variance ((1 - 7/3)^2 + (4 - 7/3)^2 + (2 - 7/3)^2) / 3 = 14/9
    assert row == {"eval/reward_mean": pytest.approx(7 / 3, rel=1e-6),
                   "eval/reward_std": pytest.approx(math.sqrt(14 / 9), rel=1e-6)}


def test_add_special_tokens_puts_the_tokenizers_own_around_text_prompts():
    from tokenizers.processors import TemplateProcessing

    from rlhfkit.rollout.evaluate import encode_prompts
    from rlhfkit.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>",
                                                                                            tok.bos_token_id)])
    plain = tok("the cat sings", add_special_tokens=False)["input_ids"]
    assert [q.tolist() for q in encode_prompts(tok, ["the cat sings"], None)] == [plain]  # TRL's GRPO: none
    with_bos = encode_prompts(tok, ["the cat sings"], None, add_special_tokens=True)[0].tolist()
    assert with_bos == [tok.bos_token_id] + plain
    assert encode_prompts(tok, ["the cat sings"], 2, add_special_tokens=True)[0].tolist() == with_bos[-2:]
