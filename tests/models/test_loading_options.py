"""TRL's model flags: revision and remote code for hub ids, bitsandbytes quantization, LoRA variants."""

import json
import sys
import warnings

import pytest

from rlhfkit.models import loading
from rlhfkit.models.loading import ModelSourceError, check_quantization, hub_kwargs, lora_config, quantization_kwargs
from rlhfkit.trainers import RewardConfig, SFTConfig


def test_revision_goes_to_hub_ids_and_warns_for_a_local_folder(tmp_path):
    config = SFTConfig(model_revision="v2", trust_remote_code=True)
    assert hub_kwargs(config, "owner/model", "model_name_or_path") == {"revision": "v2", "trust_remote_code": True}
    with pytest.warns(UserWarning, match=r"SFTConfig.model_revision='v2' has no effect: model_name_or_path .* is a "
                                         r"local folder, which has no revisions"):
        assert hub_kwargs(config, str(tmp_path), "model_name_or_path") == {"trust_remote_code": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults pass nothing and say nothing
        assert hub_kwargs(SFTConfig(), str(tmp_path), "model_name_or_path") == {}
        assert hub_kwargs(SFTConfig(), "owner/model", "model_name_or_path") == {}


def test_revision_and_remote_code_reach_from_pretrained_for_model_and_tokenizer(monkeypatch, tokenizer):
    from rlhfkit.testing import tiny_causal_lm
    from rlhfkit.trainers import setup

    calls = []

    def fake_load(auto_cls, name, flag, **kwargs):
        calls.append((auto_cls.__name__, name, kwargs))
        return tiny_causal_lm("gpt2", tokenizer) if auto_cls.__name__ != "AutoTokenizer" else tokenizer

    monkeypatch.setattr(setup, "load_pretrained", fake_load)
    monkeypatch.setattr(loading, "load_pretrained", fake_load)
    config = SFTConfig(model_name_or_path="owner/model", model_revision="abc123", trust_remote_code=True)
    setup.load_model_and_tokenizer(None, None, config)
    assert [(cls, name) for cls, name, _ in calls] == [("AutoModelForCausalLM", "owner/model"),
                                                       ("AutoTokenizer", "owner/model")]
    for _, _, kwargs in calls:
        assert kwargs["revision"] == "abc123" and kwargs["trust_remote_code"] is True


def test_quantized_loading_refused_without_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed
    check_quantization(SFTConfig())  # nothing asked: nothing checked
    with pytest.raises(ModelSourceError, match=r"^--load_in_4bit: quantized loading needs the bitsandbytes package, "
                                               r"which is not installed \(pip install bitsandbytes"):
        check_quantization(SFTConfig(use_peft=True, load_in_4bit=True))
    with pytest.raises(ModelSourceError, match=r"^--load_in_8bit: quantized loading needs the bitsandbytes"):
        check_quantization(SFTConfig(use_peft=True, load_in_8bit=True))


def test_quantized_loading_refused_without_a_gpu(monkeypatch):
    import importlib.util

    import torch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes"
                        else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelSourceError, match=r"^--load_in_4bit: bitsandbytes quantization needs a CUDA GPU"):
        check_quantization(SFTConfig(use_peft=True, load_in_4bit=True))


def test_quantization_config_follows_the_flags(monkeypatch):
    import torch

    assert quantization_kwargs(SFTConfig()) == {}
    monkeypatch.setenv("LOCAL_RANK", "1")
    four = quantization_kwargs(SFTConfig(use_peft=True, load_in_4bit=True, bnb_4bit_quant_type="fp4",
                                         use_bnb_nested_quant=True, dtype="bfloat16"))
    quant = four["quantization_config"]
    assert quant.load_in_4bit and not quant.load_in_8bit and quant.bnb_4bit_quant_type == "fp4"
    assert quant.bnb_4bit_use_double_quant and quant.bnb_4bit_compute_dtype == torch.bfloat16
    assert four["device_map"] == {"": 1}  # this process's GPU
    eight = quantization_kwargs(SFTConfig(use_peft=True, load_in_8bit=True))["quantization_config"]
    assert eight.load_in_8bit and not eight.load_in_4bit


def test_lora_variants_and_modules_to_save_reach_the_adapter_config(tmp_path, tokenizer):
    from peft import get_peft_model

    from rlhfkit.testing import tiny_causal_lm

    config = SFTConfig(use_peft=True, use_dora=True, use_rslora=True, lora_target_modules="c_attn",
                       lora_modules_to_save="lm_head,wte")
    lora = lora_config(config, "CAUSAL_LM")
    assert lora.use_dora and lora.use_rslora and set(lora.modules_to_save) == {"lm_head", "wte"}
    plain = lora_config(SFTConfig(use_peft=True), "CAUSAL_LM")
    assert not plain.use_dora and not plain.use_rslora and plain.modules_to_save is None
    model = get_peft_model(tiny_causal_lm("gpt2", tokenizer), lora)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["use_dora"] and saved["use_rslora"] and set(saved["modules_to_save"]) == {"lm_head", "wte"}
    assert any("lora_magnitude_vector" in name for name, _ in model.named_parameters())  # DoRA's magnitudes
    # a reward model keeps its score head trained and saved beside the modules asked for
    reward = lora_config(RewardConfig(use_peft=True, lora_modules_to_save="wte"), "SEQ_CLS")
    assert reward.modules_to_save == ["wte"] and reward.task_type == "SEQ_CLS"


def test_lora_modules_to_save_that_do_not_exist_name_the_flag(tokenizer):
    from rlhfkit.models.loading import apply_lora
    from rlhfkit.testing import tiny_causal_lm

    config = SFTConfig(use_peft=True, lora_target_modules="c_attn", lora_modules_to_save="no_such_module")
    with pytest.raises(ModelSourceError, match=r"^--lora_modules_to_save: "):
        apply_lora(tiny_causal_lm("gpt2", tokenizer), config, "CAUSAL_LM")
