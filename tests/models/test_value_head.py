import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from rlhfkit import AutoModelForCausalLMWithValueHead, CriticModel, create_reference_model


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_forward_shapes_and_classic_tuple(tiny_dirs, arch):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs[arch])
    ids = torch.randint(5, 100, (2, 7))
    logits, loss, values = model(input_ids=ids, labels=ids)
    assert logits.shape == (2, 7, model.config.vocab_size) and logits.dtype == torch.float32
    assert values.shape == (2, 7)
    assert loss is not None and torch.isfinite(loss)
    # logits_to_keep returns the same numbers for the last positions only
    model.train()  # value-head dropout 0.1 (the classic default) must be off in eval mode
    model.eval()
    k_logits, _, k_values = model(input_ids=ids, logits_to_keep=3)
    full_logits, _, full_values = model(input_ids=ids)
    torch.testing.assert_close(k_logits, full_logits[:, -3:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_values, full_values[:, -3:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_save_load_round_trip(tiny_dirs, arch, tmp_path):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs[arch], summary_dropout_prob=0.0)
    torch.nn.init.normal_(model.v_head.summary.weight)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "value_head.safetensors").exists()
    again = AutoModelForCausalLMWithValueHead.from_pretrained(tmp_path, summary_dropout_prob=0.0)
    torch.testing.assert_close(again.v_head.summary.weight, model.v_head.summary.weight, rtol=0, atol=0)
    # the checkpoint is a normal Transformers one
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(5, 100, (1, 6))
    model.eval()
    torch.testing.assert_close(plain(ids).logits, model(input_ids=ids)[0], rtol=1e-5, atol=1e-5)


def test_loads_trl_style_checkpoint_with_v_head_keys(tiny_dirs, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    base.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    state = load_file(tmp_path / "model.safetensors")
    hidden = base.config.n_embd
    state["v_head.summary.weight"] = torch.full((1, hidden), 0.5)
    state["v_head.summary.bias"] = torch.tensor([0.25])
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tmp_path)
    assert torch.all(model.v_head.summary.weight == 0.5) and float(model.v_head.summary.bias) == 0.25


def test_wraps_built_model_passes_dtype_and_init_strategy(tiny_dirs):
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"], dtype=torch.bfloat16)
    assert base.dtype == torch.bfloat16
    model = AutoModelForCausalLMWithValueHead.from_pretrained(base, v_head_init_strategy="normal")
    assert model.pretrained_model is base and float(model.v_head.summary.bias) == 0.0
    logits, _, values = model(input_ids=torch.randint(5, 100, (1, 4)))
    assert logits.dtype == torch.float32 and values.dtype == torch.float32
    assert model.device.type == "cpu"  # attribute falls through to the wrapped model
    with pytest.raises(ValueError, match="v_head_init_strategy"):
        AutoModelForCausalLMWithValueHead(base, v_head_init_strategy="xavier")


def test_reference_model_is_frozen_copy(tiny_dirs):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    ref = create_reference_model(model)
    assert all(not p.requires_grad for p in ref.parameters()) and not ref.training
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(ref.parameters(), model.parameters()))
    assert all(p.requires_grad for p in model.parameters())  # the policy itself is untouched


def test_critic_from_reward_model(tiny_dirs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    critic = CriticModel.from_pretrained(tiny_dirs["reward"])
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["reward"])
    ids = torch.randint(5, 100, (2, 6))
    values = critic(ids, attention_mask=torch.ones_like(ids))
    assert values.shape == (2, 6)
    # the reward model's score is the critic's value at the last token
    torch.testing.assert_close(values[:, -1], rm(ids).logits.squeeze(-1), rtol=1e-5, atol=1e-5)
    critic.save_pretrained(tmp_path)
    again = CriticModel.from_pretrained(tmp_path)
    torch.testing.assert_close(again(ids), values, rtol=1e-6, atol=1e-6)
