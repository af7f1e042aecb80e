"""cpu_fp32_attention: float32 SDPA on CPU under autocast, unchanged elsewhere."""

import copy
import json

import pytest
import torch

from rlhfkit.models import AutoModelForCausalLMWithValueHead
from rlhfkit.models.fused import CPU_FP32_SDPA, cpu_fp32_attention
from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_float32_outputs_are_unchanged(tok, arch):
    model = tiny_causal_lm(arch, tok).eval()
    switched = copy.deepcopy(model)
    assert cpu_fp32_attention(switched)
    assert switched.config._attn_implementation == CPU_FP32_SDPA
    ids = torch.randint(4, tok.vocab_size, (3, 11))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a left-padded row: the mask path, not only is_causal
    with torch.no_grad():
        torch.testing.assert_close(switched(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits,
                                   rtol=0, atol=0)


def test_bf16_autocast_runs_attention_in_float32_and_gradients_flow(tok):
    model = tiny_causal_lm("gpt2", tok).eval()
    switched = copy.deepcopy(model)
    cpu_fp32_attention(switched)
    seen = []
    orig = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append(q.dtype)
        return orig(q, k, v, *a, **kw)

    ids = torch.randint(4, tok.vocab_size, (2, 9))
    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = switched(ids).logits
            base = model(ids).logits
    finally:
        torch.nn.functional.scaled_dot_product_attention = orig
    n = model.config.n_layer
    assert seen == [torch.float32] * n + [torch.bfloat16] * n  # switched model first, then the plain one
    with torch.no_grad():
        full = model(ids).logits
    # float32 attention is at least as close to the float32 model as bf16 attention
    assert (out.float() - full).abs().max() <= (base.float() - full).abs().max() * 1.05
    out.float().sum().backward()
    assert all(p.grad is not None for p in switched.parameters() if p.requires_grad and p.dim() > 1)


def test_value_head_model_switches_and_config_file_is_clean(tok, tmp_path):
    model = AutoModelForCausalLMWithValueHead(tiny_causal_lm("gpt2", tok))
    assert cpu_fp32_attention(model)
    assert cpu_fp32_attention(model)  # idempotent: registered once, still sdpa-backed
    model.save_pretrained(tmp_path)
    assert CPU_FP32_SDPA not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_non_sdpa_model_is_left_alone(tok):
    model = tiny_causal_lm("gpt2", tok)
    model.set_attn_implementation("eager")
    assert not cpu_fp32_attention(model)
    assert model.config._attn_implementation == "eager"
    assert not cpu_fp32_attention(torch.nn.Linear(2, 2))
