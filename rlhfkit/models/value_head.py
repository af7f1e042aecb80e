"""A causal LM with a scalar value head: the classic PPO policy-and-critic in one model.

``AutoModelForCausalLMWithValueHead`` wraps any ``AutoModelForCausalLM`` and adds a linear
head on the last hidden state that predicts the value of each prefix. It keeps the public
face of the class Hugging Face TRL removed in 1.x: ``from_pretrained`` (local directory,
hub id or an already-built model), ``save_pretrained``, ``generate`` and a forward that
returns ``(lm_logits, loss, values)``.

On disk the wrapped model is a normal Transformers checkpoint (``AutoModelForCausalLM``
loads it as is); the head lives beside it in ``value_head.safetensors``. Checkpoints that
old TRL wrote (``v_head.*`` keys inside the model's weight files) load too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.utils import cached_file

from .compat import cache_argument, note_logits_to_keep, output_cache

VALUE_HEAD_FILE = "value_head.safetensors"
_HEAD_KWARGS = ("summary_dropout_prob", "v_head_initializer_range", "v_head_init_strategy")
# Files in which TRL <= 0.11 stored its `v_head.*` weights next to the model's own.
_TRL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ValueHead(nn.Module):
    """Dropout then ``Linear(hidden_size, 1)``; named ``summary`` like TRL's for checkpoint compatibility."""

    def __init__(self, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # The head stays float32 even under a bf16 backbone: values feed GAE and a squared loss.
        hidden = self.dropout(hidden_states).to(self.summary.weight.dtype)
        return self.summary(hidden).squeeze(-1)  # (B, T)


def _hidden_size(config) -> int:
    for name in ("hidden_size", "n_embd", "d_model", "word_embed_proj_dim"):
        if getattr(config, name, None):
            return getattr(config, name)
    text_config = getattr(config, "get_text_config", lambda: None)()
    if text_config is not None and text_config is not config:
        return _hidden_size(text_config)
    raise ValueError(f"cannot find the hidden size in config of type {type(config).__name__}")


class AutoModelForCausalLMWithValueHead(nn.Module):
    """Causal LM + value head. ``forward`` returns ``(lm_logits, loss, values)``.

    Attributes the classic API exposed: ``pretrained_model``, ``v_head``, ``config``,
    ``is_peft_model``. Unknown attributes fall through to the wrapped model, so
    ``model.device``, ``model.generation_config`` and friends work.
    """

    def __init__(self, pretrained_model: PreTrainedModel, summary_dropout_prob: float | None = None,
                 v_head_initializer_range: float = 0.2, v_head_init_strategy: str | None = None):
        super().__init__()
        self.pretrained_model = pretrained_model
        config = pretrained_model.config
        if summary_dropout_prob is None:
            summary_dropout_prob = getattr(config, "summary_dropout_prob", 0.1)
        self.v_head = ValueHead(_hidden_size(config), summary_dropout_prob)
        if v_head_init_strategy == "normal":
            nn.init.normal_(self.v_head.summary.weight, std=v_head_initializer_range)
            nn.init.zeros_(self.v_head.summary.bias)
        elif v_head_init_strategy is not None:
            raise ValueError(f"v_head_init_strategy must be None or 'normal', got {v_head_init_strategy!r}")
        self.v_head.to(device=_first_device(pretrained_model))
        self.train(pretrained_model.training)  # from_pretrained models start in eval mode
        self._accepts_logits_to_keep = note_logits_to_keep(pretrained_model, "the value-head model")
        self._cache_argument = cache_argument(pretrained_model) or "past_key_values"

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load from a local directory, a hub id, or wrap an already-built ``PreTrainedModel``.

        Value-head options (``summary_dropout_prob``, ``v_head_initializer_range``,
        ``v_head_init_strategy``) and ``peft_config`` (wraps the model with PEFT) are taken
        here; every other keyword (``dtype``, ``device_map``, ``revision``, ...) goes to
        ``AutoModelForCausalLM.from_pretrained``.
        """
        head_kwargs = {k: kwargs.pop(k) for k in _HEAD_KWARGS if k in kwargs}
        peft_config = kwargs.pop("peft_config", None)
        if isinstance(pretrained_model_name_or_path, PreTrainedModel):
            base, source = pretrained_model_name_or_path, None
        else:
            source = str(pretrained_model_name_or_path)
            base = AutoModelForCausalLM.from_pretrained(source, *model_args, **kwargs)
        if peft_config is not None:
            from peft import get_peft_model

            base = get_peft_model(base, peft_config)
        model = cls(base, **head_kwargs)
        if source is not None:
            state = _load_value_head_state(source, kwargs)
            if state is not None:
                model.v_head.load_state_dict(state)
        return model

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Write a normal Transformers checkpoint plus ``value_head.safetensors``."""
        os.makedirs(save_directory, exist_ok=True)
        self.pretrained_model.save_pretrained(save_directory, **kwargs)
        state = {k: v.detach().cpu().contiguous() for k, v in self.v_head.state_dict().items()}
        tmp = Path(save_directory) / (VALUE_HEAD_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, Path(save_directory) / VALUE_HEAD_FILE)  # atomic: never a half-written head

    def push_to_hub(self, *args, **kwargs):
        raise NotImplementedError("push the directory written by save_pretrained with huggingface_hub instead")

    def state_dict(self, *args, **kwargs):
        """The wrapped model's state dict plus ``v_head.*`` entries (TRL's layout)."""
        state = self.pretrained_model.state_dict(*args, **kwargs)
        for k, v in self.v_head.state_dict().items():
            state[f"v_head.{k}"] = v
        return state

    # ---------------------------------------------------------------- running
    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, return_past_key_values=False,
                logits_to_keep: int = 0, **kwargs):
        """Returns ``(lm_logits, loss, values)``; logits are upcast to float32 like the classic API.

        ``logits_to_keep=K > 0`` computes logits and values for the last K positions only,
        which saves most of the LM-head cost when only response tokens matter.
        """
        kwargs["output_hidden_states"] = True
        if logits_to_keep and self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        if past_key_values is not None:
            kwargs[self._cache_argument] = past_key_values
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out.hidden_states[-1]
        logits = out.logits
        if logits_to_keep:
            hidden, logits = hidden[:, -logits_to_keep:], logits[:, -logits_to_keep:]
        values = self.v_head(hidden)  # (B, T)
        if logits.dtype != torch.float32:
            logits = logits.float()
        if return_past_key_values:
            return logits, out.loss, values, output_cache(out)
        return logits, out.loss, values

    def generate(self, *args, **kwargs):
        return self.pretrained_model.generate(*args, **kwargs)

    @property
    def is_peft_model(self) -> bool:
        return hasattr(self.pretrained_model, "peft_config")

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "pretrained_model":
                raise
            return getattr(self.pretrained_model, name)


def _first_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _load_value_head_state(source: str, hub_kwargs: dict) -> dict | None:
    """Find the head: our own file first, then TRL's ``v_head.*`` keys; None if neither."""
    lookup = {k: hub_kwargs[k] for k in ("revision", "cache_dir", "token", "subfolder") if k in hub_kwargs}
    path = cached_file(source, VALUE_HEAD_FILE, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False, **lookup)
    if path:
        return load_file(path)
    for name in _TRL_WEIGHT_FILES + ("model.safetensors.index.json",):
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **lookup)
        if not path:
            continue
        files = [path]
        if name.endswith(".index.json"):
            weight_map = json.loads(Path(path).read_text())["weight_map"]
            files = sorted({str(Path(path).parent / f) for k, f in weight_map.items() if k.startswith("v_head.")})
        state = {}
        for f in files:
            tensors = load_file(f) if f.endswith(".safetensors") else torch.load(f, map_location="cpu", weights_only=True)
            state.update({k[len("v_head."):]: v for k, v in tensors.items() if k.startswith("v_head.")})
        if state:
            return state
    return None
