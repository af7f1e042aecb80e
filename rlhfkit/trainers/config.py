"""Fields every loop-trained method shares (SFT, reward, DPO): the ecosystem's names.

A method's config is ONE flat dataclass: it lists these fields (by dataclass field
inheritance, data only) plus its own. Each field's help text lives here once and is what
``rlhfkit <command> --help`` and ``docs/configs.md`` show.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields


def f(default, help: str):
    """A dataclass field with its help text."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass
class LoopConfig:
    # ---- what to train on ----
    model_name_or_path: str | None = f(None, "Local folder or hub id of the model to start from.")
    dataset_name: str | None = f(None, "Training data: a .jsonl/.json/.csv/.parquet file, a saved `datasets` folder, or a hub id.")
    dataset_split: str = f("train", "Split to read when the dataset has several.")
    eval_dataset_name: str | None = f(None, "Held-out data in the same forms (default: a slice of the training data, see eval_fraction).")
    eval_fraction: float = f(0.0, "Fraction of the training data held out for evaluation when no eval dataset is given.")
    max_length: int = f(512, "Longest tokenized sequence (prompt + completion); longer rows are truncated.")
    # ---- where results go ----
    output_dir: str = f("runs/out", "Folder for the final model, checkpoints and metrics.jsonl.")
    # ---- optimisation ----
    num_train_epochs: float = f(1.0, "Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = f(-1, "Optimiser steps to run; overrides num_train_epochs when > 0.")
    per_device_train_batch_size: int = f(8, "Rows per device per micro-batch.")
    per_device_eval_batch_size: int = f(8, "Rows per device per evaluation batch.")
    gradient_accumulation_steps: int = f(1, "Micro-batches accumulated per optimiser step.")
    learning_rate: float = f(5e-5, "Peak AdamW learning rate.")
    weight_decay: float = f(0.0, "AdamW weight decay.")
    adam_beta1: float = f(0.9, "AdamW beta1.")
    adam_beta2: float = f(0.999, "AdamW beta2.")
    adam_epsilon: float = f(1e-8, "AdamW epsilon.")
    lr_scheduler_type: str = f("linear", f"Learning-rate schedule after warm-up, one of {SCHEDULERS}.")
    warmup_steps: int = f(0, "Linear warm-up steps (takes precedence over warmup_ratio).")
    warmup_ratio: float = f(0.0, "Warm-up as a fraction of all optimiser steps.")
    max_grad_norm: float | None = f(1.0, "Clip the global gradient norm to this (None: no clipping).")
    bf16: bool = f(False, "bfloat16 autocast for forward/backward (weights and optimiser stay float32).")
    fp16: bool = f(False, "float16 autocast with loss scaling (GPUs).")
    seed: int = f(42, "Seed for initialisation, shuffling and dropout.")
    gradient_checkpointing: bool = f(False, "Recompute activations in backward to save memory.")
    fuse_activations: bool = f(True, "Run activations written as chains of elementwise ops (GPT-2's gelu_new) as "
                                     "PyTorch's fused kernel of the same function; weights and outputs unchanged.")
    # ---- bookkeeping ----
    logging_steps: int = f(10, "Log averaged metrics every this many optimiser steps.")
    eval_steps: int = f(0, "Evaluate every this many optimiser steps (0: only at the end).")
    save_steps: int = f(0, "Write a checkpoint every this many optimiser steps (0: only the final model).")
    save_total_limit: int | None = f(None, "Keep at most this many checkpoints (oldest deleted first).")
    resume_from_checkpoint: str | None = f(None, "A checkpoint-<step> folder to resume from, or 'latest' for the newest in output_dir.")
    report_to: str = f("jsonl,tensorboard", "Comma-separated loggers: jsonl, tensorboard, wandb; 'none' for none. metrics.jsonl goes to output_dir.")
    disable_tqdm: bool = f(False, "Hide the progress bar.")
    dataloader_num_workers: int = f(0, "Worker processes for data loading.")

    def __post_init__(self):
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "max_length", "logging_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"lr_scheduler_type must be one of {SCHEDULERS}, got {self.lr_scheduler_type!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.bf16 and self.fp16:
            raise ValueError("choose one of bf16 and fp16")

    @property
    def mixed_precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {x.name: x.metadata.get("help", "") for x in fields(cls)}


def config_markdown(cls) -> str:
    """A Markdown table of a config's fields, defaults and help."""
    lines = [f"## {cls.__name__}", "", "| field | default | meaning |", "| --- | --- | --- |"]
    for x in fields(cls):
        default = x.default_factory() if x.default_factory is not MISSING else x.default
        if x.name == "exp_name":
            default = "<script name>"
        lines.append(f"| `{x.name}` | `{default!r}` | {x.metadata.get('help', '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"
