"""Padding-free forwards: what Transformers does with restarting position ids, the packed layout, and
packed log-probs / values equal to the padded ones."""

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, OPTConfig

from rlhfkit.models import AutoModelForCausalLMWithValueHead, CriticModel
from rlhfkit.rollout import (build_batch, forward_batch, pack_layout, pack_rows, packed_forward_batch,
                             packed_token_logprobs, require_padding_free, token_logprobs)
from rlhfkit.testing import tiny_causal_lm, tiny_reward_model

V = 97
FP32 = dict(rtol=1e-5, atol=1e-6)
SEQS = [torch.tensor([5, 9, 12, 3, 44]), torch.tensor([7, 21, 8]), torch.tensor([30, 2, 61, 17, 9, 11, 40])]


def _packed_vs_alone(model, reset=True, use_cache=False):
    """Logits of sequence 2 packed after sequence 1 (no mask) minus those of sequence 2 alone."""
    ids = torch.cat(SEQS[:2])[None]
    pos = torch.cat([torch.arange(len(s)) for s in SEQS[:2]]) if reset else torch.arange(ids.shape[1])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos[None], use_cache=use_cache).logits[0, len(SEQS[0]):]
        alone = model(input_ids=SEQS[1][None], use_cache=use_cache).logits[0]
    return packed, alone


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_restarting_position_ids_keep_packed_sequences_apart(arch, attn):
    """Transformers' masking_utils reads the restarts as boundaries when attention_mask is None and no cache
    is built: sequence 2 packed behind sequence 1 computes what it computes alone."""
    model = tiny_causal_lm(arch, vocab_size=V, attn_implementation=attn).eval()
    assert_close(*_packed_vs_alone(model), **FP32)
    # the two conditions: positions that do not restart attend across, and so does a model that builds a cache
    for kwargs in (dict(reset=False), dict(use_cache=True)):
        packed, alone = _packed_vs_alone(model, **kwargs)
        assert (packed - alone).abs().max() > 1e-3, kwargs


def test_a_model_that_ignores_position_ids_is_refused_by_name():
    opt = AutoModelForCausalLM.from_config(OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                                     num_attention_heads=4, word_embed_proj_dim=32))
    with pytest.raises(ValueError, match=r"padding_free=True cannot be used with OPTForCausalLM \(model_type 'opt'.*"
                                         r"Set padding_free=False"):
        require_padding_free(opt)
    with pytest.raises(ValueError, match="use_padding_free=True"):
        require_padding_free(opt, "use_padding_free")
    for arch in ("gpt2", "llama"):
        model = tiny_causal_lm(arch, vocab_size=V)
        require_padding_free(model)
        require_padding_free(AutoModelForCausalLMWithValueHead(model))
        assert model.training  # the check leaves the training mode as it was


def test_pack_rows_first_fit_decreasing():
    assert pack_rows([5, 9, 3, 7, 2], 10) == [[1], [3, 2], [0, 4]]
    assert pack_rows([5, 9, 3], None) == [[0, 1, 2]]
    assert pack_rows([4, 4, 4], 8) == [[0, 1], [2]]
    with pytest.raises(ValueError, match=r"the DPO forward: sequence 1 has 9 tokens, more than max_packed_length=8"):
        pack_rows([5, 9, 3], 8, "the DPO forward")


def test_pack_layout_hand():
    # row 0 right-padded (3 real), row 1 left-padded (2 real), row 2 full (4 real); the last K = 2 columns scored
    ids = torch.tensor([[11, 12, 13, 0], [0, 0, 21, 22], [31, 32, 33, 34]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]])
    scored = torch.tensor([[True, True], [True, True], [False, True]])
    one = pack_layout(ids, mask, scored)
    assert torch.equal(one.input_ids, torch.tensor([[11, 12, 13, 21, 22, 31, 32, 33, 34]]))
    assert torch.equal(one.position_ids, torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]]))
    # row 0 column 3 is padding (never kept); row 2's third column is not scored
    assert torch.equal(one.keep, torch.tensor([[False, False, True, True, True, False, False, False, True]]))
    assert one.segment.tolist() == [0, 1, 1, 2] and one.column.tolist() == [0, 0, 1, 1] and one.shape == (3, 2)
    # at most 5 tokens per packed row: [row 2 (4)], [row 0 (3), row 1 (2)]; row 2's tail restarts at 0
    two = pack_layout(ids, mask, scored, max_packed_length=5)
    assert torch.equal(two.input_ids, torch.tensor([[31, 32, 33, 34, 0], [11, 12, 13, 21, 22]]))
    assert torch.equal(two.position_ids, torch.tensor([[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]))
    assert two.segment.tolist() == [2, 0, 1, 1] and two.column.tolist() == [1, 0, 0, 1]


def _rollout(seed=0, qlens=(5, 2, 7, 3), rlens=(3, 9, 1, 6)):
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randint(3, V, (n,), generator=g) for n in qlens]
    responses = [torch.randint(3, V, (n,), generator=g) for n in rlens]
    return build_batch(queries, responses, None, pad_token_id=0)


@pytest.mark.parametrize("max_packed_length", [None, 12])
@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_packed_token_logprobs_equal_the_padded_ones_with_gradients(arch, max_packed_length):
    batch = _rollout()
    model = tiny_causal_lm(arch, vocab_size=V)
    weights = torch.randn(batch.mask.shape, generator=torch.Generator().manual_seed(3))
    grads = []
    for packed in (False, True):
        model.zero_grad()
        if packed:
            lp = packed_token_logprobs(model, batch.input_ids[:, :-1], batch.response_ids, batch.attention_mask[:, :-1],
                                       scored=batch.mask.bool(), max_packed_length=max_packed_length,
                                       temperature=0.7).logprobs
        else:
            lp = token_logprobs(model, batch.input_ids[:, :-1], batch.response_ids,
                                attention_mask=batch.attention_mask[:, :-1], position_ids=batch.position_ids[:, :-1],
                                temperature=0.7).logprobs
        lp = lp * batch.mask
        (lp * weights).sum().backward()
        grads.append((lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert_close(grads[1][0], grads[0][0], **FP32)
    for name, g in grads[0][1].items():
        assert_close(grads[1][1][name], g, **FP32, msg=name)


def test_packed_values_and_logits_of_ppo_equal_the_padded_ones():
    batch = _rollout(seed=1)
    model = AutoModelForCausalLMWithValueHead(tiny_causal_lm(vocab_size=V)).eval()
    critic = CriticModel(tiny_reward_model("llama", vocab_size=V, pad_token_id=0)).eval()
    m = batch.mask[..., None]
    with torch.no_grad():
        for policy, value_model in ((model, None), (model, critic), (model.pretrained_model, None)):
            padded = forward_batch(policy, batch, value_model)
            packed = packed_forward_batch(policy, batch, value_model, max_packed_length=16)
            assert_close(packed[0] * batch.mask, padded[0] * batch.mask, **FP32)
            assert_close(packed[2] * m, padded[2] * m, **FP32)
            if padded[1] is None:
                assert packed[1] is None
            else:
                assert_close(packed[1] * batch.mask, padded[1] * batch.mask, **FP32)
