"""Supervised fine-tuning: next-token loss on the completion (or the whole text).

    trainer = SFTTrainer(model="path/or/hub-id", args=SFTConfig(output_dir="runs/sft"),
                         train_dataset="data/train.jsonl")
    trainer.train()

The data may be language modelling (``text``), prompt-completion, conversational
(``messages``) or preference rows (SFT on ``chosen``); see ``rlhfkit.data``. By default the
loss covers completion tokens only (assistant turns in conversations): the model learns to
answer, not to reproduce prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import data
from ..rollout import token_logprobs
from .config import ConfigError, LoopConfig, f
from .loop import TrainLoop
from .setup import check_run, finish_training, load_model_and_tokenizer, load_split


@dataclass
class SFTConfig(LoopConfig):
    output_dir: str = f("runs/sft", "Folder for the final model, checkpoints and metrics.jsonl.")
    learning_rate: float = f(2e-5, "Peak learning rate.")
    dataset_text_field: str = f("text", "Column holding the plain text of language-modelling rows; another name is "
                                        "read as 'text' (a column 'text' beside it is left out).")
    completion_only_loss: bool = f(True, "Loss on completion / assistant tokens only; False trains on every token.")
    assistant_only_loss: bool = f(False, "Loss on the assistant turns of conversations only, whatever "
                                         "completion_only_loss says; the data must be conversational (messages).")
    packing: bool = f(False, "Concatenate examples into blocks of max_length (position ids restart per example; "
                             "attention is not blocked across examples).")


def causal_lm_loss(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over labelled tokens, and the number of such tokens.

    Positions before the first labelled token of the batch (the prompts, under
    completion-only loss) never reach the LM head (``rollout.token_logprobs`` asks for the
    logits of the scored positions only).
    """
    labels = batch["labels"]  # (B, T)
    T = labels.shape[1]
    labelled = labels != data.IGNORE_INDEX  # (B, T)
    first = int(torch.where(labelled.any(-1), labelled.float().argmax(-1), T).min()) if labelled.any() else 1
    K = T - max(first, 1)  # position T-K-1 predicts the first labelled token
    targets = labels[:, T - K:]  # (B, K)
    inputs = {k: batch[k][:, :-1] for k in ("attention_mask", "position_ids") if k in batch}
    logprobs = token_logprobs(model, batch["input_ids"][:, :-1], targets.clamp_min(0), where="the SFT loss",
                              **inputs).logprobs  # (B, K)
    mask = (targets != data.IGNORE_INDEX).float()  # (B, K)
    return -(logprobs * mask).sum() / mask.sum().clamp_min(1), labelled[:, 1:].sum()


class SFTTrainer:
    """``SFTTrainer(model, args, train_dataset, eval_dataset, processing_class)``, TRL 1.x style."""

    def __init__(self, model=None, args: SFTConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None):
        self.args = args = args or SFTConfig()
        check_run(args)
        train, evals = load_split(train_dataset, eval_dataset, args, data.to_sft,  # data errors before model loads
                                  text_field=args.dataset_text_field)
        if args.assistant_only_loss:
            for rows in (train, evals):
                if rows is not None and "messages" not in rows.column_names:
                    raise ConfigError(type(args).__name__, "assistant_only_loss", f"needs conversational data (a 'messages' "
                                      f"column, or prompt/completion message lists); {data.source_name(rows)} "
                                      "holds text rows, which have no assistant turns")
        self.model, self.tokenizer = load_model_and_tokenizer(model, processing_class, args)
        self.train_dataset = self._prepare(train)
        self.eval_dataset = self._prepare(evals) if evals is not None else None
        self.loop = TrainLoop(args, self.model, self.train_dataset, data.SFTCollator(self.tokenizer.pad_token_id),
                              self._step, eval_dataset=self.eval_dataset, eval_fn=self._evaluate,
                              tokenizer=self.tokenizer)

    def _prepare(self, rows):
        tokenized = data.tokenize_dataset(rows, self.tokenizer, self.args.max_length, kind="sft",
                                          completion_only=self.args.completion_only_loss,
                                          assistant_only=self.args.assistant_only_loss)
        if self.args.packing:
            import datasets

            tokenized = datasets.Dataset.from_list(data.pack_sequences(tokenized, self.args.max_length))
        return tokenized

    @staticmethod
    def _step(model, batch):
        loss, n_tokens = causal_lm_loss(model, batch)
        return loss, {"num_tokens": n_tokens.float()}

    @staticmethod
    def _evaluate(model, loader, accelerator) -> dict:
        total, count = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
        for batch in loader:
            loss, n = causal_lm_loss(model, batch)
            total += loss.float() * n
            count += n
        total, count = accelerator.reduce(total, "sum"), accelerator.reduce(count, "sum")
        loss = (total / count.clamp_min(1)).item()
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        return finish_training(self, "sft", self.loop.train(resume_from_checkpoint))

    def evaluate(self) -> dict:
        return self.loop.evaluate()

    def save_model(self, path=None) -> None:
        self.loop.save_model(path or self.args.output_dir)
