"""`rlhfkit ppo` speaks TrainingArguments / TRL 1.x names; the Python PPOConfig keeps TRL 0.11's."""

import json
import re
import shutil
import sys
from dataclasses import MISSING, fields

import pytest
import torch
import yaml

from rlhfkit.cli import main
from rlhfkit.pipeline import ppo_run
from rlhfkit.pipeline.ppo_run import PPORunConfig
from rlhfkit.trainers import PPOConfig

# PPOConfig fields that are no field of the command line, and why
COMPUTED = ("world_size", "is_encoder_decoder", "is_peft_model", "backward_batch_size", "global_backward_batch_size",
            "global_batch_size")
LABELS = ("task_name", "model_name", "query_dataset", "reward_model")
ALIASES = ("forward_batch_size", "optimize_cuda_cache")
NO_EFFECT = ("remove_unused_columns", "compare_steps", "dataset_num_proc", "push_to_hub_if_best_kwargs")
LEFT_OUT = (*COMPUTED, *LABELS, *ALIASES, *NO_EFFECT)
NEW_NAMES = ("max_steps", "per_device_train_batch_size", "num_ppo_epochs", "kl_coef", "report_to", "bf16", "fp16",
             "run_name", "attn_implementation", "push_to_hub", "hub_model_id")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlhfkit.testing import save_tiny

    root = tmp_path_factory.mktemp("ppo-flags")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("the band", "a robot", "they", "we sing")))
    return {"policy": str(save_tiny(root / "policy", hidden_size=32, seed=1)),
            "rm": str(save_tiny(root / "rm", kind="reward", hidden_size=32, seed=2)), "prompts": str(prompts)}


def _argv(tiny, out, *extra) -> list[str]:
    return ["ppo", "--model_name_or_path", tiny["policy"], "--reward_model_path", tiny["rm"], "--dataset_name",
            tiny["prompts"], "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2",
            "--mini_batch_size", "2", "--num_ppo_epochs", "1", "--max_new_tokens", "3", "--report_to", "none",
            "--learning_rate", "1e-3", *extra]


@pytest.fixture
def seen(monkeypatch):
    """What PPOTrainer was built with in the run: its config, the policy and the trainer itself."""
    import rlhfkit.trainers as trainers

    record = {}

    class Recording(trainers.PPOTrainer):
        def __init__(self, config, model, *args, **kwargs):
            record.update(config=config, model=model)
            super().__init__(config, model, *args, **kwargs)
            record["trainer"] = self

    monkeypatch.setattr(trainers, "PPOTrainer", Recording)
    return record


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fail the test if the run starts (a usage error must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("run_ppo was called: the error should have come before anything loads")

    monkeypatch.setattr(ppo_run, "run_ppo", refuse)


def _usage_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# ---- the mapping, without a run ----
def test_every_ppo_config_field_is_on_the_command_line_renamed_or_left_out():
    run = {x.name: x for x in fields(PPORunConfig)}
    for x in fields(PPOConfig):
        if x.name in LEFT_OUT:
            assert x.name not in run, x.name
        elif x.name in PPORunConfig.CLASSIC_NAMES:
            new = PPORunConfig.CLASSIC_NAMES[x.name]
            assert x.name not in run and all(n in run for n in ((new,) if isinstance(new, str) else new)), x.name
        else:  # the same knob under the same name: same type, default and (unless stated) help
            assert x.name in run, f"PPOConfig.{x.name} is neither a field of PPORunConfig nor left out"
            assert run[x.name].type == x.type, x.name
            default = x.default_factory() if x.default_factory is not MISSING else x.default
            assert getattr(PPORunConfig(), x.name) == default, x.name


def test_the_command_line_defaults_build_the_classic_defaults_but_max_steps():
    built, classic = PPORunConfig().ppo_config(), PPOConfig()
    assert built.steps == 100 and classic.steps == 20000
    assert (built.batch_size, built.ppo_epochs, built.init_kl_coef) == \
        (classic.batch_size, classic.ppo_epochs, classic.init_kl_coef) == (128, 4, 0.2)
    assert built.mixed_precision == classic.mixed_precision == "no"
    assert built.exp_name == "ppo" and built.project_kwargs == {"logging_dir": "runs/ppo"}
    assert classic.log_with is None and classic.project_kwargs == {}


def test_ppo_config_translates_precision_trackers_and_run_name():
    assert PPORunConfig(bf16=True).ppo_config().mixed_precision == "bf16"
    assert PPORunConfig(fp16=True).ppo_config().mixed_precision == "fp16"
    assert PPORunConfig(report_to="jsonl,tensorboard").ppo_config().log_with == ["tensorboard"]
    assert PPORunConfig(report_to="none").ppo_config().log_with is None
    named = PPORunConfig(run_name="rm-v2", output_dir="runs/x", tracker_kwargs={"wandb": {"tags": ["a"]}},
                         project_kwargs={"logging_dir": "logs"}).ppo_config()
    assert named.exp_name == "rm-v2" and named.tracker_kwargs == {"wandb": {"name": "rm-v2", "tags": ["a"]}}
    assert named.project_kwargs == {"logging_dir": "logs"}
    built = PPORunConfig(max_steps=7, per_device_train_batch_size=8, mini_batch_size=4, num_ppo_epochs=2,
                         kl_coef=0.05).ppo_config()
    assert (built.steps, built.batch_size, built.mini_batch_size, built.ppo_epochs, built.init_kl_coef) == \
        (7, 8, 4, 2, 0.05)


def test_help_lists_the_new_names_and_no_computed_label_or_classic_field(capsys):
    with pytest.raises(SystemExit):
        main(["ppo", "--help"])
    text = capsys.readouterr().out
    flags = set(re.findall(r"(?<![\w-])--([a-z][\w-]*)", text))
    assert set(NEW_NAMES) <= flags
    assert not flags & {*LEFT_OUT, *PPORunConfig.CLASSIC_NAMES}, flags & {*LEFT_OUT, *PPORunConfig.CLASSIC_NAMES}


# ---- classic names are refused where they are given, before anything loads ----
def _new(old: str) -> str:
    new = PPORunConfig.CLASSIC_NAMES[old]
    return new if isinstance(new, str) else new[0]


@pytest.mark.parametrize("old", sorted(PPORunConfig.CLASSIC_NAMES))
def test_a_classic_name_as_flag_yaml_key_or_override_names_the_one_to_use(old, tiny, tmp_path, capsys, nothing_runs):
    value = {"log_with": "wandb", "mixed_precision": "bf16", "exp_name": "x", "init_kl_coef": "0.1"}.get(old, "2")
    use = PPORunConfig.CLASSIC_NAMES[old]
    names = (use,) if isinstance(use, str) else use
    line = _usage_line(capsys, _argv(tiny, tmp_path / "f", f"--{old}", value))
    assert line.endswith(f"--{old} is PPOConfig's classic name; on the command line use "
                         + " or ".join(f"--{n}" for n in names)), line
    cfg = tmp_path / "classic.yaml"
    cfg.write_text(f"seed: 3\n{old}: {value}\n")
    line = _usage_line(capsys, _argv(tiny, tmp_path / "y", "--config", str(cfg)))
    assert line.endswith(f"{cfg} line 2: {old} is PPOConfig's classic name; use {' or '.join(names)}"), line
    line = _usage_line(capsys, _argv(tiny, tmp_path / "o", f"{old}={value}"))
    assert f"override '{old}={value}': {old} is PPOConfig's classic name; use {_new(old)}" in line, line
    assert not (tmp_path / "f").exists() and not (tmp_path / "y").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", [*COMPUTED, *LABELS])
def test_computed_fields_and_labels_are_no_flags(name, tiny, tmp_path, capsys, nothing_runs):
    line = _usage_line(capsys, _argv(tiny, tmp_path / "c", f"--{name}", "1"))
    assert f"unknown flag --{name}" in line


# ---- each new name in a tiny run ----
def test_new_names_drive_the_run_and_the_resolved_config_reruns(tiny, tmp_path, capsys, seen):
    out = tmp_path / "run"
    argv = _argv(tiny, out, "--max_steps", "2", "--per_device_train_batch_size", "4", "--num_ppo_epochs", "2",
                 "--kl_coef", "0.07", "--adap_kl_ctrl", "false", "--report_to", "jsonl", "--attn_implementation",
                 "eager", "--run_name", "tiny-run", "--save_steps", "0")
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    config = seen["config"]
    assert isinstance(config, PPOConfig) and not isinstance(config, PPORunConfig)
    assert (config.steps, config.batch_size, config.ppo_epochs, config.init_kl_coef, config.exp_name) == \
        (2, 4, 2, 0.07, "tiny-run")
    assert config.log_with is None and config.mixed_precision == "no"  # jsonl: metrics.jsonl only
    assert seen["model"].pretrained_model.config._attn_implementation == "eager"
    assert seen["trainer"].kl_ctl.value == 0.07  # a fixed controller keeps kl_coef
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "ppo/loss/total" in r] == [1, 2]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert set(saved) == {x.name for x in fields(PPORunConfig)}
    assert (saved["max_steps"], saved["per_device_train_batch_size"], saved["num_ppo_epochs"], saved["kl_coef"],
            saved["report_to"], saved["run_name"], saved["attn_implementation"]) == \
        (2, 4, 2, 0.07, "jsonl", "tiny-run", "eager")
    assert "| max_steps | 2 |" in (out / "final" / "README.md").read_text()  # the model card, in TRL's names
    # the resolved file is a config of its own: it runs again as it is and resolves to itself
    copy = tmp_path / "again.yaml"
    shutil.copy(out / "config.yaml", copy)
    assert main(["ppo", "--config", str(copy)]) == 0
    capsys.readouterr()
    assert (out / "config.yaml").read_text() == copy.read_text()


def test_bf16_runs_on_cpu(tiny, tmp_path, capsys, seen):
    out = tmp_path / "bf16"
    assert main(_argv(tiny, out, "--bf16")) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    assert seen["config"].mixed_precision == "bf16" and seen["trainer"].mechanics.autocast_dtype == torch.bfloat16
    row = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
               if "ppo/loss/total" in line)
    assert torch.isfinite(torch.tensor(row["ppo/loss/total"]))
    assert yaml.safe_load((out / "config.yaml").read_text())["bf16"] is True


@pytest.mark.parametrize("how", ["flag", "list", "yaml"])
def test_report_to_wandb_without_wandb_exits_2_before_training(how, tiny, tmp_path, capsys, monkeypatch,
                                                               nothing_runs):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed, whatever this machine has
    cfg = tmp_path / "w.yaml"
    cfg.write_text("report_to: wandb\n")
    extra = {"flag": ["--report_to", "wandb"], "list": ["--report_to", "jsonl,wandb"],
             "yaml": ["--config", str(cfg)]}[how]
    argv = [word for word in _argv(tiny, tmp_path / "w") if word not in ("--report_to", "none")] + extra
    line = _usage_line(capsys, argv)
    where = f"{cfg} line 1: report_to" if how == "yaml" else "--report_to"
    assert f"{where}: wandb is requested but the wandb package is not installed; pip install wandb" in line, line
    assert not (tmp_path / "w").exists()


def test_push_to_hub_offline_exits_2_before_anything_loads(tiny, tmp_path, capsys, monkeypatch, nothing_runs):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _usage_line(capsys, _argv(tiny, tmp_path / "p", "--push_to_hub", "--hub_model_id", "me/tiny-ppo"))
    assert "--push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded" in line


def test_push_to_hub_uploads_the_final_folder(tiny, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = {}

    class Url(str):
        repo_id = "me/tiny-ppo"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.update(
        repo=repo_id) or Url("https://hub/me/tiny-ppo"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(kw))
    out = tmp_path / "pushed"
    assert main(_argv(tiny, out, "--push_to_hub", "--hub_model_id", "me/tiny-ppo")) == 0
    capsys.readouterr()
    assert calls["repo"] == "me/tiny-ppo" and calls["folder_path"] == str(out / "final")
    assert (out / "final" / "README.md").is_file() and (out / "final" / "value_head.safetensors").is_file()


def test_push_to_hub_failure_is_one_line_exit_1_and_keeps_the_model(tiny, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    out = tmp_path / "offline"
    assert main(_argv(tiny, out, "--push_to_hub")) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "could not upload" in err[0] and "'offline'" in err[0] and "hub unreachable" in err[0]
    assert (out / "final" / "model.safetensors").is_file()
