from pathlib import Path

import pytest

from rlhfkit.trainers import PPOConfig, RewardConfig, SFTConfig
from rlhfkit.trainers.docs import PAGES, render

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(PAGES))
def test_config_reference_pages_are_current(name):
    assert (ROOT / "docs" / name).read_text() == render(name), "regenerate with: python -m rlhfkit.trainers.docs"


@pytest.mark.parametrize("cls", [PPOConfig, SFTConfig, RewardConfig])
def test_every_config_field_has_help(cls):
    assert all(text.strip() for text in cls.field_help().values())
