"""rlhfkit.plot and ``rlhfkit plot``: what the learning curve draws, several runs side by side, bad inputs."""

import json
from pathlib import Path

import pytest

from rlhfkit import plot
from rlhfkit.cli import main


def run(folder: Path, rows: list[dict], tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / plot.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return folder


def sft_rows(scale: float = 1.0) -> list[dict]:
    rows = []
    for step in range(1, 7):
        rows.append({"step": step, "train/loss": scale * 3.0 / step, "train/grad_norm": 1.0,
                     "train/learning_rate": 1e-4})
        if step % 3 == 0:
            rows.append({"step": step, "eval/loss": scale * 3.5 / step, "eval/perplexity": 30.0 / step})
    return rows


def test_learning_curve_draws_train_and_eval_together_from_the_file(tmp_path):
    folder = run(tmp_path / "sft", sft_rows(), tail='{"step": 7, "train/lo')  # a killed run's half line
    panels = dict(plot.learning_curve_panels(plot.read_metrics(folder)))
    assert list(panels) == ["loss", "perplexity"]
    assert panels["loss"]["train/loss"][0] == [1, 2, 3, 4, 5, 6]
    assert panels["loss"]["eval/loss"] == ([3, 6], [3.5 / 3, 3.5 / 6])
    path = plot.learning_curve(folder)
    assert path == folder / "learning_curve.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_curve_panels_of_online_ppo_dpo_and_control_runs():
    def titles(rows):
        return [title for title, _ in plot.learning_curve_panels(rows)]

    grpo = [{"step": 1, "train/loss": 0.1, "train/reward": 0.5, "train/kl": 0.01, "train/entropy": 5.0,
             "train/completions/mean_length": 4.0, "train/clip_ratio/high_mean": 0.0}]
    ppo = [{"step": 1, "ppo/loss/total": 0.1, "env/reward_mean": 0.2, "objective/kl": 0.0, "objective/entropy": 9.0,
            "tokens/responses_len_mean": 4.0}, {"step": 1, "eval/reward_mean": 0.3, "eval/kl": 0.1}]
    dpo = [{"step": 1, "train/loss": 0.69, "train/rewards/accuracies": 0.5, "train/rewards/margins": 0.0}]
    control = [{"global_step": 16, "episodic_return": 9.0, "episodic_length": 9},
               {"global_step": 32, "iteration": 1, "loss/policy": 0.1, "approx_kl": 0.01}]
    assert titles(grpo) == ["loss", "reward", "KL to the reference", "entropy", "completion length"]
    assert titles(ppo) == ["loss", "reward", "KL to the reference", "entropy", "completion length"]
    assert dict(plot.learning_curve_panels(ppo))["reward"]["eval/reward_mean"] == ([1.0], [0.3])
    assert titles(dpo) == ["loss", "accuracy", "reward margin"]
    assert titles(control) == ["episodic return"]
    assert plot.series(control, "episodic_return") == ([16.0], [9.0])


def test_plot_runs_one_panel_per_metric_one_line_per_run(tmp_path, monkeypatch):
    a, b = run(tmp_path / "lr-a" / "out", sft_rows()), run(tmp_path / "lr-b" / "out", sft_rows(2.0))
    drawn = {}
    real = plot._draw
    monkeypatch.setattr(plot, "_draw", lambda panels, *args: drawn.update(panels=panels) or real(panels, *args))
    path = plot.plot_runs([a, b], ["loss", "eval/loss"], tmp_path / "cmp.png")
    assert path.stat().st_size > 1000
    panels = dict(drawn["panels"])
    assert list(panels) == ["train/loss", "eval/loss"]  # 'loss' names train/loss
    assert list(panels["eval/loss"]) == ["lr-a/out", "lr-b/out"]  # same folder name: the parent tells them apart
    assert panels["train/loss"]["lr-b/out"][1][0] == 6.0


def test_unknown_metric_lists_the_logged_ones(tmp_path):
    folder = run(tmp_path / "sft", sft_rows())
    with pytest.raises(plot.PlotError, match=r"unknown metric 'eval/los' \(did you mean 'eval/loss'\?\); the runs "
                                             r"logged: eval/loss, eval/perplexity, train/grad_norm"):
        plot.plot_runs([folder], ["eval/los"], tmp_path / "x.png")


def test_cli_plot_writes_one_png_for_two_runs(tmp_path, capsys):
    a, b = run(tmp_path / "a", sft_rows()), run(tmp_path / "b", sft_rows(0.5))
    out = tmp_path / "figs" / "runs.png"
    assert main(["plot", str(a), str(b), "--metrics", "train/loss,eval/loss", "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and f"wrote {out}" in capsys.readouterr().out
    assert main(["plot", str(a), "--output", str(tmp_path / "default.svg")]) == 0  # the learning curve's metrics
    assert (tmp_path / "default.svg").read_text().startswith("<?xml")
