"""The demo as an integration test: a --quick run of every stage, then compare and eval on its outputs.

The full-size run (PPO and DPO beating SFT on the hidden quality) is the slow test at the end
and ``benchmarks/demo_bench.py``.
"""

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhfkit.cli import main
from rlhfkit.pipeline import PipelineConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
POLICIES = ["base", "SFT", "PPO", "DPO"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--quick", "--quiet", "--output_dir", str(out), "--seed", "1"]) == 0
    return out


def test_every_stage_writes_its_outputs(demo_dir):
    expected = ["config.yaml", "summary.json", "results.json", "report.md", "report.html", "curves.png",
                "ppo_training.png", "time.png", "distribution_0.png", "distribution_1.png",
                "data/pretrain.jsonl", "data/sft.jsonl", "data/prompts_train.txt", "data/prompts_eval.txt",
                "base/model.safetensors", "base/tokenizer.json", "base/metrics.jsonl",
                "sft/model.safetensors", "sft/metrics.jsonl",
                "feedback/samples.jsonl", "feedback/ratings.jsonl", "feedback/calibrated_scores.jsonl",
                "feedback/pairs_train.jsonl", "feedback/pairs_eval.jsonl", "feedback/summary.json",
                "reward/model.safetensors", "reward/heldout_metrics.json",
                "ppo/final/model.safetensors", "ppo/final/value_head.safetensors", "ppo/metrics.jsonl",
                "dpo/model.safetensors", "dpo/metrics.jsonl"]
    missing = [p for p in expected if not (demo_dir / p).is_file()]
    assert not missing, missing
    assert not list((demo_dir / "ppo").glob("checkpoint-*")), "curve checkpoints are removed after evaluation"
    # every model is a plain Transformers checkpoint
    for name in ("base", "sft", "ppo/final", "dpo"):
        AutoModelForCausalLM.from_pretrained(demo_dir / name)
    assert AutoModelForSequenceClassification.from_pretrained(demo_dir / "reward").config.num_labels == 1
    ratings = [json.loads(line) for line in (demo_dir / "feedback/ratings.jsonl").read_text().splitlines()]
    assert {"prompt", "response", "annotator", "score"} <= set(ratings[0])
    assert {r["score"] for r in ratings} <= {1, 2, 3}


def test_summary_report_and_resolved_config(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert [row["policy"] for row in summary["table"]] == POLICIES
    for row in summary["table"]:
        for key in ("reward", "hidden quality", "KL", "win vs SFT (reward)", "win vs SFT (hidden quality)", "length",
                    "train time (s)"):
            assert row[key] is not None, (row["policy"], key)
    assert {"pairwise_accuracy", "accuracy_vs_truth", "precision", "recall", "f1"} <= set(summary["reward_model"])
    fb = summary["feedback"]
    assert len(fb["annotators"]) == 6 and fb["offset_mae"] >= 0 and fb["pairs_train"] > 0 and fb["pairs_eval"] > 0
    report = (demo_dir / "report.md").read_text()
    for heading in ("## Result", "## Annotators and calibration", "## Reward model", "## Over training",
                    "## Time per method", "## Samples"):
        assert heading in report
    assert "| DPO |" in report and "(curves.png)" in report
    assert "<table>" in (demo_dir / "report.html").read_text()
    saved = yaml.safe_load((demo_dir / "config.yaml").read_text())
    assert saved["seed"] == 1 and saved["hidden_size"] == 32  # the flag and the --quick preset
    assert PipelineConfig(**saved).output_dir == str(demo_dir)  # the resolved config reproduces the run


def test_compare_command_on_the_demo_outputs(demo_dir, capsys):
    out = demo_dir.parent / "compare"
    d = str(demo_dir)
    assert main(["compare", "--config", str(EXAMPLES / "compare.yaml"), "--quiet", "--output_dir", str(out),
                 "--policy", f"{d}/sft", "--reward_model", f"{d}/reward", "--pairs", f"{d}/feedback/pairs_train.jsonl",
                 "--prompts", f"{d}/data/prompts_train.txt", "--eval_prompts", f"{d}/data/prompts_eval.txt",
                 "--extra_policies", "none", "--budget", "16", "--ppo_batch_size", "8", "--ppo_mini_batch_size", "8",
                 "--ppo_epochs", "1", "--dpo_batch_size", "8", "--eval_samples_per_prompt", "1", "--curve_points", "0",
                 "--max_new_tokens", "8"]) == 0
    printed = capsys.readouterr().out
    assert "| PPO |" in printed and "report.md" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["policy"] for r in results["table"]] == ["SFT", "PPO", "DPO"]
    assert results["ppo_steps"] == 2 and results["dpo_steps"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["budget"] == 16
    assert (out / "report.html").exists() and (out / "time.png").exists()


def test_eval_command_on_the_demo_outputs(demo_dir, capsys):
    out = demo_dir.parent / "eval"
    d = str(demo_dir)
    assert main(["eval", "--config", str(EXAMPLES / "eval.yaml"), "--output_dir", str(out),
                 "--policies", f"SFT={d}/sft,PPO={d}/ppo/final", "--prompts", f"{d}/data/prompts_eval.txt",
                 "--reward_model", f"{d}/reward", "--reference", f"{d}/sft", "--pairs",
                 f"{d}/feedback/pairs_eval.jsonl", "--samples_per_prompt", "1", "--max_new_tokens", "8"]) == 0
    assert "win vs SFT (true_quality)" in capsys.readouterr().out
    results = json.loads((out / "eval.json").read_text())
    assert set(results["policies"]) == {"SFT", "PPO"}
    ppo = results["policies"]["PPO"]
    assert {"reward", "true_quality"} == set(ppo["scores"]) and ppo["kl"]["mean"] >= -1e-6
    assert {"accuracy", "precision", "recall", "f1", "pairs"} <= set(results["reward_model"])
    assert (out / "eval.md").exists() and (out / "eval_reward.png").exists() and (out / "config.yaml").exists()


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit, match="needs policy"):
        main(["compare", "--output_dir", str(tmp_path), "--quiet"])
    with pytest.raises(SystemExit, match="nothing to evaluate"):
        main(["eval", "--output_dir", str(tmp_path)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("not_a_field: 1\n")
    with pytest.raises(SystemExit, match="unknown PipelineConfig field"):
        main(["demo", "--config", str(bad)])


@pytest.mark.slow
def test_full_demo_aligned_policies_beat_sft_on_hidden_quality(tmp_path):
    """The main job at full size (a few minutes on 2 CPU cores)."""
    from rlhfkit.pipeline import run_demo

    summary = run_demo(PipelineConfig(output_dir=str(tmp_path / "demo")), progress=False)
    rows = {r["policy"]: r for r in summary["table"]}
    for method in ("PPO", "DPO"):
        assert rows[method]["hidden quality"] > rows["SFT"]["hidden quality"] + 0.2, summary["table"]
        assert rows[method]["win vs SFT (hidden quality)"] > 0.6, summary["table"]
        assert rows[method]["reward"] > rows["SFT"]["reward"]
    assert summary["reward_model"]["pairwise_accuracy"] > 0.8
    assert summary["feedback"]["agreement_calibrated"] >= summary["feedback"]["agreement_raw"]


@pytest.mark.parametrize("command", ["demo", "compare", "eval"])
def test_help_lists_every_field(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--config" in text and "--output_dir" in text and "--seed" in text
