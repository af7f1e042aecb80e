"""The argument layer: TRL/HfArgumentParser conventions, precedence, YAML lines, types, did-you-mean."""

import argparse

import pytest
import yaml

from rlhfkit.cli_args import UsageError, add_config_arguments, build_config, load_yaml, split_overrides
from rlhfkit.trainers import DPOConfig, SFTConfig


def parse(cls, argv, base=None):
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_arguments(parser, cls)
    rest, overrides = split_overrides(argv, parser)
    args, extras = parser.parse_known_args(rest)
    assert not extras, extras
    return build_config(cls, args, overrides, base)


def test_dash_and_underscore_spellings_are_one_flag():
    assert parse(SFTConfig, ["--learning-rate", "3e-4"])[0].learning_rate == 3e-4
    assert parse(SFTConfig, ["--learning_rate=3e-4"])[0].learning_rate == 3e-4
    assert parse(SFTConfig, ["--per-device-train-batch-size", "2"])[0].per_device_train_batch_size == 2


@pytest.mark.parametrize("argv, expected", [
    (["--packing"], True), (["--packing", "false"], False), (["--packing", "yes"], True), (["--no_packing"], False),
    (["--no-packing"], False), (["--packing=0"], False), ([], False)])
def test_booleans_take_bare_negated_and_valued_forms(argv, expected):
    assert parse(SFTConfig, argv)[0].packing is expected


def test_bare_boolean_does_not_swallow_an_override():
    config, origins = parse(SFTConfig, ["--packing", "max_steps=3"])
    assert config.packing is True and config.max_steps == 3 and origins["max_steps"] == "override max_steps=3"


def test_precedence_defaults_yaml_overrides_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 1\nmax_steps: 5\nlearning_rate: 1e-3\nwarmup_steps: 2\n")  # YAML 1.1 reads 1e-3 as text
    config, origins = parse(SFTConfig, ["--config", str(cfg), "max_steps=7", "warmup_steps=4", "--max_steps", "9"],
                            base={"seed": 0, "logging_steps": 3})
    assert (config.seed, config.max_steps, config.learning_rate, config.warmup_steps, config.logging_steps) == \
        (1, 9, 1e-3, 4, 3)
    assert origins["seed"] == f"{cfg} line 1: seed" and origins["max_steps"] == "--max_steps"
    assert origins["logging_steps"] == "preset logging_steps"


def test_none_for_optional_fields_and_comma_lists(tmp_path):
    config, _ = parse(SFTConfig, ["--max_grad_norm", "none", "--lora_target_modules", "q_proj", "v_proj"])
    assert config.max_grad_norm is None and config.lora_target_modules == "q_proj,v_proj"
    cfg = tmp_path / "l.yaml"
    cfg.write_text("lora_target_modules: [c_attn, c_proj]\nsave_total_limit: null\n")
    assert parse(SFTConfig, ["--config", str(cfg)])[0].lora_target_modules == "c_attn,c_proj"


def test_report_to_none_stays_text():
    assert parse(SFTConfig, ["--report_to", "none"])[0].report_to == "none"


@pytest.mark.parametrize("argv, message", [
    (["--max_steps", "ten"], "--max_steps: expected an integer, got 'ten'"),
    (["--seed", "1.5"], "--seed: expected an integer, got '1.5'"),
    (["--learning_rate", "nan"], "--learning_rate: expected a number"),
    (["--packing", "maybe"], "--packing: expected true or false, got 'maybe'"),
    (["max_steps=ten"], "override max_steps=ten: expected an integer"),
    (["learnig_rate=1"], "did you mean 'learning_rate'"),
])
def test_type_errors_name_the_flag_or_override(argv, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(SFTConfig, argv)


def test_range_errors_are_reported_where_the_value_was_given(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text("beta: 0.1\nlabel_smoothing: 0.7\n")
    with pytest.raises(UsageError, match=r"d.yaml line 2: label_smoothing: must be in \[0.0, 0.5\), got 0.7"):
        parse(DPOConfig, ["--config", str(cfg)])
    with pytest.raises(UsageError, match=r"override label_smoothing=0.6: must be in"):
        parse(DPOConfig, ["label_smoothing=0.6"])


def test_yaml_loader_lines_and_errors(tmp_path):
    good = tmp_path / "g.yaml"
    good.write_text("# comment\nseed: 3\n\nmax_steps: 2\n")
    assert load_yaml(str(good)) == {"seed": (3, 2), "max_steps": (2, 4)}
    empty = tmp_path / "e.yaml"
    empty.write_text("# nothing\n")
    assert load_yaml(str(empty)) == {}
    bad = tmp_path / "b.yaml"
    bad.write_text("seed: 1\nmax_steps: [2\n")
    with pytest.raises(UsageError, match=r"b.yaml line 3 column 1: YAML syntax error"):
        load_yaml(str(bad))
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffseed: 4\n".encode())
    assert load_yaml(str(bom)) == {"seed": (4, 1)}


def test_resolved_config_round_trips(tmp_path):
    from rlhfkit.cli_args import write_resolved_config

    config, _ = parse(SFTConfig, ["--packing", "--lora_target_modules", "c_attn", "--max_grad_norm", "none"])
    path = write_resolved_config(config, tmp_path / "out")
    again, _ = parse(SFTConfig, ["--config", str(path)])
    assert again == config and yaml.safe_load(path.read_text())["packing"] is True


def test_python_api_configs_are_checked_too(tmp_path):
    from rlhfkit.trainers.config import ConfigError

    with pytest.raises(ConfigError, match=r"SFTConfig.learning_rate: expected a number, got str '1e-4'"):
        SFTConfig(learning_rate="1e-4")
    with pytest.raises(ConfigError, match="DPOConfig.precompute_ref_log_probs: expected true or false"):
        DPOConfig(precompute_ref_log_probs="maybe")
    config = SFTConfig(output_dir=tmp_path / "x", num_train_epochs=2)  # a path becomes text, an int a float
    assert config.output_dir == str(tmp_path / "x") and isinstance(config.num_train_epochs, float)


def test_help_shows_both_spellings_and_field_help(capsys):
    from rlhfkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--learning_rate LEARNING_RATE" not in out  # metavars are types
    assert "--learning_rate FLOAT, --learning-rate FLOAT" in out
    assert "--use_peft [true|false], --use-peft [true|false]" in out
    assert all(f"--{name}" in out for name in SFTConfig.field_help())
    assert SFTConfig.field_help()["packing"].split("(")[0].strip()[:40] in " ".join(out.split())


def test_classic_names_of_a_config_are_refused_with_the_name_to_use(tmp_path, capsys):
    """A config's CLASSIC_NAMES: the old spelling as a flag, YAML key or override names the new one."""
    from dataclasses import dataclass

    from rlhfkit.trainers.config import f

    @dataclass
    class Renamed:
        CLASSIC_NAMES = {"steps": "max_steps", "mixed_precision": ("bf16", "fp16")}
        CLASSIC_CONFIG = "OldConfig"
        max_steps: int = f(1, "Steps.")
        bf16: bool = f(False, "bfloat16.")
        fp16: bool = f(False, "float16.")

    assert parse(Renamed, ["--max_steps", "3"])[0].max_steps == 3
    for argv in (["--steps", "3"], ["--steps=3"], ["--steps"]):
        with pytest.raises(UsageError, match=r"^--steps is OldConfig's classic name; on the command line use "
                                             r"--max_steps$"):
            parse(Renamed, argv)
    with pytest.raises(UsageError, match=r"^--mixed_precision is OldConfig's classic name; on the command line "
                                         r"use --bf16 or --fp16$"):
        parse(Renamed, ["--mixed-precision", "bf16"])
    cfg = tmp_path / "r.yaml"
    cfg.write_text("max_steps: 2\nsteps: 3\n")
    with pytest.raises(UsageError, match=rf"^{cfg} line 2: steps is OldConfig's classic name; use max_steps$"):
        parse(Renamed, ["--config", str(cfg)])
    with pytest.raises(UsageError, match=r"^override 'steps=3': steps is OldConfig's classic name; use max_steps$"):
        parse(Renamed, ["steps=3"])
    with pytest.raises(UsageError, match=r"unknown Renamed field 'max_stepz'; did you mean 'max_steps'"):
        parse(Renamed, ["max_stepz=3"])
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_arguments(parser, Renamed)
    parser.print_help()
    assert "--steps" not in capsys.readouterr().out  # hidden from --help
