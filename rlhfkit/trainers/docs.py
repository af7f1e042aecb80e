"""The config reference pages in ``docs/`` are generated from the field help texts here."""

from __future__ import annotations

from .config import config_markdown
from .dpo import DPOConfig
from .kto import KTOConfig
from .ppo_config import PPOConfig
from .reward import RewardConfig
from .sft import SFTConfig

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
                   "0`, `warmup_ratio` beside `warmup_steps`, and, for GRPO/RLOO, `max_length` and "
                   "`dataloader_num_workers`. Every training run also writes a `README.md` model card to "
                   "output_dir.\n\n",
                   [SFTConfig, RewardConfig, DPOConfig, KTOConfig]),
}


def render(name: str) -> str:
    header, classes = PAGES[name]
    return header + "\n".join(config_markdown(cls) for cls in classes)


def write_all(folder: str = "docs") -> None:
    """``python -m rlhfkit.trainers.docs`` rewrites the pages."""
    from pathlib import Path

    for name in PAGES:
        (Path(folder) / name).write_text(render(name))


if __name__ == "__main__":
    write_all()
