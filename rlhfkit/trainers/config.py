"""Fields every loop-trained method shares (SFT, reward, DPO, KTO, GRPO, RLOO): the ecosystem's names.

A method's config is ONE flat dataclass: it lists these fields (by dataclass field
inheritance, data only) plus its own. Each field's help text lives here once and is what
``rlhfkit <command> --help`` and ``docs/configs.md`` show.

Every config is checked when it is built (``__post_init__``), before any model or data is
loaded: each field must hold its annotated type (``bool`` strictly, ``int`` not a bool,
``float`` any real number; a path object becomes a string, an int in a float field a float)
and lie in its range. A bad field raises ``ConfigError`` naming the field, what was
expected and what was found.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from .trackers import REPORTERS, check_report_to  # noqa: F401 - REPORTERS is re-exported

MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
STRATEGIES = ("no", "steps", "epoch")  # TrainingArguments' eval/save/logging strategies
# The optimisers torch and Transformers provide without another package (TrainingArguments' names).
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "adafactor", "sgd", "adagrad", "rmsprop")
ADAM_FIELDS = ("adam_beta1", "adam_beta2", "adam_epsilon")
# TrainingArguments optimisers that need a package rlhfkit does not use, and what that package is.
OPTIMIZERS_ELSEWHERE = {
    **dict.fromkeys(("adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
                     "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
                     "paged_lion_8bit", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "ademamix"),
                    "bitsandbytes"),
    **dict.fromkeys(("galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
                     "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise"), "galore-torch"),
    **dict.fromkeys(("adamw_torch_4bit", "adamw_torch_8bit"), "torchao"),
    **dict.fromkeys(("schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd"), "schedulefree"),
    **dict.fromkeys(("apollo_adamw", "apollo_adamw_layerwise"), "apollo-torch"),
    **dict.fromkeys(("lomo", "adalomo"), "lomo-optim"), "grokadamw": "grokadamw", "stable_adamw": "torch-optimi",
    "adamw_anyprecision": "torchdistx", "adamw_torch_xla": "torch_xla", "adamw_torch_npu_fused": "torch_npu",
}
QUANT_TYPES = ("nf4", "fp4")
# TRL's ScriptArguments names for two fields rlhfkit had already: one setting, two spellings.
SPLIT_ALIASES = {"dataset_train_split": "dataset_split", "dataset_test_split": "eval_dataset_split"}


def f(default, help: str, **metadata):
    """A dataclass field with its help text (``metadata``: e.g. ``comma_list=True``)."""
    meta = {"help": help, **metadata}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class ConfigError(ValueError):
    """A config field holds a value of the wrong type or out of its range.

    ``field`` is the field's name and ``problem`` what is wrong with it; the CLI puts
    where the value came from (a flag, a YAML file and line) in front of ``problem``.
    """

    def __init__(self, owner: str, name: str, problem: str):
        super().__init__(f"{owner}.{name}: {problem}")
        self.field, self.problem = name, problem


def field_kind(fld) -> tuple[str, bool]:
    """(kind, optional) of a dataclass field: kind is bool, int, float, str, dict or list."""
    text = fld.type if isinstance(fld.type, str) else getattr(fld.type, "__name__", str(fld.type))
    parts = [p.strip() for p in text.replace("Optional[", "").rstrip("]").split("|")]
    base = next((p for p in parts if p != "None"), "str")
    base = base.split("[")[0]
    return (base if base in ("bool", "int", "float", "str", "dict", "list") else "str"), "None" in parts


EXPECTED = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text",
            "dict": "a mapping {key: value}", "list": "a list"}


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(kind: str, value):
    """``value`` as ``kind`` without parsing text, or raise TypeError."""
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if kind == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise TypeError("a finite number")
        return float(value)
    if kind == "str" and isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if kind in ("dict", "list") and isinstance(value, dict if kind == "dict" else (list, tuple)):
        return value
    raise TypeError(EXPECTED[kind])


def check_field_types(config) -> None:
    """Every field holds its annotated type (see the module docstring); normalises in place."""
    owner = type(config).__name__
    for fld in fields(config):
        kind, optional = field_kind(fld)
        value = getattr(config, fld.name)
        if value is None and optional:
            continue
        try:
            setattr(config, fld.name, _typed(kind, value))
        except TypeError as err:
            expected = f"{err}{' or none' if optional else ''}"
            raise ConfigError(owner, fld.name, f"expected {expected}, got {type(value).__name__} "
                                               f"{_shown(value)}") from None


def output_dir_problem(path) -> str | None:
    """Why ``path`` cannot be an output folder (it, or a folder above it, is a file), or None."""
    target = Path(path).expanduser()
    blocker = next((p for p in [target, *target.absolute().parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{str(blocker)!r} is a file, so {os.fspath(path)!r} cannot be a folder; choose another output_dir"
    return None


class Checks:
    """Range checks of one config; each raises ``ConfigError`` naming the field."""

    def __init__(self, config):
        self.config, self.owner = config, type(config).__name__

    def fail(self, name: str, problem: str):
        raise ConfigError(self.owner, name, problem)

    def at_least(self, low, *names: str) -> None:
        for name in names:
            value = getattr(self.config, name)
            if value is not None and value < low:
                self.fail(name, f"must be >= {low}, got {value}")

    def positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self.config, name)
            if value is not None and not value > 0:
                self.fail(name, f"must be > 0, got {value}")

    def within(self, name: str, low: float, high: float, high_open: bool = False) -> None:
        value = getattr(self.config, name)
        if value is not None and not (low <= value < high if high_open else low <= value <= high):
            self.fail(name, f"must be in [{low}, {high}{')' if high_open else ']'}, got {value}")

    def choice(self, name: str, choices, allow_none: bool = False) -> None:
        value = getattr(self.config, name)
        if not (value is None and allow_none) and value not in choices:
            self.fail(name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")

    def attention_and_trackers(self) -> None:
        """``attn_implementation`` is a known kernel or a hub kernel 'owner/name'; ``report_to`` names trackers that
        exist (and, when set by hand, are installed)."""
        attn, report_to = self.config.attn_implementation, self.config.report_to
        if attn is not None and attn not in ATTENTION and "/" not in attn:
            self.fail("attn_implementation", f"must be one of {', '.join(ATTENTION)} or a hub kernel 'owner/name', "
                                             f"got {attn!r}")
        problem = check_report_to(report_to, report_to != field_default(type(self.config), "report_to"))
        if problem:
            self.fail("report_to", problem)

    def non_empty(self, *names: str) -> None:
        for name in names:
            value = getattr(self.config, name)
            if value is not None and not str(value).strip():
                self.fail(name, "is empty; give a value or leave it out")


# Padding-free batches (rollout/packing.py): one text for DPOConfig, the online configs and PPOConfig.
PADDING_FREE_HELP = ("Run the training forward passes padding-free: the sequences of a micro-batch are concatenated "
                     "without padding, position ids restarting at 0 for each and no attention mask, so no compute "
                     "goes to padding (same losses and gradients up to float rounding). Needs a model whose "
                     "attention follows the restarts (GPT-2, Llama, Mistral, Qwen, ...: checked before training). "
                     "Off by default: it can be slower, see docs/online.md.")
MAX_PACKED_LENGTH_HELP = ("With padding_free: most tokens in one packed row (sequences go longest first into the first "
                          "row with room; all rows run in one forward). Attention costs the square of a row's length, "
                          "so shorter rows can be faster; none: one row per micro-batch.")


def check_padding_free(c: Checks, longest: int | None = None, what: str = "") -> None:
    """``max_packed_length`` is >= 1, used only with ``padding_free``, and (when ``longest`` is known) holds the
    longest sequence, ``what`` saying where that length comes from."""
    cfg = c.config
    c.at_least(1, "max_packed_length")
    if cfg.max_packed_length is None:
        return
    if not cfg.padding_free:
        c.fail("max_packed_length", "is used by padding_free=True only; set padding_free or leave it unset")
    if longest is not None and cfg.max_packed_length < longest:
        c.fail("max_packed_length", f"must hold the longest sequence, {what} = {longest}, got "
                                    f"{cfg.max_packed_length}")


@dataclass
class LoopConfig:
    # ---- what to train on ----
    model_name_or_path: str | None = f(None, "Local folder or hub id of the model to start from.")
    model_revision: str = f("main", "Branch, tag or commit of a hub model (model_name_or_path and its tokenizer); a "
                                    "local folder has no revisions, so another value warns there and is not used.")
    trust_remote_code: bool = f(False, "Let from_pretrained run the Python modelling code a hub model ships (model "
                                       "and tokenizer); only for repositories you trust.")
    dtype: str | None = f("float32", f"Weights dtype when loading the model, one of {MODEL_DTYPES} ('auto': as "
                                     "saved; none: Transformers' default).")
    attn_implementation: str | None = f(None, f"Attention kernel, one of {ATTENTION} or a hub kernel "
                                              "'owner/name' (none: Transformers' default).")
    load_in_4bit: bool = f(False, "Load the base model quantized to 4 bits (bitsandbytes BitsAndBytesConfig, CUDA "
                                  "only) and train LoRA adapters on it (QLoRA); needs use_peft.")
    load_in_8bit: bool = f(False, "Load the base model quantized to 8 bits (bitsandbytes, CUDA only); needs use_peft.")
    bnb_4bit_quant_type: str = f("nf4", f"4-bit quantization type with load_in_4bit, one of {QUANT_TYPES}.")
    use_bnb_nested_quant: bool = f(False, "With load_in_4bit: quantize the quantization constants too (double "
                                          "quantization; saves about 0.4 bits per parameter).")
    dataset_name: str | None = f(None, "Training data: a .jsonl/.json/.csv/.parquet file, a folder of such files "
                                       "(split from the file names: train.jsonl -> train), a saved `datasets` "
                                       "folder, or a hub id.")
    dataset_config: str | None = f(None, "Configuration (subset) of a hub dataset_name, the `name` argument of "
                                         "datasets.load_dataset; local data has none, so it is an error there. "
                                         "eval_dataset_name is read without one.")
    dataset_split: str = f("train", "Split to read when the dataset has several.")
    dataset_train_split: str | None = f(None, "TRL's name for dataset_split: when given it sets dataset_split (and is "
                                              "none in the resolved config); both with different values is an error.")
    eval_dataset_name: str | None = f(None, "Held-out data in the same forms (default: a slice of the training data, see eval_fraction).")
    eval_dataset_split: str | None = f(None, "Split of eval_dataset_name (or, without one, of dataset_name) to "
                                             "evaluate on, e.g. 'test' (default: dataset_split for "
                                             "eval_dataset_name; no evaluation split of dataset_name).")
    dataset_test_split: str | None = f(None, "TRL's name for eval_dataset_split: when given it sets "
                                             "eval_dataset_split (and is none in the resolved config); both with "
                                             "different values is an error.")
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
    optim: str = f("adamw_torch_fused", f"Optimiser, one of {OPTIMIZERS} (TrainingArguments' names; "
                                        "adamw_torch_fused falls back to the per-tensor AdamW where the fused "
                                        "kernel does not take the parameters' device or dtype).")
    learning_rate: float = f(5e-5, "Peak learning rate.")
    weight_decay: float = f(0.0, "Weight decay (not on biases and norms).")
    adam_beta1: float = f(0.9, "AdamW beta1.")
    adam_beta2: float = f(0.999, "AdamW beta2.")
    adam_epsilon: float = f(1e-8, "AdamW epsilon.")
    lr_scheduler_type: str = f("linear", f"Learning-rate schedule after warm-up, one of {SCHEDULERS}.")
    warmup_steps: int = f(0, "Linear warm-up steps (takes precedence over warmup_ratio).")
    warmup_ratio: float = f(0.0, "Warm-up as a fraction of all optimiser steps.")
    max_grad_norm: float | None = f(1.0, "Clip the global gradient norm to this (None: no clipping).")
    bf16: bool | None = f(None, "bfloat16 autocast for forward/backward (weights and optimiser stay float32); none: on "
                                "where the device runs bfloat16 natively (a CUDA GPU of compute capability 8.0 or "
                                "more, unless Accelerate is told to use the CPU), off elsewhere (CPU, MPS).")
    fp16: bool = f(False, "float16 autocast with loss scaling (GPUs).")
    seed: int = f(42, "Seed for initialisation, shuffling and dropout.")
    gradient_checkpointing: bool = f(False, "Recompute activations in backward to save memory.")
    torch_compile: bool = f(False, "Compile the model's forward with torch.compile (default backend and mode) "
                                   "before training; the first steps are slower while it compiles.")
    fuse_activations: bool = f(True, "Run activations written as chains of elementwise ops (GPT-2's gelu_new) as "
                                     "PyTorch's fused kernel of the same function; weights and outputs unchanged.")
    # ---- LoRA (PEFT) ----
    use_peft: bool = f(False, "Train LoRA adapters (PEFT) instead of all weights; output_dir then holds the adapter.")
    lora_r: int = f(16, "LoRA rank.")
    lora_alpha: int = f(32, "LoRA alpha (the adapter's output is scaled by lora_alpha / lora_r).")
    lora_dropout: float = f(0.05, "Dropout on the LoRA input.")
    lora_target_modules: str | None = f(None, "Modules that get adapters: comma-separated names (c_attn or "
                                              "q_proj,v_proj), 'all-linear', or none for PEFT's default for the "
                                              "architecture.", comma_list=True)
    lora_modules_to_save: str | None = f(None, "Modules trained in full and saved beside the adapters (e.g. "
                                               "lm_head or embed_tokens), comma-separated; a reward model's score "
                                               "head is always among them.", comma_list=True)
    use_rslora: bool = f(False, "Rank-stabilised LoRA: scale the adapter by lora_alpha / sqrt(lora_r) instead of "
                                "lora_alpha / lora_r.")
    use_dora: bool = f(False, "DoRA (weight-decomposed LoRA): train a magnitude per output beside the low-rank "
                              "direction; slower per step than LoRA.")
    # ---- bookkeeping ----
    logging_strategy: str = f("steps", f"When to log averaged training metrics, one of {STRATEGIES}: every "
                                       "logging_steps optimiser steps, at the end of every epoch, or never; 'steps' "
                                       "and 'epoch' also log the run's last step.")
    logging_steps: int = f(10, "Log averaged metrics every this many optimiser steps.")
    eval_strategy: str | None = f(None, f"When to evaluate, one of {STRATEGIES}: every eval_steps optimiser steps "
                                        "(eval_steps 0 then takes logging_steps, as Transformers), at the end of "
                                        "every epoch, or never during train(); none: every eval_steps steps when "
                                        "eval_steps > 0. All but 'no' also evaluate at the end of the run.")
    eval_steps: int = f(0, "Evaluate every this many optimiser steps (0: only at the end; under eval_strategy "
                           "'steps', logging_steps).")
    save_strategy: str | None = f(None, f"When to write a checkpoint, one of {STRATEGIES}: every save_steps "
                                        "optimiser steps (needs save_steps > 0), at the end of every epoch, or "
                                        "never; none: every save_steps steps when save_steps > 0. The final model "
                                        "always goes to output_dir.")
    save_steps: int = f(0, "Write a checkpoint every this many optimiser steps (0: only the final model).")
    save_total_limit: int | None = f(None, "Keep at most this many checkpoints (oldest deleted first).")
    resume_from_checkpoint: str | None = f(None, "A checkpoint-<step> folder to resume from, or 'latest' for the newest in output_dir.")
    report_to: str = f("jsonl,tensorboard", "Comma-separated loggers: jsonl, tensorboard, wandb; 'none' for none. metrics.jsonl goes to output_dir.")
    run_name: str | None = f(None, "Name of the run in W&B and Trackio (their run name) and among the run's "
                                   "hyperparameters in TensorBoard; also in config.yaml and the model card (none: "
                                   "the tracker picks one).")
    disable_tqdm: bool = f(False, "Hide the progress bar.")
    dataloader_num_workers: int = f(0, "Worker processes for data loading.")
    push_to_hub: bool = f(False, "Upload output_dir (model, tokenizer, README.md model card) to the Hugging Face Hub "
                                 "after training; needs a reachable hub and a login (`hf auth login`).")
    hub_model_id: str | None = f(None, "Hub repository 'owner/name' (or 'name') for push_to_hub (default: the "
                                       "name of output_dir).")
    hub_private_repo: bool | None = f(None, "Create the push_to_hub repository private (true) or public (false); none: "
                                            "the hub's default for the account or organisation. A repository that "
                                            "exists keeps its visibility.")

    def __post_init__(self):
        check_field_types(self)
        c = Checks(self)
        for alias, name in SPLIT_ALIASES.items():  # one setting: the alias is folded into rlhfkit's field
            value = getattr(self, alias)
            if value is None:
                continue
            if getattr(self, name) not in (value, field_default(type(self), name)):
                c.fail(alias, f"is TRL's name for {name}, which is set to {getattr(self, name)!r}; give one of them")
            setattr(self, name, value)
            setattr(self, alias, None)
        c.at_least(1, "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                   "max_length", "logging_steps", "lora_r")
        c.at_least(0, "warmup_steps", "eval_steps", "save_steps", "dataloader_num_workers", "weight_decay")
        c.at_least(1, "save_total_limit")
        c.at_least(-1, "max_steps")
        c.positive("num_train_epochs", "learning_rate", "adam_epsilon", "max_grad_norm", "lora_alpha")
        c.within("adam_beta1", 0.0, 1.0, high_open=True)
        c.within("adam_beta2", 0.0, 1.0, high_open=True)
        c.within("warmup_ratio", 0.0, 1.0)
        c.within("eval_fraction", 0.0, 1.0, high_open=True)
        c.within("lora_dropout", 0.0, 1.0, high_open=True)
        c.choice("lr_scheduler_type", SCHEDULERS)
        c.choice("dtype", MODEL_DTYPES, allow_none=True)
        c.choice("logging_strategy", STRATEGIES)
        c.choice("eval_strategy", STRATEGIES, allow_none=True)
        c.choice("save_strategy", STRATEGIES, allow_none=True)
        c.choice("bnb_4bit_quant_type", QUANT_TYPES)
        if self.optim not in OPTIMIZERS:
            package = OPTIMIZERS_ELSEWHERE.get(self.optim)
            why = f"{self.optim!r} needs the {package} package, which rlhfkit does not use" if package else \
                f"got {self.optim!r}"
            c.fail("optim", f"must be one of {', '.join(OPTIMIZERS)}; {why}")
        if self.load_in_4bit and self.load_in_8bit:
            c.fail("load_in_8bit", "choose one of load_in_4bit and load_in_8bit, not both")
        for name in ("load_in_4bit", "load_in_8bit"):
            if getattr(self, name) and not self.use_peft:
                c.fail(name, "needs use_peft: a quantized base model is frozen, and LoRA adapters train on top of it")
        c.attention_and_trackers()
        c.non_empty("model_name_or_path", "dataset_name", "eval_dataset_name", "dataset_split", "output_dir",
                    "eval_dataset_split", "resume_from_checkpoint", "hub_model_id", "lora_target_modules",
                    "model_revision", "dataset_config", "run_name", "lora_modules_to_save")
        if self.eval_dataset_split is not None and self.eval_fraction > 0:
            c.fail("eval_fraction", "set eval_dataset_split or eval_fraction, not both (a split is held out "
                                    "already)")
        if self.bf16 and self.fp16:
            c.fail("fp16", "choose one of bf16 and fp16, not both")
        if self.hub_model_id is not None and self.hub_model_id.count("/") > 1:
            c.fail("hub_model_id", f"must look like 'owner/name' or 'name', got {self.hub_model_id!r}")
        owner = type(self).__name__
        if self.max_steps > 0 and self.num_train_epochs != field_default(type(self), "num_train_epochs"):
            warnings.warn(f"{owner}.num_train_epochs={self.num_train_epochs!r} has no effect: max_steps="
                          f"{self.max_steps} sets the length of the run", UserWarning, stacklevel=3)
        if self.warmup_steps > 0 and self.warmup_ratio > 0:
            warnings.warn(f"{owner}.warmup_ratio={self.warmup_ratio!r} has no effect: warmup_steps="
                          f"{self.warmup_steps} takes precedence", UserWarning, stacklevel=3)
        if self.optim in ("sgd", "adagrad", "rmsprop", "adafactor"):
            for name in ADAM_FIELDS:
                if getattr(self, name) != field_default(type(self), name):
                    warnings.warn(f"{owner}.{name}={getattr(self, name)!r} has no effect: optim={self.optim!r} is "
                                  "not AdamW", UserWarning, stacklevel=3)
        # The strategies, with TrainingArguments' meaning: "steps" without eval_steps evaluates every logging_steps;
        # "no" and "epoch" leave the step counts unused (set to 0, so the resolved config says what runs).
        if self.save_strategy == "steps" and self.save_steps == 0:
            c.fail("save_strategy", "'steps' needs save_steps > 0 (rlhfkit's default save_steps is 0, no checkpoints; "
                                    "Transformers' is 500): give save_steps")
        if self.eval_strategy == "steps" and self.eval_steps == 0:
            self.eval_steps = self.logging_steps
        for strategy, steps in (("eval_strategy", "eval_steps"), ("save_strategy", "save_steps")):
            if getattr(self, strategy) in ("no", "epoch") and getattr(self, steps) > 0:
                warnings.warn(f"{owner}.{steps}={getattr(self, steps)!r} has no effect: {strategy}="
                              f"{getattr(self, strategy)!r}", UserWarning, stacklevel=3)
                setattr(self, steps, 0)
        if self.logging_strategy != "steps" and self.logging_steps != field_default(type(self), "logging_steps"):
            warnings.warn(f"{owner}.logging_steps={self.logging_steps!r} has no effect: logging_strategy="
                          f"{self.logging_strategy!r}", UserWarning, stacklevel=3)
        warn_ignored(self, stacklevel=4)

    @property
    def mixed_precision(self) -> str:
        """'bf16', 'fp16' or 'no'; ``bf16=None`` is decided by the device (``mechanics.native_bf16``)."""
        from .mechanics import native_bf16

        if self.fp16:
            return "fp16"
        return "bf16" if (native_bf16() if self.bf16 is None else self.bf16) else "no"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {x.name: x.metadata.get("help", "") for x in fields(cls)}


def field_default(cls, name: str):
    """The default of dataclass field ``name`` of ``cls`` (MISSING when it has none)."""
    fld = next(x for x in fields(cls) if x.name == name)
    return fld.default_factory() if fld.default_factory is not MISSING else fld.default


def warn_ignored(config, stacklevel: int = 3) -> None:
    """Warn for each field in ``type(config).IGNORED`` ({name: why it has no effect}) that holds a value other
    than its default: fields a trainer accepts (for old scripts and configs, or because they are shared) and
    does not use. A resolved config.yaml holds the defaults there, so re-using it warns about nothing."""
    owner = type(config)
    for name, why in getattr(owner, "IGNORED", {}).items():
        value = getattr(config, name)
        if value != field_default(owner, name):
            warnings.warn(f"{owner.__name__}.{name}={value!r} has no effect: {why}", UserWarning, stacklevel=stacklevel)


def config_markdown(cls) -> str:
    """A Markdown table of a config's fields, defaults and help."""
    lines = [f"## {cls.__name__}", "", "| field | default | meaning |", "| --- | --- | --- |"]
    for x in fields(cls):
        default = x.default_factory() if x.default_factory is not MISSING else x.default
        if x.name == "exp_name":
            default = "<script name>"
        lines.append(f"| `{x.name}` | `{default!r}` | {x.metadata.get('help', '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"
