"""examples/grpo.yaml and examples/rloo.yaml run as configs, through ``Trainer(args=config)`` and the CLI."""

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

from rlhfkit import cli
from rlhfkit.testing import save_tiny
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.trainers.rloo import RLOOConfig, RLOOTrainer

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(max_steps=2, logging_steps=1, eval_steps=0, save_steps=0, per_device_train_batch_size=8,
            max_completion_length=4, disable_tqdm=True)


@pytest.fixture
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {"policy": save_tiny(base / "tiny", hidden_size=32), "reward": save_tiny(base / "rm", kind="reward")}


def example(name: str, tiny: dict, out: Path) -> dict:
    fields = yaml.safe_load((ROOT / "examples" / name).read_text())
    fields.update(FAST, model_name_or_path=str(tiny["policy"]), output_dir=str(out))
    fields["reward_funcs"] = [str(tiny["reward"]) if f == "runs/rm" else f for f in fields["reward_funcs"]]
    return fields


@pytest.mark.parametrize("name, config_cls, trainer_cls", [("grpo.yaml", GRPOConfig, GRPOTrainer),
                                                           ("rloo.yaml", RLOOConfig, RLOOTrainer)])
def test_example_config_trains_from_args_alone(tiny, tmp_path, monkeypatch, name, config_cls, trainer_cls):
    monkeypatch.chdir(ROOT)  # the examples name their data and reward module relative to the repository root
    history = trainer_cls(args=config_cls(**example(name, tiny, tmp_path / "out"))).train()
    assert any("train/reward" in row for row in history)
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize("command, name", [("grpo", "grpo.yaml"), ("rloo", "rloo.yaml")])
def test_cli_runs_the_example(tiny, tmp_path, monkeypatch, capsys, command, name):
    assert cli.TRAINERS[command] == (f"{command.upper()}Config", f"{command.upper()}Trainer")
    monkeypatch.chdir(ROOT)
    fields = example(name, tiny, tmp_path / "out")
    argv = [command, "--config", f"examples/{name}", "--model_name_or_path", fields["model_name_or_path"],
            "--output_dir", fields["output_dir"], f"reward_funcs={json.dumps(fields['reward_funcs'])}"]
    argv += [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in FAST.items()]
    assert cli.main(argv) == 0
    assert '"train/loss"' in capsys.readouterr().out  # the summary names the last training row
    assert (tmp_path / "out" / "metrics.jsonl").exists()
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


@pytest.mark.parametrize("config_cls", [GRPOConfig, RLOOConfig])
def test_docs_list_every_field_with_its_current_help(config_cls):
    from rlhfkit.trainers.config import config_markdown

    assert all(text.strip() for text in config_cls.field_help().values())
    assert config_markdown(config_cls) in (ROOT / "docs" / "online.md").read_text(), \
        "regenerate the tables at the end of docs/online.md (command in its 'Config fields' section)"
