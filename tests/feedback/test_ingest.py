"""Generating responses into a project: sampling through the one dispatcher, pinned to Hugging Face ``generate``."""

import torch

from rlhfkit.data import render_prompt
from rlhfkit.feedback import ingest
from rlhfkit.rollout import sampling
from rlhfkit.rollout.generate import generate_responses
from rlhfkit.testing import save_tiny, tiny_causal_lm

PROMPTS = ["the band 1 ", [{"role": "user", "content": "sing"}], "a robot"]


def generate_directly(model, tokenizer, prompts, n, max_new_tokens, seed, temperature, batch_size):
    """Response ids from ``rollout.generate.generate_responses`` called per batch, seeded once: the calls
    ``rlhfkit feedback generate`` made before it sampled through ``sample_responses``."""
    queries = [tokenizer(render_prompt(tokenizer, p), return_tensors="pt").input_ids[0]
               for p in prompts for _ in range(n)]
    kwargs = {"do_sample": True, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    torch.manual_seed(seed)
    out = []
    for start in range(0, len(queries), batch_size):
        out += generate_responses(model, queries[start:start + batch_size], pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id, batch_size=batch_size, return_prompt=False,
                                  generation_kwargs=kwargs)
    return out


def test_sampled_ids_equal_hugging_face_generate_with_the_same_seed(tokenizer):
    model = tiny_causal_lm("gpt2", tokenizer, seed=0)
    # 3 prompts x 3 samples in batches of 4: a short last batch, and the random stream runs across batches
    args = dict(n=3, max_new_tokens=6, seed=5, temperature=0.8, batch_size=4)
    want = generate_directly(model, tokenizer, PROMPTS, **args)
    got = ingest.sample_ids(model, tokenizer, PROMPTS, **args)
    assert len(got) == len(want) == 9
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert len({tuple(g.tolist()) for g in got}) > 1  # really sampled, not one repeated answer
    other = ingest.sample_ids(model, tokenizer, PROMPTS, **{**args, "seed": 6})
    assert not all(torch.equal(g, o) for g, o in zip(got, other))


def test_generation_samples_through_sample_responses(tokenizer, tmp_path, monkeypatch):
    policy = save_tiny(tmp_path / "policy")
    calls = []
    dispatch = sampling.sample_responses

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return dispatch(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_responses", counting)
    seen = []
    texts = ingest._sample(policy, PROMPTS, 2, 6, 1, 1.0, 4, progress=lambda done, total: seen.append((done, total)))
    assert calls == [4, 2] and seen == [(4, 6), (6, 6)]
    model = tiny_causal_lm("gpt2", tokenizer, seed=0)  # what save_tiny saved
    want = generate_directly(model, tokenizer, PROMPTS, 2, 6, 1, 1.0, 4)
    assert texts == [tokenizer.decode(w, skip_special_tokens=True) for w in want]
