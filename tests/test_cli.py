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


def test_sft_and_reward_commands_yaml_plus_flags(tmp_path, capsys):
    import yaml

    from rlhfkit.testing import save_tiny

    data = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"
    lm = save_tiny(tmp_path / "lm", "gpt2")
    rm = save_tiny(tmp_path / "rm", "gpt2", kind="reward")
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({"model_name_or_path": str(lm), "dataset_name": str(data / "sft.jsonl"),
                                   "max_steps": 5, "learning_rate": 1e-3, "disable_tqdm": True,
                                   "report_to": "jsonl", "output_dir": str(tmp_path / "ignored")}))
    assert main(["sft", "--config", str(cfg), "--output_dir", str(tmp_path / "sft"), "--max_steps", "2"]) == 0
    saved = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text())
    assert saved["max_steps"] == 2 and saved["learning_rate"] == 1e-3  # flag beats file, file beats default
    assert (tmp_path / "sft" / "model.safetensors").exists()
    assert main(["reward", "--model_name_or_path", str(rm), "--dataset_name", str(data / "preference_explicit.jsonl"),
                 "--output_dir", str(tmp_path / "rm-out"), "--max_steps", "2", "--disable_tqdm", "true",
                 "--report_to", "none"]) == 0
    assert '"output_dir"' in capsys.readouterr().out


def test_training_command_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="required"):
        main(["sft", "--output_dir", str(tmp_path)])
    bad = tmp_path / "c.yaml"
    bad.write_text("not_a_field: 1\n")
    with pytest.raises(SystemExit, match="unknown SFTConfig field"):
        main(["sft", "--config", str(bad)])
    with pytest.raises(SystemExit):
        main(["reward", "--learning_rate", "fast"])
    assert "expected a number" in capsys.readouterr().err


def test_help_documents_every_field(capsys):
    from rlhfkit.trainers import RewardConfig

    with pytest.raises(SystemExit):
        main(["reward", "--help"])
    out = capsys.readouterr().out
    assert all(f"--{name}" in out for name in RewardConfig.field_help())


def test_dpo_command(tmp_path):
    from rlhfkit.testing import save_tiny

    data = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"
    lm = save_tiny(tmp_path / "lm", "gpt2")
    assert main(["dpo", "--model_name_or_path", str(lm), "--dataset_name", str(data / "preference_explicit.jsonl"),
                 "--output_dir", str(tmp_path / "dpo"), "--max_steps", "2", "--loss_type", "ipo", "--beta", "0.2",
                 "--disable_tqdm", "true", "--report_to", "none"]) == 0
    assert (tmp_path / "dpo" / "model.safetensors").exists()
