"""The config reference pages in ``docs/`` are generated from the field help texts here."""

from __future__ import annotations

from .config import config_markdown, field_default
from .dpo import DPOConfig
from .grpo import GRPOConfig
from .kto import KTOConfig
from .ppo_config import PPOConfig
from .reward import RewardConfig
from .rloo import RLOOConfig
from .sft import SFTConfig

LOOP = (SFTConfig, RewardConfig, DPOConfig, KTOConfig, GRPOConfig, RLOOConfig)
# (field, the configs it concerns, TRL 1.16's default (with Transformers 5.x), why rlhfkit's differs);
# rlhfkit's column is read from the configs themselves.
TRL_DEFAULTS = [
    ("bf16", LOOP, "`True` unless fp16, on every device", "none follows the device: bf16 autocast on a CUDA GPU "
     "that runs it natively (Ampere on), off on CPU, MPS and older GPUs, where it is slow or emulated; CPU runs stay "
     "float32, bit-identical to bf16=False"),
    ("gradient_checkpointing", LOOP, "`True`", "recomputing activations in backward costs about a fifth more time "
     "per step, and the small models rlhfkit starts with rarely run out of memory; the reward and DPO prompt-once "
     "forward (share_prompt) needs the key/value cache that checkpointing turns off"),
    ("report_to", LOOP, "`'none'`", "every run keeps a local record: metrics.jsonl always, TensorBoard (a "
     "dependency) by default"),
    ("num_train_epochs", LOOP, "`3.0`", "one pass over the data is the usual SFT/DPO run on a pretrained model; "
     "several epochs of preference data overfit quickly"),
    ("save_strategy", LOOP, "`'steps'` with save_steps 500", "checkpoints hold the optimiser state (about 3x the "
     "model) and are written when asked (save_steps > 0 or save_strategy); the final model always goes to output_dir"),
    ("eval_strategy", LOOP, "`'no'`", "with eval data a run evaluates at its end (and every eval_steps steps when "
     "set); 'no' turns that off"),
    ("max_length", (SFTConfig, RewardConfig, DPOConfig), "`1024`", "half the memory and time of a first run; a row "
     "whose completion would be cut away entirely stops the run with its file and line"),
    ("learning_rate", (RewardConfig,), "`1e-4`", "rlhfkit's reward models train every weight by default, where "
     "1e-4 is aggressive; 1e-5 is stable for a full fine-tune"),
    ("completion_only_loss", (SFTConfig,), "`None`: the completion of prompt-completion rows, every token of "
     "conversations", "conversations train every assistant turn and nothing else (a "
     "prompt-completion row of messages is read as one conversation, so assistant turns of its prompt train too); "
     "text rows train as in TRL"),
    ("dataset_test_split", LOOP, "`'test'` (read only when eval_strategy is not 'no')", "an alias of "
     "eval_dataset_split: none means no evaluation split unless one is asked for"),
    ("max_completion_length", (GRPOConfig, RLOOConfig), "`512`", "sized for a CPU or a single GPU: generation is "
     "most of an online step"),
]
SHORT = {SFTConfig: "sft", RewardConfig: "reward", DPOConfig: "dpo", KTOConfig: "kto", GRPOConfig: "grpo",
         RLOOConfig: "rloo"}


def trl_defaults_markdown() -> str:
    """The table of defaults that differ from TRL 1.16's, rlhfkit's column read from the configs."""
    lines = ["## Defaults that differ from TRL 1.16", "",
             "The defaults below are rlhfkit's own; every other field a TRL user knows keeps TRL 1.16's default "
             "(`dtype` is `float32` in both, `logging_steps` 10, `optim` `adamw_torch_fused`, SFT/DPO/KTO/GRPO "
             "learning rates, `seed` 42). `tests/test_trl_flag_names.py` lists, command by command, the TRL flags "
             "rlhfkit takes and the ones it does not, with the reason.", "",
             "| field | commands | rlhfkit | TRL 1.16 | why |", "| --- | --- | --- | --- | --- |"]
    for name, classes, trl, why in TRL_DEFAULTS:
        ours = sorted({repr(field_default(cls, name)) for cls in classes})
        commands = "all six" if classes == LOOP else ", ".join(SHORT[cls] for cls in classes)
        lines.append(f"| `{name}` | {commands} | {', '.join(f'`{v}`' for v in ours)} | {trl} | {why} |")
    return "\n".join(lines) + "\n\n"

PAGES = {
    "ppo_config.md": ("# PPOConfig reference\n\nGenerated from the field help in `rlhfkit/trainers/ppo_config.py` "
                      "(also shown by `rlhfkit ppo-example --help`). Classic fields keep TRL 0.11.4's names and "
                      "defaults. Classic fields that change nothing here (`push_to_hub_if_best_kwargs`, `compare_steps`, "
                      "`dataset_num_proc`) warn when set to anything but their default, and so does a computed "
                      "field (`backward_batch_size`, `world_size`, ...) set by hand to another value than the one "
                      "computed. `rlhfkit ppo` takes these knobs under the names of Transformers' "
                      "`TrainingArguments` and TRL 1.x (`max_steps` for `steps`, `per_device_train_batch_size` for "
                      "`batch_size`, `report_to` for `log_with`, ...; [ppo_cli.md](ppo_cli.md)).\n\n", [PPOConfig]),
    "configs.md": ("# Training configs reference\n\nGenerated from the field help in `rlhfkit/trainers/` (the same "
                   "text as `rlhfkit sft|reward|dpo|kto --help`). Every field can be set in a YAML file passed with "
                   "`--config`, as a `field=value` override, or as a flag; flags beat overrides, overrides beat the "
                   "file (`rlhfkit/cli_args.py`). Flags follow TRL's `HfArgumentParser`: `--learning_rate` and "
                   "`--learning-rate` are one flag, a bare `--packing` is true and `--no_packing` false, "
                   "`--field none` sets an optional field to None, and an unknown flag or key gets a \"did you "
                   "mean\". Every value is type- and range-checked before a model loads; a bad one is reported at "
                   "the flag, override or YAML line that set it, with exit code 2, and the previous run's "
                   "`output_dir/config.yaml` is left as it was (the resolved config is written once the model and "
                   "data have loaded). The same holds for every command (`grpo`, `rloo`, `ppo`, `control`, `eval`, "
                   "`compare`, `demo` and each `rlhfkit feedback` sub-command; `tests/test_bad_input.py` runs a "
                   "table of bad inputs through the entry point and asserts exit code 2 and a one-line message). A "
                   "field that has no effect in the run warns when it is set: `num_train_epochs` when `max_steps > "
                   "0`, `warmup_ratio` beside `warmup_steps`, `eval_steps`/`save_steps`/`logging_steps` beside an "
                   "`eval_strategy`/`save_strategy`/`logging_strategy` that does not use them, AdamW's betas and "
                   "epsilon under another `optim`, `model_revision` for a local folder, and, for GRPO/RLOO, "
                   "`max_length` and `dataloader_num_workers`. Every training run also writes a `README.md` model "
                   "card to output_dir.\n\n",
                   [SFTConfig, RewardConfig, DPOConfig, KTOConfig]),
}


def render(name: str) -> str:
    header, classes = PAGES[name]
    extra = trl_defaults_markdown() if name == "configs.md" else ""
    return header + extra + "\n".join(config_markdown(cls) for cls in classes)


def write_all(folder: str = "docs") -> None:
    """``python -m rlhfkit.trainers.docs`` rewrites the pages."""
    from pathlib import Path

    for name in PAGES:
        (Path(folder) / name).write_text(render(name))


if __name__ == "__main__":
    write_all()
