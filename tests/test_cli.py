import json

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhfkit.cli import main


def test_tiny_model_command(tmp_path):
    assert main(["tiny-model", "--output_dir", str(tmp_path / "lm"), "--arch", "llama"]) == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "lm").config.model_type == "llama"
    assert AutoTokenizer.from_pretrained(tmp_path / "lm").eos_token == "<|eos|>"
    assert main(["tiny-model", "--output_dir", str(tmp_path / "rm"), "--kind", "reward"]) == 0
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").config.num_labels == 1


def test_ppo_example_command_with_yaml_and_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 4\nmini_batch_size: 2\nlearning_rate: 0.001\n")
    out = tmp_path / "run"
    assert main(["ppo-example", "--output_dir", str(out), "--steps", "2", "--config", str(cfg), "ppo_epochs=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    assert (out / "final" / "config.json").exists() and (out / "metrics.jsonl").exists()
    assert "mean reward rose from" in capsys.readouterr().out


def test_cli_rejects_unknown_field_and_bad_override(tmp_path):
    with pytest.raises(SystemExit, match="unknown PPOConfig field"):
        main(["ppo-example", "--output_dir", str(tmp_path), "not_a_field=1"])
    with pytest.raises(SystemExit, match="key=value"):
        main(["ppo-example", "--output_dir", str(tmp_path), "learning_rate"])
