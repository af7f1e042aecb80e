"""Score texts with a trained reward model: batched, sorted by length, no gradients.

    rm = RewardModel("runs/reward")                 # any num_labels=1 sequence classifier
    rm(prompts, responses)                          # a reward_fn for PPOTrainer.train
    rm.score(["a full text", "another"])            # -> [float, float]

Scoring tokenizes exactly as ``RewardTrainer`` trained (``rlhfkit.data.tokenize_rating``, the
same builder as one side of a training pair): the prompt rendered (a message list through the
chat template) and tokenized with the tokenizer's special tokens, the response tokenized on
its own and closed with EOS, prompt and response joined with nothing between them (TRL's
rule), truncated to ``max_length`` as training truncates. A reward model reads the last
token; scoring without the EOS it was trained to read gives other (and much worse) rewards.
``score(texts)`` does the same for whole texts (special tokens + EOS unless already there).
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from ..data import tokenize_rating
from ..data.collate import pad
from .loading import load_pretrained, load_tokenizer


class RewardModel:
    def __init__(self, model, tokenizer=None, batch_size: int = 16, max_length: int = 512, device=None, **kwargs):
        """``model``: a path, a hub id or a loaded model; ``kwargs`` go to ``from_pretrained`` (e.g. dtype).

        ``max_length``: use the training run's ``max_length`` for exact parity on long texts.
        """
        if isinstance(model, str):
            tokenizer = tokenizer or load_tokenizer(model, "reward model")
            model = load_pretrained(AutoModelForSequenceClassification, model, "reward model", **kwargs)
        if tokenizer is None:
            raise ValueError("RewardModel needs the tokenizer when given a loaded model")
        if model.config.num_labels != 1:
            raise ValueError(f"a reward model has num_labels=1; this one has {model.config.num_labels}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length

    def encode(self, prompt, response) -> list[int]:
        """Token ids of one (prompt, response) exactly as ``RewardTrainer`` built them for training."""
        return tokenize_rating({"prompt": prompt, "response": response, "score": 0.0}, self.tokenizer,
                               self.max_length)["input_ids"]

    def encode_text(self, text: str, add_eos: bool = True) -> list[int]:
        """Token ids of a whole text: special tokens, EOS appended unless it is there, first max_length kept."""
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if add_eos and eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        return ids[: self.max_length]

    @torch.no_grad()
    def score_ids(self, sequences: list[list[int]]) -> list[float]:
        """One reward per token-id list; right-padded batches sorted by length (as the training collator pads)."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        scores = [0.0] * len(sequences)
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            rows = [sequences[i] for i in idx]
            input_ids = pad(rows, pad_id).to(device)  # (B, T)
            attention_mask = pad([[1] * len(r) for r in rows], 0).to(device)  # (B, T)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()
            for i, value in zip(idx, out.tolist()):
                scores[i] = value
        return scores

    def score(self, texts: list[str], add_eos: bool = True) -> list[float]:
        """One reward per whole text (see :meth:`encode_text`)."""
        return self.score_ids([self.encode_text(t, add_eos) for t in texts])

    def __call__(self, prompts: list, responses: list[str]) -> list[float]:
        """Score (prompt, response) pairs as training tokenized them (the ``reward_fn`` signature of
        ``PPOTrainer.train``); prompts are texts or message lists."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        return self.score_ids([self.encode(p, r) for p, r in zip(prompts, responses)])
