"""The value-head model classes as classic PPO code uses them, on four tiny architectures.

Causal (GPT-2, Llama) and encoder-decoder (T5, BART) models are built from configs with
random weights and saved to temporary folders; every loading path a script takes is
exercised: a folder, an already-built model, sharded and unsharded checkpoints, keyword
and config dropout, ``dtype=``, ``generate``, and ``create_reference_model`` with and
without shared layers.
"""

import inspect

import pytest
import torch
from torch import nn
from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification,
                          BartConfig, BartForConditionalGeneration, GenerationConfig)

from rlhfkit import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead, create_reference_model
from rlhfkit.testing import tiny_t5

ARCHS = ["gpt2", "llama", "t5", "bart"]
SEQ2SEQ = {"t5", "bart"}
TOKENS = torch.tensor([[7, 21, 9, 30, 12, 5, 44, 18]])  # (1, 8)


def _seq2seq(arch, tokenizer):
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id)
    if arch == "t5":
        return tiny_t5(tokenizer, seed=1, d_ff=48)
    torch.manual_seed(1)
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
                        max_position_embeddings=64, dropout=0.0, bos_token_id=tokenizer.bos_token_id, **special)
    return BartForConditionalGeneration(config)


@pytest.fixture(scope="module")
def folders(tiny_dirs, tokenizer, tmp_path_factory):
    out = {"gpt2": tiny_dirs["gpt2"], "llama": tiny_dirs["llama"]}
    for arch in SEQ2SEQ:
        out[arch] = tmp_path_factory.mktemp(arch)
        _seq2seq(arch, tokenizer).save_pretrained(out[arch])
    return out


def _classes(arch):
    if arch in SEQ2SEQ:
        return AutoModelForSeq2SeqLMWithValueHead, AutoModelForSeq2SeqLM
    return AutoModelForCausalLMWithValueHead, AutoModelForCausalLM


def _inputs(arch):
    if arch in SEQ2SEQ:
        return {"input_ids": TOKENS, "decoder_input_ids": TOKENS[:, :5]}
    return {"input_ids": TOKENS}


def _last_hidden(model, arch, inputs):
    out = model.pretrained_model(**inputs, output_hidden_states=True)
    return (out.decoder_hidden_states if arch in SEQ2SEQ else out.hidden_states)[-1]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_gives_logits_loss_and_one_value_per_position(folders, arch):
    cls, _ = _classes(arch)
    model = cls.from_pretrained(folders[arch]).eval()
    hidden = model.config.d_model if arch in SEQ2SEQ else model.config.hidden_size
    head = model.v_head.summary
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (hidden, 1)
    assert float(head.bias.abs()) > 0  # the default initialisation is Linear's own, not zeros
    inputs = _inputs(arch)
    output = model(**inputs)
    assert isinstance(output, tuple) and len(output) == 3
    logits, loss, values = output
    positions = inputs.get("decoder_input_ids", inputs["input_ids"]).shape[1]
    assert logits.shape == (1, positions, model.config.vocab_size) and loss is None
    assert values.shape == (1, positions)
    with torch.no_grad():
        expected = head(_last_hidden(model, arch, inputs)).squeeze(-1)
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-6)


def test_normal_initialisation_strategy(folders):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(folders["gpt2"], v_head_init_strategy="normal",
                                                              v_head_initializer_range=0.01)
    assert float(model.v_head.summary.bias) == 0.0
    assert 0.003 < float(model.v_head.summary.weight.std()) < 0.03


@pytest.mark.parametrize("arch", ARCHS)
def test_a_built_model_is_wrapped_as_is_and_dropout_comes_from_config_or_keyword(folders, arch):
    cls, auto = _classes(arch)
    base = auto.from_pretrained(folders[arch])
    assert cls.from_pretrained(base).pretrained_model is base
    assert cls.from_pretrained(base).v_head.dropout.p == 0.1  # the classic default
    base.config.summary_dropout_prob = 0.25
    assert cls.from_pretrained(base).v_head.dropout.p == 0.25
    assert cls.from_pretrained(folders[arch], summary_dropout_prob=0.4).v_head.dropout.p == 0.4
    assert cls.from_pretrained(base, summary_dropout_prob=0.0).v_head.dropout(torch.ones(3)).eq(1).all()


@pytest.mark.parametrize("shard", [None, "100KB"], ids=["one-file", "sharded"])
@pytest.mark.parametrize("arch", ARCHS)
def test_saved_folder_reloads_in_both_classes(folders, tmp_path, arch, shard):
    cls, auto = _classes(arch)
    model = cls.from_pretrained(folders[arch])
    torch.nn.init.uniform_(model.v_head.summary.weight, -1.0, 1.0)  # a head that no fresh load could draw
    model.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard)

    again = cls.from_pretrained(tmp_path).state_dict()
    ours = model.state_dict()
    assert set(again) == set(ours) and {"v_head.summary.weight", "v_head.summary.bias"} <= set(ours)
    assert all(torch.equal(again[k], ours[k]) for k in ours)

    plain = auto.from_pretrained(tmp_path).state_dict()  # a normal Transformers checkpoint
    original = auto.from_pretrained(folders[arch]).state_dict()
    assert set(plain) == set(original)
    assert all(torch.equal(plain[k], original[k]) for k in original)
    assert all(torch.equal(ours[k], plain[k]) for k in ours if not k.startswith("v_head."))


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_is_the_wrapped_models(folders, arch):
    cls, _ = _classes(arch)
    model = cls.from_pretrained(folders[arch]).eval()
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, do_sample=False,
                              pad_token_id=model.config.pad_token_id, eos_token_id=model.config.eos_token_id,
                              decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None))
    out = model.generate(input_ids=TOKENS, generation_config=config)
    assert torch.equal(out, model.pretrained_model.generate(input_ids=TOKENS, generation_config=config))
    if arch in SEQ2SEQ:
        assert out.shape == (1, 7) and int(out[0, 0]) == model.config.decoder_start_token_id
    else:
        assert out.shape == (1, TOKENS.shape[1] + 6) and torch.equal(out[:, :TOKENS.shape[1]], TOKENS)


@pytest.mark.parametrize("arch", ARCHS)
def test_dtype_keyword_reaches_the_language_model(folders, arch):
    cls, _ = _classes(arch)
    model = cls.from_pretrained(folders[arch], dtype=torch.bfloat16)
    heads = [getattr(model.pretrained_model, n) for n in cls.lm_head_namings if hasattr(model.pretrained_model, n)]
    assert heads and all(h.weight.dtype == torch.bfloat16 for h in heads)
    logits, _, values = model(**_inputs(arch))
    assert logits.dtype == torch.float32 and torch.isfinite(values).all()


def test_class_attributes_that_scripts_read():
    assert AutoModelForCausalLMWithValueHead.transformers_parent_class is AutoModelForCausalLM
    assert AutoModelForSeq2SeqLMWithValueHead.transformers_parent_class is AutoModelForSeq2SeqLM
    assert AutoModelForCausalLMWithValueHead.lm_head_namings == ["lm_head", "embed_out"]
    assert {"lm_head", "embed_out"} <= set(AutoModelForSeq2SeqLMWithValueHead.lm_head_namings)
    expected_args = ("summary_dropout_prob", "v_head_initializer_range", "v_head_init_strategy")
    assert AutoModelForCausalLMWithValueHead.supported_args == expected_args
    assert AutoModelForSeq2SeqLMWithValueHead.supported_args == expected_args


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_wrapper_attributes_of_both_classes(folders, arch):
    cls, _ = _classes(arch)
    model = cls.from_pretrained(folders[arch])
    assert model.is_peft_model is False
    assert model.device.type == "cpu" and model.config is model.pretrained_model.config  # from the wrapped model
    assert model.v_head is model._modules["v_head"]  # the module's own submodule first
    with pytest.raises(AttributeError):
        model.no_such_attribute
    assert {"v_head.summary.weight", "v_head.summary.bias"} <= set(model.state_dict())
    with pytest.raises(NotImplementedError, match="save_pretrained"):
        model.push_to_hub("somewhere")


def test_each_value_head_class_defines_its_own_methods():
    for cls in (AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead):
        for name, value in vars(cls).items():
            fn = getattr(value, "__func__", getattr(value, "fget", value))  # classmethod, property
            if inspect.isfunction(fn):  # not data such as transformers_parent_class
                assert fn.__qualname__ == f"{cls.__name__}.{name}", (cls.__name__, name, fn.__qualname__)


def test_models_without_a_language_model_head_are_refused(tiny_dirs):
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["reward"])
    for cls in (AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead):
        with pytest.raises(ValueError, match="does not have a language model head"):
            cls.from_pretrained(classifier)
    with pytest.raises(ValueError, match="should be a string or a PreTrainedModel"):
        AutoModelForCausalLMWithValueHead.from_pretrained(42)


# ---------------------------------------------------------------- reference models
QKV = "pretrained_model.transformer.h.{}.attn.c_attn.weight"


def _one_update(model):
    """One AdamW step with a large learning rate on a language-model loss."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    model(input_ids=ids, labels=ids)[1].backward()
    optimizer.step()


def test_reference_copy_stays_put_while_the_policy_trains(tiny_dirs):
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    ref = create_reference_model(policy)
    start = {n: p.detach().clone() for n, p in policy.named_parameters()}
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    assert all(torch.equal(p, start[n]) for n, p in ref.named_parameters())
    _one_update(policy)
    assert all(torch.equal(p, start[n]) for n, p in ref.named_parameters())
    for layer in (0, 1):
        assert not torch.equal(policy.get_parameter(QKV.format(layer)), start[QKV.format(layer)])


def test_shared_layers_are_frozen_in_the_policy_and_not_copied(tiny_dirs):
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    ref = create_reference_model(policy, num_shared_layers=1)
    shared, own = QKV.format(0), QKV.format(1)
    start = {n: policy.get_parameter(n).detach().clone() for n in (shared, own)}
    assert ref.get_parameter(shared) is policy.get_parameter(shared)  # one tensor for both models
    assert ref.get_parameter(own).data_ptr() != policy.get_parameter(own).data_ptr()
    embeddings = policy.get_parameter("pretrained_model.transformer.wte.weight")
    assert not embeddings.requires_grad and not policy.get_parameter(shared).requires_grad
    _one_update(policy)
    assert torch.equal(policy.get_parameter(shared), start[shared])
    assert not torch.equal(policy.get_parameter(own), start[own])
    assert torch.equal(ref.get_parameter(own), start[own])


def test_shared_layers_with_an_explicit_pattern_and_a_wrong_one(tiny_dirs):
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["llama"])
    ref = create_reference_model(policy, num_shared_layers=1, pattern="model.layers.{layer}")
    frozen = {n for n, p in policy.named_parameters() if not p.requires_grad}
    assert any("embed_tokens" in n for n in frozen) and any(".layers.0." in n for n in frozen)
    assert not any(".layers.1." in n or "lm_head" in n or "v_head" in n for n in frozen)
    assert not any(p.requires_grad for p in ref.parameters())
    with pytest.raises(ValueError, match="Layer pattern could not be matched"):
        create_reference_model(policy, num_shared_layers=1, pattern="decoder.blocks.{layer}")
