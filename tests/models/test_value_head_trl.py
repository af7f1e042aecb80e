"""TRL 0.11.4's ``tests/test_modeling_value_head.py``, ported to local tiny models.

Hub model ids become tiny random models saved to a temp folder (GPT-2 and Llama for the
causal class, T5 and BART for the seq2seq one); ``self.tmp_dir`` becomes ``tmp_path``. The
assertions are TRL's. Skipped from TRL: ``test_push_to_hub`` (needs the hub).
"""

import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration,
                          GenerationConfig, T5Config, T5ForConditionalGeneration)

from rlhfkit import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead, create_reference_model


def tiny_seq2seq(kind: str, tokenizer):
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    if kind == "t5":
        return T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2,
                                                   num_heads=4, dropout_rate=0.0, **ids))
    return BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.0,
        bos_token_id=tokenizer.bos_token_id, **ids))


@pytest.fixture(scope="module")
def seq2seq_dirs(tmp_path_factory, tokenizer):
    dirs = {}
    for kind in ("t5", "bart"):
        path = tmp_path_factory.mktemp(kind)
        tiny_seq2seq(kind, tokenizer).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[kind] = path
    return dirs


CASES = [("causal", AutoModelForCausalLMWithValueHead, AutoModelForCausalLM),
         ("seq2seq", AutoModelForSeq2SeqLMWithValueHead, AutoModelForSeq2SeqLM)]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request, tiny_dirs, seq2seq_dirs):
    kind, trl_cls, hf_cls = request.param
    names = [tiny_dirs["gpt2"], tiny_dirs["llama"]] if kind == "causal" else [seq2seq_dirs["t5"], seq2seq_dirs["bart"]]
    return kind, trl_cls, hf_cls, names


def _ids(kind):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
    return {"input_ids": ids} if kind == "causal" else {"input_ids": ids, "decoder_input_ids": ids}


def test_value_head(case):
    _, trl_cls, _, names = case
    for name in names:
        assert hasattr(trl_cls.from_pretrained(name), "v_head")


def test_value_head_shape(case):
    _, trl_cls, _, names = case
    for name in names:
        assert trl_cls.from_pretrained(name).v_head.summary.weight.shape[0] == 1


def test_value_head_init_random(case):
    _, trl_cls, _, names = case
    for name in names:
        model = trl_cls.from_pretrained(name)
        assert not torch.allclose(model.v_head.summary.bias, torch.zeros_like(model.v_head.summary.bias))


def test_value_head_not_str(case):
    _, trl_cls, hf_cls, names = case
    for name in names:
        assert hasattr(trl_cls.from_pretrained(hf_cls.from_pretrained(name)), "v_head")


@pytest.mark.parametrize("shard", [None, "100KB"])
def test_from_save_trl(case, tmp_path, shard):
    _, trl_cls, _, names = case
    for i, name in enumerate(names):
        model = trl_cls.from_pretrained(name)
        out = tmp_path / str(i)
        model.save_pretrained(out, **({"max_shard_size": shard} if shard else {}))
        if shard:
            assert (out / "model.safetensors.index.json").exists()  # really sharded
        again = trl_cls.from_pretrained(out)
        for key in again.state_dict():
            assert torch.allclose(again.state_dict()[key], model.state_dict()[key])


@pytest.mark.parametrize("shard", [None, "100KB"])
def test_from_save_transformers(case, tmp_path, shard):
    _, trl_cls, _, names = case
    for i, name in enumerate(names):
        transformers_model = trl_cls.transformers_parent_class.from_pretrained(name)
        trl_model = trl_cls.from_pretrained(name)
        trl_model.save_pretrained(tmp_path / str(i), **({"max_shard_size": shard} if shard else {}))
        from_save = trl_cls.transformers_parent_class.from_pretrained(tmp_path / str(i))
        for key in transformers_model.state_dict():
            assert torch.allclose(from_save.state_dict()[key], transformers_model.state_dict()[key])
        for key in trl_model.state_dict():
            if "v_head" not in key:
                assert key in transformers_model.state_dict()
                assert torch.allclose(trl_model.state_dict()[key], transformers_model.state_dict()[key])
        assert set(from_save.state_dict().keys()) == set(transformers_model.state_dict().keys())


def test_inference(case):
    kind, trl_cls, _, names = case
    for name in names:
        assert len(trl_cls.from_pretrained(name)(**_ids(kind))) == 3  # logits, loss, values


def test_dropout_config(case):
    _, trl_cls, hf_cls, names = case
    for name in names:
        pretrained = hf_cls.from_pretrained(name)
        pretrained.config.summary_dropout_prob = 0.5
        assert trl_cls.from_pretrained(pretrained).v_head.dropout.p == 0.5


def test_dropout_kwargs(case):
    _, trl_cls, _, names = case
    for name in names:
        assert trl_cls.from_pretrained(name, **{"summary_dropout_prob": 0.5}).v_head.dropout.p == 0.5
        assert trl_cls.from_pretrained(name, summary_dropout_prob=0.5).v_head.dropout.p == 0.5


def test_generate(case):
    kind, trl_cls, _, names = case
    for name in names:
        out = trl_cls.from_pretrained(name).generate(**_ids(kind), generation_config=GenerationConfig(max_new_tokens=9))
        assert out.shape[0] == 1


def test_transformers_bf16_kwargs(case):
    kind, trl_cls, _, names = case
    for name in names:
        trl_model = trl_cls.from_pretrained(name, dtype=torch.bfloat16)
        heads = [n for n in trl_cls.lm_head_namings if hasattr(trl_model.pretrained_model, n)]
        assert heads
        assert all(getattr(trl_model.pretrained_model, n).weight.dtype == torch.bfloat16 for n in heads)
        dummy = torch.LongTensor([[0, 1, 0, 1]])
        _ = trl_model(input_ids=dummy) if kind == "causal" else trl_model(input_ids=dummy, decoder_input_ids=dummy)


def test_class_attributes_as_trl():
    assert AutoModelForCausalLMWithValueHead.transformers_parent_class is AutoModelForCausalLM
    assert AutoModelForCausalLMWithValueHead.lm_head_namings == ["lm_head", "embed_out"]
    assert AutoModelForSeq2SeqLMWithValueHead.transformers_parent_class is AutoModelForSeq2SeqLM
    for cls in (AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead):
        assert cls.supported_args == ("summary_dropout_prob", "v_head_initializer_range", "v_head_init_strategy")


def test_model_without_lm_head_is_refused(tiny_dirs):
    from transformers import AutoModelForSequenceClassification

    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["reward"])
    with pytest.raises(ValueError, match="does not have a language model head"):
        AutoModelForCausalLMWithValueHead.from_pretrained(classifier)


# ---------------------------------------------------------------- TestReferenceModel
LAYER = "pretrained_model.transformer.h.{layer}.attn.c_attn.weight"


def test_independent_reference(tiny_dirs):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1)
    ids = torch.tensor([[0, 1, 2, 3]])
    ref = create_reference_model(model)
    before = [model.get_parameter(LAYER.format(layer=i)).data.clone() for i in (0, 1)]
    ref_before = [ref.get_parameter(LAYER.format(layer=i)).data.clone() for i in (0, 1)]
    model(input_ids=ids, labels=ids)[1].backward()
    optimizer.step()
    after = [model.get_parameter(LAYER.format(layer=i)).data.clone() for i in (0, 1)]
    ref_after = [ref.get_parameter(LAYER.format(layer=i)).data.clone() for i in (0, 1)]
    for b, rb in zip(before, ref_before):
        assert (b == rb).all()
    for rb, ra in zip(ref_before, ref_after):
        assert (rb == ra).all()
    for b, a in zip(before, after):
        assert not (b == a).all()


def test_shared_layers(tiny_dirs):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1)
    ids = torch.tensor([[0, 1, 2, 3]])
    ref = create_reference_model(model, num_shared_layers=1)
    first, second = LAYER.format(layer=0), LAYER.format(layer=1)
    before = {n: model.get_parameter(n).data.clone() for n in (first, second)}
    ref_before = {n: ref.get_parameter(n).data.clone() for n in (first, second)}
    model(input_ids=ids, labels=ids)[1].backward()
    optimizer.step()
    for n in (first, second):
        assert (before[n] == ref_before[n]).all()
        assert (ref.get_parameter(n).data == ref_before[n]).all()  # the reference never moves
    assert (model.get_parameter(first).data == before[first]).all()  # shared layer frozen in the policy
    assert not (model.get_parameter(second).data == before[second]).all()
    # rlhfkit: shared layers are the same tensors (no second copy), unshared ones are copies
    assert ref.get_parameter(first) is model.get_parameter(first)
    assert ref.get_parameter(second).data_ptr() != model.get_parameter(second).data_ptr()


def test_shared_layers_pattern_and_errors(tiny_dirs):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["llama"])
    ref = create_reference_model(model, num_shared_layers=1, pattern="model.layers.{layer}")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("layers.1" not in n and "lm_head" not in n and "v_head" not in n for n in frozen)
    assert any("layers.0" in n for n in frozen) and any("embed_tokens" in n for n in frozen)
    assert not any(p.requires_grad for p in ref.parameters())
    with pytest.raises(ValueError, match="Layer pattern could not be matched"):
        create_reference_model(model, num_shared_layers=1, pattern="no.such.{layer}")
