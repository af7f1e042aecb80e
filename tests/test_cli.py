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


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from rlhfkit.testing import save_tiny

    return str(save_tiny(tmp_path_factory.mktemp("cli-lm") / "lm", "gpt2"))


def _prefs_folder(root):
    """A folder of JSONL files in the Hub layout: the split comes from each file name."""
    import pathlib

    folder = pathlib.Path(root) / "prefs"
    folder.mkdir()
    rows = [{"prompt": f"the band {i} ", "chosen": "rock song", "rejected": "waits"} for i in range(8)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[6:]))
    (folder / "README.md").write_text("not data\n")
    return folder


def test_sft_lora_flags_dtype_attention_and_model_card(tmp_path, tiny_lm, capsys):
    import yaml

    data = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"
    out = tmp_path / "sft-lora"
    assert main(["sft", "--model_name_or_path", tiny_lm, "--dataset-name", str(data / "sft.jsonl"), "--output-dir",
                 str(out), "--max-steps", "2", "--use-peft", "--lora_r", "4", "--lora_alpha", "8",
                 "--lora_target_modules", "c_attn", "--dtype", "float32", "--attn_implementation", "eager",
                 "--gradient_checkpointing", "--report_to", "none", "--disable_tqdm", "logging_steps=1"]) == 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["target_modules"] == ["c_attn"]
    assert not (out / "model.safetensors").exists()  # the adapter only, as TRL saves under PEFT
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "peft" and front["base_model"] == tiny_lm and "sft" in front["tags"]
    assert "AutoPeftModelForCausalLM" in card and "| lora_r | 4 |" in card
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["use_peft"] is True and saved["gradient_checkpointing"] is True and saved["logging_steps"] == 1


def test_reward_and_dpo_read_a_folder_of_jsonl_files_with_its_test_split(tmp_path, tiny_lm, capsys):
    folder = _prefs_folder(tmp_path)
    out = tmp_path / "dpo"
    assert main(["dpo", "--model_name_or_path", tiny_lm, "--dataset_name", str(folder), "--eval_dataset_split", "test",
                 "--output_dir", str(out), "--max_steps", "2", "--report_to", "none", "--disable_tqdm"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "eval/loss" in printed["last_eval"]
    assert "tags:\n- rlhfkit\n- dpo" in (out / "README.md").read_text()


def test_push_to_hub_failure_is_one_clear_line_and_keeps_the_model(tmp_path, tiny_lm, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    data = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"
    out = tmp_path / "pushed"
    code = main(["sft", "--model_name_or_path", tiny_lm, "--dataset_name", str(data / "sft.jsonl"), "--output_dir",
                 str(out), "--max_steps", "1", "--report_to", "none", "--disable_tqdm", "--push_to_hub",
                 "--hub_model_id", "me/tiny-sft"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "could not upload" in err and "'me/tiny-sft'" in err and "hub unreachable" in err
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


def test_failed_run_leaves_the_previous_config_yaml(tmp_path, tiny_lm):
    data = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"
    out = tmp_path / "run"
    argv = ["sft", "--model_name_or_path", tiny_lm, "--dataset_name", str(data / "sft.jsonl"), "--output_dir",
            str(out), "--max_steps", "1", "--report_to", "none", "--disable_tqdm"]
    assert main(argv) == 0
    before = (out / "config.yaml").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": ""}\n')
    with pytest.raises(SystemExit) as exit_info:  # fails while loading the data, after every flag was fine
        main([*argv[:4], str(bad), *argv[5:], "--max_steps", "3"])
    assert exit_info.value.code == 2 and "bad.jsonl line 2" in str(exit_info.value)
    assert (out / "config.yaml").read_text() == before


def test_every_command_takes_key_value_overrides(tmp_path, capsys):
    assert main(["tiny-model", "--output_dir", str(tmp_path / "m"), "hidden_size=32", "arch=llama"]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["hidden_size"] == 32
    for command in ("sft", "reward", "dpo", "kto", "grpo", "rloo", "distill", "ppo", "eval", "compare", "demo",
                    "ppo-example", "tiny-model"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "not_a_field_anywhere=1"])
        assert exit_info.value.code == 2 and "unknown" in str(exit_info.value) and "field" in str(exit_info.value)


def test_reward_lora_trains_and_saves_the_score_head(tmp_path):
    from rlhfkit.testing import save_tiny

    data = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"
    rm = save_tiny(tmp_path / "rm", "gpt2", kind="reward")
    out = tmp_path / "rm-lora"
    assert main(["reward", "--model_name_or_path", str(rm), "--dataset_name", str(data / "preference_explicit.jsonl"),
                 "--output_dir", str(out), "--max_steps", "1", "--use_peft", "--report_to", "none",
                 "--disable_tqdm"]) == 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    assert "AutoPeftModelForSequenceClassification" in (out / "README.md").read_text()


def test_version_flag_prints_the_package_version(capsys):
    import rlhfkit

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rlhfkit {rlhfkit.__version__}"


def test_env_command_prints_every_package_line(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for line in ("Platform:", "Python version:", "rlhfkit version:", "PyTorch version:", "CUDA available:", "Device:",
                 "Transformers version:", "Accelerate version:", "Datasets version:", "PEFT version:",
                 "DeepSpeed version:", "vLLM version:", "W&B (wandb) version:", "TensorBoard version:",
                 "Trackio version:", "CPU count:", "bf16 supported:"):
        assert f"- {line}" in out, line
    assert "- vLLM version:" in out and ("not installed" in out or "vLLM version: 0" in out)


def test_help_lists_env_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "env " in out and "--version" in out


@pytest.mark.parametrize("report_to", ["none", "all"])
def test_metrics_jsonl_is_written_whatever_report_to_says(tmp_path, tiny_lm, report_to):
    data = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"
    out = tmp_path / "sft"
    assert main(["sft", "--model_name_or_path", str(tiny_lm), "--dataset_name", str(data / "sft.jsonl"),
                 "--output_dir", str(out), "--max_steps", "1", "--logging_steps", "1", "--disable_tqdm", "true",
                 "--report_to", report_to]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in row for row in rows)


def test_library_config_refuses_a_tracker_that_is_not_installed(monkeypatch):
    import sys

    from rlhfkit.trainers import GRPOConfig, PPOConfig, SFTConfig

    for module in ("wandb", "trackio"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ValueError, match="report_to: wandb is requested .*pip install wandb"):
        SFTConfig(report_to="jsonl,wandb")
    with pytest.raises(ValueError, match="report_to: trackio is requested .*pip install trackio"):
        GRPOConfig(report_to="trackio")
    with pytest.raises(ValueError, match="log_with: wandb is requested .*pip install wandb"):
        PPOConfig(log_with="wandb")
    assert SFTConfig(report_to="all").report_to == "all"  # every installed tracker; none installed is fine
    from rlhfkit.trainers.trackers import resolve_trackers

    assert resolve_trackers("all") == ["tensorboard"]  # every installed tracker, and only those
    assert resolve_trackers("jsonl,none") == []


def test_top_level_help_lists_each_command_once_with_one_line_and_no_rst(capsys, monkeypatch):
    from rlhfkit.cli import SUMMARY, build_parser

    monkeypatch.setenv("COLUMNS", "200")
    parser, _ = build_parser()
    text = parser.format_help()
    assert "``" not in text
    commands = [line.split()[0] for line in text.split("commands:")[1].split("\n\n")[0].splitlines()[2:]]
    assert sorted(commands) == sorted(set(commands)) == sorted(n for n in SUMMARY if n in parser._subparsers
                                                               ._group_actions[0].choices)
    for name in commands:
        assert SUMMARY[name] in text


def test_no_command_help_carries_rst_backticks(capsys):
    from rlhfkit.cli import build_parser

    parser, subparsers = build_parser()
    for name, sub in subparsers.items():
        assert "``" not in sub.format_help(), name
