"""Evaluation metrics: hand-computed cases, naive loops, and the model-facing helpers on tiny models."""

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from rlhfkit.eval import (
    distribution,
    evaluate_policies,
    kl_to_reference,
    length_stats,
    pair_classification,
    pairwise_accuracy,
    response_logprobs,
    reward_model_scorer,
    sample,
    sequence_kl,
    win_rate,
)
from rlhfkit.models import RewardModel
from rlhfkit.testing import tiny_causal_lm, tiny_reward_model


def test_win_rate_ties_count_half():
    assert win_rate([1, 2, 3, 4], [0, 2, 5, 4]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert win_rate([1.0], [1.0]) == 0.5
    with pytest.raises(ValueError):
        win_rate([1, 2], [1])
    with pytest.raises(ValueError):
        win_rate([], [])


def test_distribution_and_length_stats_match_numpy():
    values = [0.3, -1.0, 2.5, 0.0, 7.0, 1.25]
    d = distribution(values)
    assert d["mean"] == pytest.approx(np.mean(values))
    assert d["std"] == pytest.approx(np.std(values))
    for key, q in (("p10", 10), ("p50", 50), ("p90", 90)):
        assert d[key] == pytest.approx(np.percentile(values, q))
    assert (d["min"], d["max"]) == (-1.0, 7.0)
    stats = length_stats([0, 4, 4, 8])
    assert stats["mean"] == 4 and stats["empty_share"] == 0.25
    with pytest.raises(ValueError):
        distribution([])


def test_sequence_kl_hand_computed_and_naive_loop():
    # one response of two tokens: p = (1/2, 1/4), p_ref = (1/4, 1/2); second row has one real token
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.9]], dtype=torch.float64))
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.25, 0.1]], dtype=torch.float64))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    k1 = sequence_kl(logp, ref, mask, "k1")
    assert_close(k1, torch.tensor([math.log(2) - math.log(2), math.log(2)], dtype=torch.float64), rtol=1e-6,
                 atol=1e-9)
    # k3 = (r - 1) - log r with r = p_ref / p, summed over masked tokens
    want = [(0.5 - 1 - math.log(0.5)) + (2 - 1 - math.log(2)), 0.5 - 1 - math.log(0.5)]
    assert_close(sequence_kl(logp, ref, mask, "k3"), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    mask = (torch.rand(5, 7, generator=g) > 0.3).float()
    naive = [sum(float(math.exp(ref[i, t] - logp[i, t]) - 1 - (ref[i, t] - logp[i, t])) for t in range(7)
                 if mask[i, t]) for i in range(5)]
    assert_close(sequence_kl(logp, ref, mask, "k3"), torch.tensor(naive), rtol=1e-5, atol=1e-6)


def test_pair_metrics():
    chosen, rejected = [3.0, 2.0, 1.0, 0.5], [1.0, 2.5, 0.0, 0.5]
    assert pairwise_accuracy(chosen, rejected) == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    perfect = pair_classification([5.0] * 20, [1.0] * 20, seed=3)
    assert perfect["accuracy"] == perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0
    assert perfect["pairs"] == 20 and perfect["pairwise_accuracy"] == 1.0
    wrong = pair_classification([1.0] * 20, [5.0] * 20, seed=3)
    assert wrong["accuracy"] == 0.0 and wrong["f1"] == 0.0
    # a threshold above every gap predicts 'second is better' everywhere: recall 0 on shown-first chosen pairs
    cautious = pair_classification([5.0] * 20, [1.0] * 20, threshold=10.0, seed=3)
    assert cautious["recall"] == 0.0 and 0.0 < cautious["accuracy"] < 1.0
    # order of presentation is seeded, so the result is reproducible
    assert pair_classification(chosen, rejected, seed=1) == pair_classification(chosen, rejected, seed=1)


@pytest.fixture(scope="module")
def models(tokenizer):
    return tiny_causal_lm("gpt2", tokenizer, seed=0), tiny_causal_lm("gpt2", tokenizer, seed=1)


def test_sample_order_and_determinism(models, tokenizer):
    policy, _ = models
    a = sample(policy, tokenizer, ["the band", "a robot"], n_per_prompt=3, max_new_tokens=5, batch_size=4, seed=7)
    b = sample(policy, tokenizer, ["the band", "a robot"], n_per_prompt=3, max_new_tokens=5, batch_size=4, seed=7)
    assert a.prompts == ["the band", "a robot"] * 3
    assert a.texts == b.texts and all(len(r) <= 5 for r in a.response_ids)
    assert a.texts == tokenizer.batch_decode(a.response_ids, skip_special_tokens=True)


def test_response_logprobs_equal_a_naive_single_sequence_pass(models, tokenizer):
    policy, _ = models
    s = sample(policy, tokenizer, ["the band", "my friend sings", "we"], n_per_prompt=2, max_new_tokens=6, seed=1)
    s.response_ids[1] = s.response_ids[1][:0]  # an empty response is allowed and fully masked
    lp, mask = response_logprobs(policy, s.query_ids, s.response_ids, tokenizer.pad_token_id, batch_size=4)
    for i, (q, r) in enumerate(zip(s.query_ids, s.response_ids)):
        assert mask[i].sum() == len(r)
        if not len(r):
            continue
        ids = torch.cat([q, r])[None]
        with torch.no_grad():
            logits = policy(input_ids=ids).logits[0, len(q) - 1:-1]
        want = torch.log_softmax(logits.double(), -1).gather(-1, r[:, None]).squeeze(-1)
        assert_close(lp[i, :len(r)].double(), want, rtol=1e-4, atol=1e-4)


def test_kl_to_itself_is_zero_and_to_another_model_positive(models, tokenizer):
    policy, other = models
    s = sample(policy, tokenizer, ["the band", "a robot"], n_per_prompt=4, max_new_tokens=6, seed=2)
    assert kl_to_reference(policy, policy, s, tokenizer.pad_token_id) == pytest.approx([0.0] * 8, abs=1e-5)
    assert np.mean(kl_to_reference(policy, other, s, tokenizer.pad_token_id)) > 0.01


def test_reward_model_scorer_scores_with_eos(tokenizer):
    rm = RewardModel(tiny_reward_model("gpt2", tokenizer, seed=3), tokenizer)
    scorer = reward_model_scorer(rm)
    got = scorer(["the band", "a robot"], [" plays", " sings again"])
    assert got == pytest.approx(rm.score(["the band plays<|eos|>", "a robot sings again<|eos|>"]))
    plain = reward_model_scorer(rm, append_eos=False)
    assert plain(["the band"], [" plays"]) == pytest.approx(rm.score(["the band plays"], add_eos=False))


def test_evaluate_policies(models, tokenizer):
    policy, other = models
    length = lambda prompts, responses: [float(len(r.split())) for r in responses]  # noqa: E731
    res = evaluate_policies({"a": policy, "b": other}, tokenizer, ["the band", "a robot"], scorers={"words": length},
                            reference=policy, samples_per_prompt=3, max_new_tokens=6, seed=0)
    assert res["baseline"] == "a" and set(res["policies"]) == {"a", "b"}
    a, b = res["policies"]["a"], res["policies"]["b"]
    assert a["win_rate"]["words"] == 0.5 and a["kl"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert b["kl"]["mean"] > 0
    assert len(b["samples"]) == 6 and {"prompt", "response", "words"} <= set(b["samples"][0])
    assert b["win_rate"]["words"] == pytest.approx(win_rate([s["words"] for s in b["samples"]],
                                                            [s["words"] for s in a["samples"]]))
    with pytest.raises(ValueError, match="baseline"):
        evaluate_policies({"a": policy}, tokenizer, ["x"], scorers={"w": length}, baseline="zzz")


def test_sample_and_win_rates_equal_hugging_face_generate_with_the_same_seed(models, tokenizer):
    # eval samples through rollout.sampling.sample_responses; pinned to generate_responses called directly
    from rlhfkit.rollout.generate import generate_responses

    policy, other = models
    prompts = ["the band", "a robot", "my friend sings"]
    flat = prompts * 2
    queries = [torch.tensor(tokenizer(p)["input_ids"], dtype=torch.long) for p in flat]
    kwargs = dict(do_sample=True, top_k=0, top_p=1.0, max_new_tokens=6)

    def direct(model):
        torch.manual_seed(3)
        return generate_responses(model, queries, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id, batch_size=4, return_prompt=False,
                                  generation_kwargs=kwargs)

    got = sample(policy, tokenizer, prompts, n_per_prompt=2, max_new_tokens=6, batch_size=4, seed=3)
    want = direct(policy)
    assert all(torch.equal(q, w) for q, w in zip(got.query_ids, queries))  # the same tokenisation
    assert len(got.response_ids) == 6 and all(torch.equal(g, w) for g, w in zip(got.response_ids, want))
    chars = lambda prompts, responses: [float(len(r)) for r in responses]  # noqa: E731
    res = evaluate_policies({"a": policy, "b": other}, tokenizer, prompts, scorers={"chars": chars},
                            samples_per_prompt=2, max_new_tokens=6, batch_size=4, seed=3)
    texts = {name: tokenizer.batch_decode(direct(model), skip_special_tokens=True)
             for name, model in (("a", policy), ("b", other))}
    assert [s["response"] for s in res["policies"]["b"]["samples"]] == texts["b"]
    assert res["policies"]["b"]["win_rate"]["chars"] == win_rate(chars(flat, texts["b"]), chars(flat, texts["a"]))
    assert res["policies"]["b"]["win_rate"]["chars"] != 0.5  # the scores tell the policies apart
