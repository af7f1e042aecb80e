"""The demo's and the evaluation's docs and example YAMLs stay in step with the configs."""

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from rlhfkit.eval import EvalConfig
from rlhfkit.pipeline import CompareConfig, PipelineConfig
from rlhfkit.trainers import DPOConfig
from rlhfkit.trainers.config import config_markdown

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("page, cls", [("demo.md", PipelineConfig), ("eval.md", EvalConfig),
                                       ("eval.md", CompareConfig)])
def test_config_tables_in_docs_are_current(page, cls):
    assert config_markdown(cls) in (ROOT / "docs" / page).read_text(), \
        f"paste rlhfkit.trainers.config.config_markdown({cls.__name__}) into docs/{page}"


@pytest.mark.parametrize("cls", [PipelineConfig, CompareConfig, EvalConfig])
def test_every_field_has_help(cls):
    assert all(x.metadata.get("help", "").strip() for x in fields(cls))


def test_example_yamls_load():
    demo = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    assert PipelineConfig(**demo) == PipelineConfig()  # the demo YAML lists every field at its default
    assert set(demo) == {x.name for x in fields(PipelineConfig)}
    compare = CompareConfig(**yaml.safe_load((ROOT / "examples" / "compare.yaml").read_text()))
    assert compare.policy == "runs/demo/sft" and compare.budget == PipelineConfig().budget
    evaluation = EvalConfig(**yaml.safe_load((ROOT / "examples" / "eval.yaml").read_text()))
    assert evaluation.pairs.endswith("pairs_eval.jsonl")
    assert DPOConfig(**yaml.safe_load((ROOT / "examples" / "dpo.yaml").read_text())).beta == 0.1
