"""Score texts with a trained reward model: batched, sorted by length, no gradients.

    rm = RewardModel("runs/reward")                 # any num_labels=1 sequence classifier
    rm.score(["a full text", "another"])            # -> [float, float]
    rm(prompts, responses)                          # a reward_fn for PPOTrainer.train
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class RewardModel:
    def __init__(self, model, tokenizer=None, batch_size: int = 16, max_length: int = 512, device=None, **kwargs):
        """``model``: a path, a hub id or a loaded model; ``kwargs`` go to ``from_pretrained`` (e.g. dtype)."""
        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForSequenceClassification.from_pretrained(model, **kwargs)
        if tokenizer is None:
            raise ValueError("RewardModel needs the tokenizer when given a loaded model")
        if model.config.num_labels != 1:
            raise ValueError(f"a reward model has num_labels=1; this one has {model.config.num_labels}")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length
        self.tokenizer.padding_side = "right"  # the classifier pools the last non-pad token

    @torch.no_grad()
    def score(self, texts: list[str]) -> list[float]:
        """One reward per text; texts are batched by length to waste little padding."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        scores = [0.0] * len(texts)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(device)
            out = self.model(**enc).logits.squeeze(-1).float().tolist()
            for i, value in zip(idx, out):
                scores[i] = value
        return scores

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Score ``prompt + response`` pairs (the ``reward_fn`` signature of ``PPOTrainer.train``)."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        return self.score([p + r for p, r in zip(prompts, responses)])
