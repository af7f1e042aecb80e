"""rollout.decode: the lean sampling loop samples exactly as HF generate and keeps log-probs/values
that equal the recomputed ones; PPOTrainer's reuse gives the same step as recomputing."""

import copy

import pytest
import torch

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from rlhfkit.rollout import build_batch, forward_batch, generate_responses
from rlhfkit.rollout.decode import RolloutCache, generate_with_logprobs, lean_settings

KW = dict(do_sample=True, top_k=0, top_p=1.0, max_new_tokens=7)


def _model(tiny_dirs, arch):
    torch.manual_seed(0)
    return AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs[arch]).eval()


def _queries():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(10, 200, (n,), generator=g) for n in (3, 6, 1, 4)]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("extra", [{}, {"min_new_tokens": 4, "temperature": 0.7}])
def test_same_tokens_as_hf_generate_and_logprobs_values_equal_recomputed(tiny_dirs, tokenizer, arch, extra):
    model = _model(tiny_dirs, arch)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    # a model that ends rows early: EOS made likely, so stopping and post-EOS padding are exercised
    with torch.no_grad():
        model.pretrained_model.get_output_embeddings().weight[eos] *= 30
    kw = dict(KW, pad_token_id=pad, eos_token_id=eos, **extra)
    queries = _queries()
    torch.manual_seed(11)
    ref = generate_responses(model, queries, pad_token_id=pad, eos_token_id=eos, batch_size=4, return_prompt=False,
                             generation_kwargs=kw)
    config = lean_settings(model, kw)
    assert config is not None
    torch.manual_seed(11)
    out, records = generate_with_logprobs(model, queries, config, pad_token_id=pad, eos_token_id=eos, batch_size=4,
                                          return_prompt=False)
    assert [r.tolist() for r in out] == [r.tolist() for r in ref]
    assert any(len(r) < 7 for r in out), "the test wants a row that stopped at EOS"
    batch = build_batch(queries, out, None, pad)
    with torch.no_grad():
        logprobs, values, _ = forward_batch(model, batch)
    for i, (_, r, lp, v) in enumerate(records):
        torch.testing.assert_close(lp, logprobs[i, :len(r)], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, values[i, :len(r)], rtol=1e-5, atol=1e-5)


def test_settings_that_change_sampling_go_to_hf_generate(tiny_dirs):
    model = _model(tiny_dirs, "gpt2")
    assert lean_settings(model, dict(KW)) is not None
    for bad in ({"top_k": 50}, {"top_p": 0.9}, {"repetition_penalty": 1.2}, {"do_sample": False},
                {"num_return_sequences": 2}, {"no_repeat_ngram_size": 2}):
        assert lean_settings(model, dict(KW, **bad)) is None, bad
    assert lean_settings(model, {"do_sample": True, "max_new_tokens": 4}) is None or \
        model.generation_config.top_k in (None, 0)  # generate's own default top_k=50 must not be bypassed
    assert lean_settings(model, {"do_sample": True}) is None  # no max_new_tokens
    custom = copy.deepcopy(model)
    custom.pretrained_model.generation_config.repetition_penalty = 1.3  # from the checkpoint's config
    assert lean_settings(custom, dict(KW)) is None


def test_cache_answers_only_for_the_same_tokens_and_version():
    cache = RolloutCache()
    q, r = torch.tensor([1, 2]), torch.tensor([3, 4, 5])
    cache.store(0, [(q, r, torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([0.5, 0.6, 0.7]))])
    lp, v = cache.lookup(0, [q], [r], 4)
    assert lp.tolist() == [[-1.0, -2.0, -3.0, 0.0]] and v[0, :3].tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert cache.lookup(1, [q], [r], 4) is None  # an update happened since sampling
    assert cache.lookup(0, [q], [r[:2]], 4) is None  # the response was edited
    assert cache.lookup(0, [q, q], [r, torch.tensor([9])], 4) is None  # one foreign row: recompute all


def _run(tiny_dirs, tokenizer, reuse, steps=3):
    torch.manual_seed(0)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    cfg = PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-3, seed=0)
    cfg.reuse_rollout_logprobs = reuse
    trainer = PPOTrainer(cfg, model, None, tokenizer)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    out = []
    for s in range(steps):
        torch.manual_seed(100 + s)
        queries = _queries()
        responses = trainer.generate(queries, return_prompt=False, **dict(KW, min_new_tokens=2))
        n = len(calls)
        stats = trainer.step(queries, responses, [torch.tensor(float(i) - 1.5) for i in range(4)])
        out.append((responses, stats, len(calls) - n))
    return trainer, out


def test_ppo_step_with_reused_rollouts_equals_recomputing(tiny_dirs, tokenizer):
    trainer, reused = _run(tiny_dirs, tokenizer, True)
    _, recomputed = _run(tiny_dirs, tokenizer, False)
    assert trainer._reuse_verified
    for (ra, sa, calls_a), (rb, sb, calls_b) in zip(reused, recomputed):
        assert [r.tolist() for r in ra] == [r.tolist() for r in rb]
        for key in ("objective/kl", "ppo/loss/policy", "ppo/loss/value", "ppo/policy/approxkl", "ppo/val/mean",
                    "ppo/returns/mean"):
            assert sa[key] == pytest.approx(sb[key], rel=1e-4, abs=1e-6), key
    # step 1 verifies (policy forward: 2 rollout chunks + 4 epochs x 2 minibatches); later steps skip the 2 chunks
    assert [c for *_, c in reused] == [10, 8, 8] and [c for *_, c in recomputed] == [10, 10, 10]


def test_mismatch_turns_reuse_off_with_a_warning(tiny_dirs, tokenizer):
    torch.manual_seed(0)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    trainer = PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-3), model, None, tokenizer)
    queries = _queries()
    responses = trainer.generate(queries, return_prompt=False, **KW)
    for entry in trainer._rollout_cache.entries.values():
        entry[0].add_(0.01)  # a sampler whose numerics disagree with the trainer's
    with pytest.warns(UserWarning, match="recomputes them from now on"):
        trainer.step(queries, responses, [torch.tensor(1.0)] * 4)
    assert not trainer._reuse_rollouts
