"""One probe for what a forward accepts, across Transformers releases (``cache`` vs ``past_key_values``)."""

import inspect
import logging
from types import SimpleNamespace

import torch
from torch import nn

from rlhfkit.models import compat
from rlhfkit.models.shared_prompt import shared_prompt_forward, supports_shared_prompt
from rlhfkit.testing import tiny_causal_lm


class _Recorder(nn.Module):
    """A stand-in decoder whose forward takes the cache under ``cache_name``; records every call."""

    def __init__(self, cache_name: str):
        super().__init__()
        self.config = SimpleNamespace(is_encoder_decoder=False)
        self.calls = []
        name = cache_name

        def forward(input_ids=None, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
            self.calls.append(dict(kwargs, use_cache=use_cache))
            layer = SimpleNamespace(keys=torch.zeros(input_ids.shape[0], 1), values=torch.zeros(input_ids.shape[0], 1))
            return SimpleNamespace(**{name: SimpleNamespace(layers=[layer])}, logits=torch.zeros(*input_ids.shape, 3))

        params = ["input_ids", "attention_mask", "position_ids", "use_cache", cache_name]
        forward.__signature__ = inspect.Signature(
            [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=None) for p in params])
        self.forward = forward


def test_cache_argument_follows_the_forward_signature():
    assert compat.cache_argument(_Recorder("cache")) == "cache"
    assert compat.cache_argument(_Recorder("past_key_values")) == "past_key_values"
    assert compat.cache_argument(nn.Linear(2, 2)) is None


def test_shared_prompt_passes_the_cache_by_the_name_the_model_takes():
    for name in ("cache", "past_key_values"):
        model = _Recorder(name)
        assert supports_shared_prompt(model)
        p = torch.ones(2, 3, dtype=torch.long)
        c = torch.ones(4, 2, dtype=torch.long)
        shared_prompt_forward(model, p, torch.ones_like(p), c, torch.ones_like(c))
        assert name in model.calls[1] and model.calls[1][name] is not None
        other = {"cache", "past_key_values"} - {name}
        assert not other & set(model.calls[1])


def test_output_cache_reads_either_name():
    assert compat.output_cache(SimpleNamespace(cache="new")) == "new"
    assert compat.output_cache(SimpleNamespace(past_key_values="old")) == "old"


def test_unwrap_reaches_the_transformers_model(tokenizer):
    from rlhfkit import AutoModelForCausalLMWithValueHead

    lm = tiny_causal_lm("gpt2", tokenizer)
    wrapped = AutoModelForCausalLMWithValueHead(lm)
    assert compat.unwrap_model(wrapped) is lm
    assert compat.accepts_logits_to_keep(wrapped) and compat.cache_argument(wrapped) is not None


def test_a_missing_fast_path_is_logged_once(caplog):
    class NoKeep(nn.Module):
        def forward(self, input_ids):
            return input_ids

    with caplog.at_level(logging.WARNING, logger="rlhfkit"):
        assert not compat.note_logits_to_keep(NoKeep(), "probe-A")
        assert not compat.note_logits_to_keep(NoKeep(), "probe-A")
    said = [r.getMessage() for r in caplog.records if "NoKeep" in r.getMessage()]
    assert len(said) == 1 and "every position" in said[0]
