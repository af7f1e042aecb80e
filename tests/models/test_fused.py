import copy

import pytest
import torch
from transformers.activations import FastGELUActivation, NewGELUActivation

from rlhfkit.models import FusedTanhGELU, fuse_activations
from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer


@pytest.mark.parametrize("composed", [NewGELUActivation, FastGELUActivation])
def test_fused_gelu_matches_composed_values_and_gradients(composed):
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    ref, out = composed()(x), FusedTanhGELU()(x2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)
    ref.sum().backward()
    out.sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=1e-9)


def test_hand_value():
    # gelu_tanh(1) = 0.5 * (1 + tanh(sqrt(2/pi) * 1.044715))
    expected = 0.5 * (1 + torch.tanh(torch.tensor((2 / torch.pi) ** 0.5 * 1.044715, dtype=torch.float64)))
    assert abs(FusedTanhGELU()(torch.tensor(1.0, dtype=torch.float64)) - expected) < 1e-12


def test_gpt2_swap_keeps_outputs_and_checkpoint():
    tok = tiny_tokenizer()
    model = tiny_causal_lm("gpt2", tok)
    fused = copy.deepcopy(model)
    n_layers = model.config.n_layer
    assert fuse_activations(fused) == n_layers
    assert fuse_activations(fused) == 0  # idempotent
    ids = torch.randint(0, len(tok), (2, 12))
    torch.testing.assert_close(fused(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert fused.state_dict().keys() == model.state_dict().keys()
    assert fused.config.to_dict() == model.config.to_dict()


def test_llama_has_nothing_to_swap():
    tok = tiny_tokenizer()
    assert fuse_activations(tiny_causal_lm("llama", tok)) == 0
