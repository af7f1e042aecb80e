"""rlhfkit.core: TRL 0.11.4's ``trl.core`` helpers (hand-computed cases, TRL's formulas as the naive reference)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlhfkit import core


def test_logprobs_from_logits_gather_and_full():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, 0]])
    expected = torch.tensor([[3 - np.log(np.exp(1) + np.exp(2) + np.exp(3)), -np.log(3)]], dtype=torch.float32)
    torch.testing.assert_close(core.logprobs_from_logits(logits, labels), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(core.logprobs_from_logits(logits, None, gather=False), F.log_softmax(logits, -1))


def test_masked_stats_and_whiten_match_trl_formulas():
    values = torch.tensor([[1.0, 2.0, 3.0, 10.0], [4.0, 5.0, 6.0, -3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    valid = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert float(core.masked_mean(values, mask)) == pytest.approx(3.0)
    torch.testing.assert_close(core.masked_mean(values, mask, axis=1), torch.tensor([2.0, 4.5]))
    assert float(core.masked_var(values, mask)) == pytest.approx(float(valid.var()))  # unbiased: 2.5
    assert float(core.masked_var(values, mask, unbiased=False)) == pytest.approx(2.0)
    white = core.masked_whiten(values, mask)
    torch.testing.assert_close(white[mask.bool()], (valid - 3.0) / torch.sqrt(valid.var() + 1e-8))
    kept = core.masked_whiten(values, mask, shift_mean=False)
    torch.testing.assert_close(kept[mask.bool()], (valid - 3.0) / torch.sqrt(valid.var() + 1e-8) + 3.0)
    x = torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(core.whiten(x), (x - x.mean()) * torch.rsqrt(x.var() + 1e-8))
    with pytest.raises(ValueError, match="sum of the mask is zero"):
        core.masked_var(values, torch.zeros_like(mask))
    # rlhfkit's fix: one valid element has variance 0 (TRL: division by zero)
    assert float(core.masked_var(values, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))) == 0.0


def test_clip_entropy_and_dict_helpers():
    x = torch.tensor([-2.0, 0.5, 3.0])
    torch.testing.assert_close(core.clip_by_value(x, torch.tensor(-1.0), torch.tensor(1.0)), torch.tensor([-1.0, 0.5, 1.0]))
    torch.testing.assert_close(core.clip_by_value(x, x - 1, x + 1), x)
    uniform = torch.zeros(1, 2, 4)
    torch.testing.assert_close(core.entropy_from_logits(uniform), torch.full((1, 2), float(np.log(4))))
    assert core.flatten_dict({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a/b": 1, "a/c/d": 2, "e": 3}
    with pytest.raises(ValueError, match="separator"):
        core.flatten_dict({"a/b": 1})
    stacked = core.stack_dicts([{"k": torch.tensor([1.0, 2.0])}, {"k": torch.tensor([3.0])}])
    torch.testing.assert_close(stacked["k"], torch.tensor([[1.0, 2.0], [3.0, core.WANDB_PADDING]]))
    avg = core.average_torch_dicts([{"k": torch.tensor(1.0)}, {"k": torch.tensor(3.0)}])
    assert float(avg["k"]) == 2.0
    assert core.add_suffix({"a": 1}, "_x") == {"a_x": 1}
    conv = core.convert_to_scalar({"a": torch.tensor([2.0]), "b": np.array(3.0), "c": torch.tensor([1.0, 2.0])})
    assert conv["a"] == 2.0 and conv["b"] == 3.0 and conv["c"].shape == (2,)
    np_stats = core.stats_to_np({"t": torch.tensor([1.0], dtype=torch.bfloat16), "s": np.float32(2.0), "o": "x"})
    assert isinstance(np_stats["t"], np.ndarray) and np_stats["t"].dtype == np.float32
    assert np_stats["s"] == 2.0 and isinstance(np_stats["s"], float) and np_stats["o"] == "x"


def test_length_sampler_set_seed_and_top_k_top_p():
    core.set_seed(3)
    sampler = core.LengthSampler(4, 8)
    draws = [sampler() for _ in range(200)]
    assert set(draws) == {4, 5, 6, 7}
    core.set_seed(3)
    assert [sampler() for _ in range(200)] == draws  # set_seed drives NumPy's generator
    with pytest.raises(ValueError, match="min_value < max_value"):
        core.LengthSampler(5, 5)
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    top2 = core.top_k_top_p_filtering(logits.clone(), top_k=2)
    assert torch.isinf(top2[0, [0, 3]]).all() and torch.isfinite(top2[0, [1, 2]]).all()
    nucleus = core.top_k_top_p_filtering(torch.tensor([[0.0, 10.0, 0.0]]), top_p=0.5)
    assert torch.isfinite(nucleus[0, 1]) and torch.isinf(nucleus[0, [0, 2]]).all()


def test_respond_to_batch_shape_and_determinism(tokenizer):
    from rlhfkit import AutoModelForCausalLMWithValueHead
    from rlhfkit.testing import tiny_causal_lm

    model = AutoModelForCausalLMWithValueHead(tiny_causal_lm("gpt2", tokenizer)).eval()
    query = torch.tensor([[5, 6, 7]])
    core.set_seed(0)
    a = core.respond_to_batch(model, query, txt_len=6)
    core.set_seed(0)
    b = core.respond_to_batch(model.pretrained_model, query, txt_len=6, top_k=5)  # a plain causal LM works too
    assert a.shape == (1, 6) and b.shape == (1, 6)
    core.set_seed(0)
    assert torch.equal(core.respond_to_batch(model, query, txt_len=6), a)


def test_empty_device_cache_context():
    calls = []
    with core.PPODecorators.empty_device_cache():
        calls.append(1)

    @core.PPODecorators.empty_device_cache()
    def f(x):
        return x + 1

    assert calls == [1] and f(1) == 2
