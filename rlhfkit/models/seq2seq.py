"""An encoder-decoder LM (T5, BART, ...) with a scalar value head on the decoder.

``AutoModelForSeq2SeqLMWithValueHead`` is the classic API's seq2seq policy: the value of
each decoder prefix is a linear head on the last decoder hidden state. Its loading, saving,
PEFT and reward-adapter methods each call the module-level function the causal class's
method calls (``value_head.py``); ``__init__`` and the forward (decoder hidden states,
``decoder_input_ids``) are its own.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM

from .compat import cache_argument, output_cache
from .value_head import (_HEAD_KWARGS, build_value_head, check_lm_head, load_with_value_head,
                         reward_adapter_score, save_with_value_head, state_dict_with_value_head,
                         wrapped_attribute)


class AutoModelForSeq2SeqLMWithValueHead(nn.Module):
    """Seq2seq LM + value head. ``forward(input_ids, attention_mask, decoder_input_ids=...)``
    returns ``(lm_logits, loss, values)`` with logits (B, T_dec, V) and values (B, T_dec).

    Same public face as ``AutoModelForCausalLMWithValueHead`` (``from_pretrained`` from a
    path, a model or a ``PeftModel``; ``save_pretrained`` writes a normal Transformers
    checkpoint plus ``value_head.safetensors``), with ``is_encoder_decoder = True``.
    """

    transformers_parent_class = AutoModelForSeq2SeqLM
    lm_head_namings = ["lm_head", "embed_out", "output_projection"]
    supported_args = _HEAD_KWARGS
    is_encoder_decoder = True

    def __init__(self, pretrained_model, summary_dropout_prob: float | None = None,
                 v_head_initializer_range: float = 0.2, v_head_init_strategy: str | None = None, *,
                 score_module: nn.Module | None = None, supports_rm_adapter: bool = False,
                 rm_adapter_name: str | None = None):
        super().__init__()
        check_lm_head(pretrained_model, self.lm_head_namings, type(self).__name__)
        if not getattr(pretrained_model.config, "is_encoder_decoder", False):
            raise ValueError(f"{type(pretrained_model).__name__} is not an encoder-decoder model; wrap causal LMs "
                             "with AutoModelForCausalLMWithValueHead")
        self.pretrained_model = pretrained_model
        self._cache_argument = cache_argument(pretrained_model) or "past_key_values"
        self.v_head = build_value_head(pretrained_model, summary_dropout_prob, v_head_initializer_range,
                                       v_head_init_strategy)
        self.train(pretrained_model.training)
        self.supports_rm_adapter, self.rm_adapter_name, self.policy_adapter_name = (
            supports_rm_adapter, rm_adapter_name, "default")
        if score_module is not None:
            self.score = score_module

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load from a local directory, a hub id, or wrap an already-built model (also a ``PeftModel``).

        Takes the same keywords as ``AutoModelForCausalLMWithValueHead.from_pretrained``; the
        model itself loads with ``transformers_parent_class`` (``AutoModelForSeq2SeqLM``).
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
                logits_to_keep: int = 0, **kwargs):
        """Returns ``(lm_logits, loss, values)`` over the decoder positions (float32 logits).

        ``logits_to_keep=K`` keeps the last K decoder positions (seq2seq LMs compute all,
        then this slices), so callers can treat both value-head classes alike.
        """
        if past_key_values is not None:
            kwargs[self._cache_argument] = past_key_values
        kwargs.pop("position_ids", None)  # decoder positions are implicit (relative or learned from 0)
        out = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                                    **kwargs)
        hidden, logits = out.decoder_hidden_states[-1], out.logits  # (B, T, H), (B, T, V)
        if logits_to_keep:
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
