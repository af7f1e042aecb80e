"""What every trainer does before and after its loop: check the run, read the data, load the models, finish.

    check_run(args)                                   output folder, push_to_hub offline, quantized loading
    train, evals = load_split(train_dataset, eval_dataset, args, data.to_sft)   data errors before any model loads
    model, tokenizer = load_model_and_tokenizer(model, processing_class, args)  seeded, LoRA when use_peft
    ref_model = load_reference(model, ref_model, args)                          DPO and KTO's frozen reference
    ...
    return finish_training(trainer, "sft", trainer.loop.train(resume_from_checkpoint))   model card, upload

Every recipe on ``TrainLoop`` or ``OnlineRun`` (SFT, reward, DPO, KTO, distillation, GRPO and RLOO
through ``online_config.prepare``) calls the ones it needs in this order, so a bad folder, a bad
row or a missing model is reported the same way whichever trainer meets it, and before minutes
of loading.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from .. import data
from ..models import create_reference_model, fuse_activations, is_peft_model
from ..models.loading import apply_lora, check_push, check_quantization, hub_kwargs, load_pretrained, \
    load_tokenizer, push_folder, quantization_kwargs, write_model_card
from .config import ConfigError, LoopConfig, output_dir_problem
from .mechanics import set_seed


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


def load_reference(model, ref_model, args):
    """The frozen reference of DPO and KTO: ``ref_model`` (a model or a folder), else
    ``args.ref_model_name_or_path``, else a frozen copy of ``model``; None for a PEFT ``model``
    without either, whose base with the adapter disabled is the reference."""
    if isinstance(ref_model, str) or (ref_model is None and args.ref_model_name_or_path):
        ref_model = load_pretrained(AutoModelForCausalLM, ref_model or args.ref_model_name_or_path,
                                    "ref_model_name_or_path", dtype=model_dtype(args),
                                    attn_implementation=args.attn_implementation,
                                    trust_remote_code=args.trust_remote_code)
    if ref_model is None:
        if is_peft_model(model):
            return None  # the base with its adapter disabled is the reference
        ref_model = create_reference_model(model)
    if args.fuse_activations:
        fuse_activations(ref_model)
    return ref_model.eval().requires_grad_(False)


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
