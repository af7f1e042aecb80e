from pathlib import Path

from rlhfkit.trainers.ppo_config import PPOConfig, config_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_is_current():
    assert (ROOT / "docs" / "ppo_config.md").read_text() == config_markdown(), \
        "regenerate docs/ppo_config.md with rlhfkit.trainers.ppo_config.config_markdown()"


def test_every_config_field_has_help():
    assert all(text.strip() for text in PPOConfig.field_help().values())
