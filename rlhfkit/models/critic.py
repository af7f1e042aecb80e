"""A separate critic: its own backbone and value head, e.g. initialised from a reward model.

InstructGPT (Ouyang et al. 2022, sec. 3.5) initialises the PPO value function from the
reward model; a separate critic also lets the value loss use its own learning rate
without disturbing the policy's features. On disk it is a plain
``AutoModelForSequenceClassification`` checkpoint (``num_labels=1``): the same format as
a reward model, so either can initialise the other.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from .compat import forward_parameters

_HEAD_NAMES = ("score", "classifier", "v_head")


class CriticModel(nn.Module):
    """Per-token values from a sequence-classification model applied at every position."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        if getattr(model.config, "num_labels", 1) != 1:
            raise ValueError(f"a critic needs num_labels=1, the model has num_labels={model.config.num_labels}")
        self.model = model
        self.head = next((getattr(model, n) for n in _HEAD_NAMES if isinstance(getattr(model, n, None), nn.Linear)), None)
        if self.head is None:
            raise ValueError(f"{type(model).__name__} has no linear head named one of {_HEAD_NAMES}")
        self.backbone = model.base_model
        self._takes_use_cache = "use_cache" in forward_parameters(self.backbone)

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> "CriticModel":
        """Load a reward model (or a causal LM checkpoint, whose head is then freshly initialised)."""
        kwargs.setdefault("num_labels", 1)
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = model.config.eos_token_id
        return cls(model)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0) -> torch.Tensor:
        """Values (B, T), float32; of the last K positions for ``logits_to_keep=K > 0``, or (n,) of the True
        positions of a (B, T) bool ``logits_to_keep`` (a packed batch)."""
        # no cache: a critic never decodes, and a cache would hide packed sequences' boundaries from the mask
        cache = {"use_cache": False} if self._takes_use_cache else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **cache)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[logits_to_keep]  # (n, H)
        elif logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()  # (B, T)

    def save_pretrained(self, save_directory, **kwargs) -> None:
        self.model.save_pretrained(save_directory, **kwargs)
