"""Watching a run: the console line at logging steps, the samples table, learning_curve.png, JSON-only stdout."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit import SFTConfig, SFTTrainer, plot
from rlhfkit.cli import main
from rlhfkit.testing import save_tiny, tiny_causal_lm
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from tests.trainers.online_helpers import in_target, prompt_rows, small

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "data"
SFT_ROWS = [{"prompt": f"the cat {w}", "completion": " sings all night."} for w in ("a", "b", "c", "d")]


def console_lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if line.startswith("{'step': ")]


def sft(tokenizer, out, **kw) -> SFTTrainer:
    args = SFTConfig(**{**dict(output_dir=str(out), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-3,
                               logging_steps=2, report_to="jsonl", disable_tqdm=True, max_length=32), **kw})
    return SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), args=args, train_dataset=SFT_ROWS,
                      eval_dataset=SFT_ROWS[:2], processing_class=tokenizer)


def test_sft_prints_one_line_per_logging_step_and_evaluation_on_stderr(tokenizer, tmp_path, capsys):
    sft(tokenizer, tmp_path, eval_steps=2).train()
    out, err = capsys.readouterr()
    lines = console_lines(err)
    def shape(step: int, *keys: str) -> str:
        number = "-?[0-9.]+(e-?[0-9]+)?"
        return re.escape(f"{{'step': {step}, ") + ", ".join(f"'{re.escape(k)}': {number}" for k in keys) + "}"

    assert len(lines) == 4, err
    train = ("loss", "grad_norm", "learning_rate", "epoch")
    assert re.fullmatch(shape(2, *train), lines[0]) and re.fullmatch(shape(4, *train), lines[2]), lines
    assert re.fullmatch(shape(2, "eval/loss", "eval/perplexity"), lines[1]), lines
    assert lines[3].startswith("{'step': 4, 'eval/loss': ")
    assert "SFT:" not in err  # disable_tqdm drops the training bar and keeps the lines
    assert not console_lines(out)
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_resumed_run_draws_its_whole_learning_curve(tokenizer, tmp_path, monkeypatch):
    sft(tokenizer, tmp_path, logging_steps=1, save_steps=2).train()
    drawn = {}
    real = plot._draw
    monkeypatch.setattr(plot, "_draw", lambda panels, *args: drawn.update(panels=dict(panels)) or real(panels, *args))
    resumed = sft(tokenizer, tmp_path, logging_steps=1, save_steps=2)
    history = resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert [r["step"] for r in history if "train/loss" in r] == [3, 4]  # this call logged the last two steps
    assert drawn["panels"]["loss"]["train/loss"][0] == [1, 2, 3, 4]  # the figure shows all four


def test_grpo_prints_lines_and_a_table_of_completions(tokenizer, tmp_path, capsys):
    GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target,
                args=GRPOConfig(**small(tmp_path, beta=0.1, log_completions=True, num_completions_to_print=3)),
                train_dataset=prompt_rows(), processing_class=tokenizer).train()
    err = capsys.readouterr().err
    lines = console_lines(err)
    assert [line.split(",")[0] for line in lines] == ["{'step': 1", "{'step': 2"]
    assert all(k in lines[0] for k in ("'loss': ", "'reward': ", "'kl': ", "'learning_rate': "))
    assert "clip_ratio" not in lines[0]  # a few key metrics, not every metric
    table = err[err.index("completions at step 1 (3 of 8)"):].splitlines()
    assert re.fullmatch(r"prompt +\| completion +\| reward +\| rewards/in_target \| advantage", table[1]), table[1]
    assert len(table[2].split(" | ")) == 5 and table[5].startswith("{'step': 2")  # three rows, then step 2's line
    assert (tmp_path / "learning_curve.png").exists()


def test_rlhfkit_ppo_lines_table_learning_curve_and_json_stdout(tmp_path, capsys):
    policy, rm = save_tiny(tmp_path / "policy", hidden_size=32), save_tiny(tmp_path / "rm", kind="reward")
    out = tmp_path / "run"
    assert main(["ppo", "--model_name_or_path", str(policy), "--reward_model_path", str(rm), "--dataset_name",
                 str(DATA / "prompts.jsonl"), "--output_dir", str(out), "--max_steps", "2",
                 "--per_device_train_batch_size", "2", "--mini_batch_size", "2", "--max_new_tokens", "4",
                 "--report_to", "none", "log_completions=true", "num_completions_to_print=1"]) == 0
    stdout, err = capsys.readouterr()
    assert json.loads(stdout)["steps"] == 2
    lines = console_lines(err)
    assert [line.split(",")[0] for line in lines] == ["{'step': 1", "{'step': 2"] and "'kl': " in lines[0]
    assert "completions at step 2 (1 of 2)" in err
    assert [json.loads(r)["step"] for r in (out / "completions.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "learning_curve.png").exists()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    return {"lm": save_tiny(root / "lm", hidden_size=32), "root": root}


@pytest.mark.parametrize("command, flags", [
    ("sft", ["--dataset_name", str(DATA / "sft.jsonl"), "--logging_steps", "1"]),
    ("grpo", ["--dataset_name", str(DATA / "prompts.jsonl"), "--reward_funcs",
              "tests/trainers/online_helpers.py:in_target", "--num_generations", "2",
              "--per_device_train_batch_size", "2", "--max_completion_length", "4", "--logging_steps", "1",
              "--log_completions", "true"]),
])
def test_stdout_of_a_training_command_is_its_json_summary(folders, command, flags):
    """A real process, as `rlhfkit sft ... | jq .` sees it: the libraries' chatter must not reach stdout."""
    out = folders["root"] / command
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "rlhfkit.cli", command, "--model_name_or_path", str(folders["lm"]),
                           "--output_dir", str(out), "--max_steps", "2", "--report_to", "none", *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # nothing else on stdout
    assert summary["output_dir"] == str(out) and summary["last_train"]["step"] == 2
    assert [line.split(",")[0] for line in console_lines(proc.stderr)] == ["{'step': 1", "{'step': 2"]
    assert (out / "learning_curve.png").exists()
