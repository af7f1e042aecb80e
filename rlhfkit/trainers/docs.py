"""The config reference pages in ``docs/`` are generated from the field help texts here."""

from __future__ import annotations

from .config import config_markdown
from .dpo import DPOConfig
from .ppo_config import PPOConfig
from .reward import RewardConfig
from .sft import SFTConfig

PAGES = {
    "ppo_config.md": ("# PPOConfig reference\n\nGenerated from the field help in `rlhfkit/trainers/ppo_config.py` "
                      "(also shown by `rlhfkit ppo-example --help`). Classic fields keep TRL 0.11.4's names and "
                      "defaults.\n\n", [PPOConfig]),
    "configs.md": ("# Training configs reference\n\nGenerated from the field help in `rlhfkit/trainers/` (the same "
                   "text as `rlhfkit sft|reward|dpo --help`). Every field can be set in a YAML file "
                   "passed with `--config` or as a `--field value` flag; flags win.\n\n", [SFTConfig, RewardConfig, DPOConfig]),
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
