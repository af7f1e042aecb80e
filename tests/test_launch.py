"""``rlhfkit <command> --accelerate_config NAME --num_processes N`` runs the command under ``accelerate launch``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhfkit import launch
from rlhfkit.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv", [["--accelerate_config", "fsdp2", "--num_processes", "2"],
                                  ["--accelerate-config=fsdp2", "--num-processes=2"],
                                  ["--num_processes", "2", "--accelerate_config", "fsdp2"]])
def test_launch_flags_are_taken_out_in_every_spelling(argv):
    rest, flags = launch.split_launch_flags(["--config", "x.yaml", *argv, "--max_steps", "3"])
    assert rest == ["--config", "x.yaml", "--max_steps", "3"]
    assert flags == {"accelerate_config": "fsdp2", "num_processes": "2"}


def test_launch_command_runs_accelerate_with_the_shipped_file_and_the_same_arguments():
    cmd = launch.launch_command("sft", ["--config", "x.yaml"], {"accelerate_config": "zero3", "num_processes": "4"})
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    config = Path(cmd[cmd.index("--config_file") + 1])
    assert config == ROOT / "rlhfkit" / "accelerate_configs" / "zero3.yaml" and config.is_file()
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    assert cmd[-5:] == ["-m", "rlhfkit.cli", "sft", "--config", "x.yaml"]


def test_every_named_config_is_shipped_and_num_processes_alone_means_ddp():
    assert all((launch.CONFIG_DIR / name).is_file() for name in launch.NAMED.values())
    cmd = launch.launch_command("dpo", [], {"num_processes": "2"})
    assert cmd[cmd.index("--config_file") + 1].endswith("ddp.yaml")


def test_the_shipped_configs_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"rlhfkit" = ["accelerate_configs/*.yaml"]' in text


@pytest.mark.parametrize("argv,message", [
    (["sft", "--accelerate_config", "zero9"], "'zero9' is neither a shipped config"),
    (["sft", "--accelerate_config", "fsdp1"], "FSDP1 is not supported"),
    (["sft", "--num_processes", "0"], "--num_processes: must be a whole number >= 1"),
    (["sft", "--num_processes", "two"], "--num_processes: must be a whole number >= 1"),
    (["sft", "--num_processes"], "--num_processes needs a value"),
    (["eval", "--num_processes", "2"], "works with the training commands"),
])
def test_bad_launch_flags_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "launching" not in err


def test_inside_accelerate_launch_the_flags_are_refused(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(launch.LaunchError, match="launched already"):
        launch.launch_command("sft", [], {"num_processes": "2"})


def test_a_usage_error_is_reported_once_before_any_process_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["sft", "--model_name_or_path", "missing-folder/x/y", "--dataset_name", "d.jsonl",
              "--accelerate_config", "ddp", "--num_processes", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "launching" not in err and "--model_name_or_path" in err


def test_two_processes_train_and_print_one_summary(tmp_path):
    from rlhfkit.testing import save_tiny

    model = save_tiny(tmp_path / "tiny", "gpt2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "sft", "--model_name_or_path", str(model), "--dataset_name",
         str(ROOT / "examples" / "data" / "sft.jsonl"), "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
         "--per_device_train_batch_size", "2", "--report_to", "jsonl", "--accelerate_config", "ddp",
         "--num_processes", "2"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "launching: -m accelerate.commands.launch --config_file" in done.stderr
    summary = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    assert summary["last_train"]["step"] == 2
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["max_steps"] == 2
