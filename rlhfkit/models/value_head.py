"""A causal LM with a scalar value head: the classic PPO policy-and-critic in one model.

``AutoModelForCausalLMWithValueHead`` wraps any ``AutoModelForCausalLM`` and adds a linear
head on the last hidden state that predicts the value of each prefix. It keeps the public
face of the class Hugging Face TRL removed in 1.x: ``from_pretrained`` (local directory,
hub id, an already-built model or a ``PeftModel``), ``peft_config=``, a multi-adapter
reward (``reward_adapter=`` + ``compute_reward_score``), ``save_pretrained``, ``generate``
and a forward that returns ``(lm_logits, loss, values)``. The loading and saving functions
below are shared with ``AutoModelForSeq2SeqLMWithValueHead`` (``seq2seq.py``).

On disk the wrapped model is a normal Transformers checkpoint (``AutoModelForCausalLM``
loads it as is); the head lives beside it in ``value_head.safetensors``. Checkpoints that
old TRL wrote (``v_head.*`` keys inside the model's weight files) load too.
"""

from __future__ import annotations

import json
import logging
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
logger = logging.getLogger(__name__)


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
    ``is_peft_model``, the class attributes ``transformers_parent_class``, ``lm_head_namings``
    and ``supported_args``, and (with ``from_pretrained(..., reward_adapter=path)``) a frozen
    ``score`` head for ``compute_reward_score``. Unknown attributes fall through to the
    wrapped model, so ``model.device``, ``model.generation_config`` and friends work.
    """

    transformers_parent_class = AutoModelForCausalLM
    lm_head_namings = ["lm_head", "embed_out"]
    supported_args = _HEAD_KWARGS

    def __init__(self, pretrained_model: PreTrainedModel, summary_dropout_prob: float | None = None,
                 v_head_initializer_range: float = 0.2, v_head_init_strategy: str | None = None, *,
                 score_module: nn.Module | None = None, supports_rm_adapter: bool = False,
                 rm_adapter_name: str | None = None):
        super().__init__()
        check_lm_head(pretrained_model, self.lm_head_namings, type(self).__name__)
        self.pretrained_model = pretrained_model
        self.v_head = build_value_head(pretrained_model, summary_dropout_prob, v_head_initializer_range,
                                       v_head_init_strategy)
        self.train(pretrained_model.training)  # from_pretrained models start in eval mode
        self._accepts_logits_to_keep = note_logits_to_keep(pretrained_model, "the value-head model")
        self._cache_argument = cache_argument(pretrained_model) or "past_key_values"
        self.supports_rm_adapter, self.rm_adapter_name, self.policy_adapter_name = (
            supports_rm_adapter, rm_adapter_name, "default")
        if score_module is not None:
            self.score = score_module

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load from a local directory, a hub id, or wrap an already-built model (also a ``PeftModel``).

        Value-head options (``supported_args``), ``peft_config`` (a ``peft.PeftConfig``: wraps
        the model with a new adapter), ``is_trainable`` (for a saved adapter directory) and
        ``reward_adapter`` / ``reward_adapter_name`` (a saved sequence-classification LoRA
        adapter for ``compute_reward_score``) are taken here; every other keyword (``dtype``,
        ``device_map``, ``revision``, ...) goes to ``transformers_parent_class.from_pretrained``.
        """
        return load_with_value_head(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Write a normal Transformers checkpoint (or PEFT adapter) plus ``value_head.safetensors``."""
        save_with_value_head(self, save_directory, **kwargs)

    def push_to_hub(self, *args, **kwargs):
        raise NotImplementedError("push the directory written by save_pretrained with huggingface_hub instead")

    def state_dict(self, *args, **kwargs):
        """The wrapped model's state dict plus ``v_head.*`` entries (TRL's layout)."""
        return state_dict_with_value_head(self, *args, **kwargs)

    # ---------------------------------------------------------------- running
    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, return_past_key_values=False,
                logits_to_keep=0, **kwargs):
        """Returns ``(lm_logits, loss, values)``; logits are upcast to float32 like the classic API.

        ``logits_to_keep=K > 0`` computes logits and values for the last K positions only,
        which saves most of the LM-head cost when only response tokens matter. A (B, T) bool
        ``logits_to_keep`` (a packed batch) keeps its True positions: logits (n, V), values (n,).
        """
        kwargs["output_hidden_states"] = True
        mask = isinstance(logits_to_keep, torch.Tensor)
        if (mask or logits_to_keep) and self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        if past_key_values is not None:
            kwargs[self._cache_argument] = past_key_values
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out.hidden_states[-1]  # (B, T, H): hidden states are never cut
        logits = out.logits
        if mask:
            hidden = hidden[logits_to_keep]  # (n, H)
            logits = logits if self._accepts_logits_to_keep else logits[logits_to_keep]  # (n, V)
        elif logits_to_keep:
            hidden, logits = hidden[:, -logits_to_keep:], logits[:, -logits_to_keep:]
        values = self.v_head(hidden.to(self.v_head.summary.weight.device))  # (B, T)
        if logits.dtype != torch.float32:
            logits = logits.float()
        if return_past_key_values:
            return logits, out.loss, values, output_cache(out)
        return logits, out.loss, values

    def generate(self, *args, **kwargs):
        return self.pretrained_model.generate(*args, **kwargs)

    def compute_reward_score(self, input_ids, attention_mask=None, **kwargs) -> torch.Tensor:
        """Scores (B, T, num_labels) of the reward adapter loaded with ``reward_adapter=``.

        The reward adapter is switched on for this no-grad forward only; the policy adapter
        is active again afterwards and the training mode is restored.
        """
        return reward_adapter_score(self, input_ids, attention_mask, **kwargs)

    @property
    def is_peft_model(self) -> bool:
        return hasattr(self.pretrained_model, "peft_config")

    def __getattr__(self, name):
        return wrapped_attribute(self, name)


def wrapped_attribute(model: nn.Module, name: str):
    """``__getattr__`` of both value-head classes: the module's own parameters, buffers and
    submodules first, then the wrapped model's attribute (``model.device``, ``model.config``)."""
    try:
        return nn.Module.__getattr__(model, name)
    except AttributeError:
        if name == "pretrained_model":  # not set (yet): asking the wrapped model would recurse
            raise
        return getattr(model.pretrained_model, name)


def build_value_head(pretrained_model, summary_dropout_prob=None, initializer_range: float = 0.2,
                     init_strategy: str | None = None) -> ValueHead:
    """The head for ``pretrained_model``: dropout from the argument, else ``config.summary_dropout_prob``
    (else 0.1); ``init_strategy="normal"`` draws N(0, initializer_range) weights and a zero bias."""
    config = pretrained_model.config
    if summary_dropout_prob is None:
        summary_dropout_prob = getattr(config, "summary_dropout_prob", 0.1)
    head = ValueHead(_hidden_size(config), summary_dropout_prob)
    if init_strategy == "normal":
        nn.init.normal_(head.summary.weight, std=initializer_range)
        nn.init.zeros_(head.summary.bias)
    elif init_strategy is not None:
        raise ValueError(f"v_head_init_strategy must be None or 'normal', got {init_strategy!r}")
    return head.to(device=_first_device(pretrained_model))


def check_lm_head(model, lm_head_namings, wrapper: str) -> None:
    """TRL's check that the wrapped model generates tokens (a classifier or bare encoder does not)."""
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise ValueError(f"{wrapper} wraps a Transformers model (PreTrainedModel or PeftModel), "
                         f"got {type(model).__name__}")
    has_head = any(hasattr(model, name) for name in lm_head_namings)
    get_out = getattr(model, "get_output_embeddings", None)
    if not has_head and (get_out is None or get_out() is None):
        raise ValueError("The model does not have a language model head, please use a model that has one. "
                         f"({type(model).__name__} given to {wrapper}; load it with "
                         "AutoModelForCausalLM / AutoModelForSeq2SeqLM, not a classification or base class.)")


def load_with_value_head(cls, source, *model_args, **kwargs):
    """``from_pretrained`` of both value-head classes (``cls.transformers_parent_class`` loads the model)."""
    head_kwargs = {k: kwargs.pop(k) for k in cls.supported_args if k in kwargs}
    peft_config = kwargs.pop("peft_config", None)
    reward_adapter = kwargs.pop("reward_adapter", None)
    reward_adapter_name = kwargs.pop("reward_adapter_name", "reward_adapter")
    is_trainable = kwargs.pop("is_trainable", False)
    if reward_adapter is not None and not isinstance(reward_adapter, (str, os.PathLike)):
        raise ValueError("The `reward_adapter` argument should be a string representing the name of local path "
                         f"or the Hub id to the Reward Modeling adapter, got {type(reward_adapter).__name__}")
    if peft_config is not None:
        from peft import PeftConfig

        if not isinstance(peft_config, PeftConfig):
            raise ValueError("The `peft_config` argument should be an instance of `peft.PeftConfig` class, "
                             f"got {type(peft_config).__name__}")
    if isinstance(source, (str, os.PathLike)):
        base = _load_base(cls, str(source), model_args, kwargs, peft_config, is_trainable)
    elif isinstance(source, nn.Module) and hasattr(source, "config"):
        base = source
        if peft_config is not None and not hasattr(base, "peft_config"):
            from peft import get_peft_model

            base = get_peft_model(base, peft_config)
    else:
        raise ValueError("pretrained_model_name_or_path should be a string or a PreTrainedModel, "
                         f"but is {type(source)}")
    multi_adapter = {}
    if reward_adapter is not None:
        if not hasattr(base, "peft_config"):
            raise ValueError("reward_adapter can only be used with a PeftModel: pass peft_config=LoraConfig(...) "
                             "or a PeftModel, so one base model serves the policy and the reward adapter")
        score = load_reward_adapter(base, str(reward_adapter), reward_adapter_name, kwargs.get("token"))
        multi_adapter = dict(score_module=score, supports_rm_adapter=True, rm_adapter_name=reward_adapter_name)
    model = cls(base, **head_kwargs, **multi_adapter)
    if isinstance(source, (str, os.PathLike)):
        state = _load_value_head_state(str(source), kwargs)
        if state is not None:
            model.v_head.load_state_dict(state)
    return model


def _load_base(cls, source: str, model_args, kwargs, peft_config, is_trainable: bool):
    """The wrapped model from a path or hub id: a saved PEFT adapter directory loads its base and the adapter."""
    lookup = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "subfolder") if k in kwargs}
    adapter_config = cached_file(source, "adapter_config.json", _raise_exceptions_for_missing_entries=False,
                                 _raise_exceptions_for_connection_errors=False, **lookup)
    if adapter_config:
        from peft import PeftConfig, PeftModel

        if peft_config is not None:
            logger.warning("`peft_config` argument ignored since a peft config file was found in %s", source)
        trained = PeftConfig.from_pretrained(str(Path(adapter_config).parent))
        base = cls.transformers_parent_class.from_pretrained(trained.base_model_name_or_path, *model_args, **kwargs)
        return PeftModel.from_pretrained(base, source, is_trainable=is_trainable, **lookup)
    base = cls.transformers_parent_class.from_pretrained(source, *model_args, **kwargs)
    if peft_config is not None:
        from peft import get_peft_model

        base = get_peft_model(base, peft_config)
    return base


def save_with_value_head(model, save_directory, **kwargs) -> None:
    """The wrapped model's ``save_pretrained`` output plus ``value_head.safetensors`` (written atomically)."""
    os.makedirs(save_directory, exist_ok=True)
    model.pretrained_model.save_pretrained(save_directory, **kwargs)
    state = {k: v.detach().cpu().contiguous() for k, v in model.v_head.state_dict().items()}
    tmp = Path(save_directory) / (VALUE_HEAD_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, Path(save_directory) / VALUE_HEAD_FILE)  # never a half-written head


def state_dict_with_value_head(model, *args, **kwargs) -> dict:
    state = model.pretrained_model.state_dict(*args, **kwargs)
    for k, v in model.v_head.state_dict().items():
        state[f"v_head.{k}"] = v
    return state


def load_reward_adapter(peft_model, adapter_path: str, adapter_name: str, token=None) -> nn.Linear:
    """Load a saved sequence-classification LoRA adapter into ``peft_model`` (frozen) and return its
    ``score`` head as a frozen ``nn.Linear``: the policy and the reward model then share one base."""
    peft_model.load_adapter(adapter_path, adapter_name, is_trainable=False)
    lookup = {"token": token} if token else {}
    weights = None
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        path = cached_file(adapter_path, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **lookup)
        if path:
            weights = load_file(path) if name.endswith(".safetensors") else torch.load(
                path, map_location="cpu", weights_only=True)
            break
    if weights is None:
        raise ValueError(f"Could not find adapter_model.safetensors or adapter_model.bin in {adapter_path}; "
                         "make sure you have the correct adapter model id or path")
    score = {k.rsplit(".", 1)[-1]: v for k, v in weights.items() if ".score." in f".{k}"}
    if "weight" not in score:
        raise ValueError(f"the reward adapter in {adapter_path} has no `score` head; save the adapter of an "
                         "AutoModelForSequenceClassification trained with task_type='SEQ_CLS'")
    num_labels, hidden = score["weight"].shape
    head = nn.Linear(hidden, num_labels, bias="bias" in score)
    head.load_state_dict(score)
    return head.to(device=_first_device(peft_model), dtype=peft_model.dtype).requires_grad_(False)


@torch.no_grad()
def reward_adapter_score(model, input_ids, attention_mask=None, **kwargs) -> torch.Tensor:
    """``model.score`` on the last hidden states with the reward adapter active; (B, T, num_labels)."""
    if not getattr(model, "supports_rm_adapter", False):
        raise ValueError("This model does not support reward modeling adapter: load it with "
                         "from_pretrained(..., reward_adapter=<path of a saved SEQ_CLS LoRA adapter>)")
    base, was_training = model.pretrained_model, model.training
    base.set_adapter(model.rm_adapter_name)
    base.eval()
    try:
        out = base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True,
                   **kwargs)
        return model.score(out.hidden_states[-1].to(model.score.weight.dtype))
    finally:
        base.set_adapter(model.policy_adapter_name)
        model.train(was_training)


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
