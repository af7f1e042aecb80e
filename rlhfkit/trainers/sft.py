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
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from .. import data
from ..models.loading import apply_lora, check_push, check_quantization, hub_kwargs, load_pretrained, \
    load_tokenizer, push_folder, quantization_kwargs, write_model_card
from ..models.reference import is_peft_model
from ..rollout import token_logprobs
from .config import ConfigError, LoopConfig, f, output_dir_problem
from .loop import TrainLoop
from .mechanics import set_seed


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


def model_dtype(config: LoopConfig):
    """``config.dtype`` as ``from_pretrained`` takes it: None, "auto" or a torch dtype."""
    return config.dtype if config.dtype in (None, "auto") else getattr(torch, config.dtype)


def load_model_and_tokenizer(model, processing_class, config: LoopConfig, auto_cls=AutoModelForCausalLM,
                             peft_task: str = "CAUSAL_LM", **kwargs):
    """Model and tokenizer from objects, or from ``model``/``config.model_name_or_path`` as a path or hub id.

    Loading uses ``config.dtype`` and ``config.attn_implementation``; ``config.use_peft`` wraps
    the model with LoRA adapters (``peft_task``: CAUSAL_LM or SEQ_CLS). A source that does not
    exist raises ``ModelSourceError`` naming ``model_name_or_path`` before Transformers is asked.
    Weights that start random (a new reward head, LoRA adapters) are drawn after seeding with
    ``config.seed``: torch seeds itself differently in every process, so a run is then
    reproducible, and a resumed run continues the same run.
    """
    set_seed(config.seed)
    source = model if isinstance(model, str) else config.model_name_or_path
    if model is None or isinstance(model, str):
        if source is None:
            raise ConfigError(type(config).__name__, "model_name_or_path", "no model: pass model=... or set "
                                                                           "model_name_or_path")
        check_quantization(config)
        model = load_pretrained(auto_cls, source, "model_name_or_path", dtype=model_dtype(config),
                                attn_implementation=config.attn_implementation,
                                **hub_kwargs(config, source, "model_name_or_path"), **quantization_kwargs(config),
                                **kwargs)
    elif (config.load_in_4bit or config.load_in_8bit) and not getattr(model, "is_quantized", False):
        warnings.warn(f"{type(config).__name__}.load_in_{4 if config.load_in_4bit else 8}bit=True has no effect: the "
                      "model was passed already loaded; load it quantized yourself or pass its name",
                      UserWarning, stacklevel=3)
    tokenizer = processing_class
    if tokenizer is None:
        tok_source = source or getattr(model, "name_or_path", None)
        if not tok_source:
            raise ValueError("no tokenizer: pass processing_class=... (the tokenizer)")
        with warnings.catch_warnings():  # the model's load has said what model_revision does for this source
            warnings.simplefilter("ignore", UserWarning)
            tok_kwargs = hub_kwargs(config, tok_source, "model_name_or_path")
        tokenizer = load_tokenizer(tok_source, "model_name_or_path", **tok_kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # the usual choice for decoder-only models
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if config.use_peft and not is_peft_model(model):
        model = apply_lora(model, config, peft_task)
    return model, tokenizer


def check_output_dir(config: LoopConfig) -> None:
    """``output_dir`` must be a folder (or not exist yet): say so before anything is loaded."""
    problem = output_dir_problem(config.output_dir)
    if problem:
        raise ConfigError(type(config).__name__, "output_dir", problem)


def check_run(config: LoopConfig) -> None:
    """What a trainer checks before it reads data or loads a model: the output folder, push_to_hub offline,
    and quantized loading without bitsandbytes or a GPU."""
    check_output_dir(config)
    check_push(config)
    check_quantization(config)


def check_dataset_config(config: LoopConfig, source) -> None:
    """``dataset_config`` names a configuration of a hub dataset: refused for local data, which has none."""
    if config.dataset_config is not None and not data.is_hub_dataset(source):
        shown = repr(source) if isinstance(source, str) else f"a {type(source).__name__}"
        raise ConfigError(type(config).__name__, "dataset_config",
                          f"{config.dataset_config!r} selects a configuration of a hub dataset, but the training data "
                          f"{shown} is local and has none; leave dataset_config out")


def finish_training(trainer, method: str, history: list[dict]) -> list[dict]:
    """After ``loop.train``: the model card in output_dir, then the upload when ``push_to_hub``."""
    args = trainer.args
    if trainer.loop.accelerator.is_main_process:
        last = {}
        for row in history:
            last.update({k: v for k, v in row.items() if k != "step"})
        write_model_card(args.output_dir, method=method, config=args, metrics=last)
        if args.push_to_hub:
            push_folder(args.output_dir, args.hub_model_id or Path(args.output_dir).name,
                        private=args.hub_private_repo)
    return history


def load_split(train_dataset, eval_dataset, config: LoopConfig, convert, text_field: str = "text"):
    """(train, eval or None) rows, each validated right after loading then ``convert(records, fmt)``-ed.

    Validating before any split keeps error line numbers true to the file; splitting after
    the conversion lets ``train_eval_split`` hold out whole prompts (the ``group`` column of
    pairs made from rankings or ratings), so no prompt is in both parts. ``config.dataset_config``
    goes to the training source (and its eval split); ``text_field`` (SFT's dataset_text_field)
    is read as the ``text`` column.
    """
    if train_dataset is None and not config.dataset_name:
        raise ValueError("no training data: pass train_dataset=... or set dataset_name")
    train_source = train_dataset if train_dataset is not None else config.dataset_name
    check_dataset_config(config, train_source)

    def load(source, split, name=None):
        records = data.use_text_field(data.load_records(source, split=split, name=name), text_field)
        fmt = data.detect_format(records)
        data.validate(records, fmt)
        return convert(records, fmt)

    train = load(train_source, config.dataset_split, config.dataset_config)
    source = eval_dataset if eval_dataset is not None else config.eval_dataset_name
    if source is not None:
        return train, load(source, config.eval_dataset_split or config.dataset_split)
    if config.eval_dataset_split is not None:  # another split of the training source (e.g. test.jsonl beside train.jsonl)
        return train, load(train_source, config.eval_dataset_split, config.dataset_config)
    return data.train_eval_split(train, config.eval_fraction, seed=config.seed)


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
