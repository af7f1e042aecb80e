"""Learning curves from ``metrics.jsonl``: the ``learning_curve.png`` of every run, and ``rlhfkit plot``.

Every trainer appends one JSON object per logged step to ``<output_dir>/metrics.jsonl``
(``{"step": 10, "train/loss": 0.41, ...}``; ``rlhfkit control`` counts ``global_step``).
``learning_curve`` reads that file and draws the metrics that matter for whichever trainer
wrote it (loss, reward, KL, accuracy, ...; train and eval lines in the same panel) into
``learning_curve.png`` beside it. Reading the file rather than the trainer's memory makes a
resumed run's figure cover the whole run. ``plot_runs`` draws chosen metrics of several runs
side by side, one panel per metric and one line per run (``rlhfkit plot``).

A series of more than ``SMOOTH`` points is drawn faintly with its ``SMOOTH``-point moving mean
on top. Figures are drawn off-screen (Agg canvas, no pyplot state), so no display is needed.
This module imports nothing else from rlhfkit: every layer may use it.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
FIGURE_FILE = "learning_curve.png"
X_KEYS = {"step": "step", "global_step": "environment steps"}  # a row's counter (trainers, control) -> axis label
SMOOTH = 20
MAX_PANELS = 6

# Panels of the learning curve: a title and the metrics drawn in it when the run logged them
# (the loop trainers, GRPO/RLOO, PPOTrainer's stats, the held-out evaluations, control).
PANELS = (
    ("loss", ("train/loss", "eval/loss", "ppo/loss/total")),
    ("reward", ("train/reward", "eval/reward", "env/reward_mean", "eval/reward_mean")),
    ("KL to the reference", ("train/kl", "objective/kl", "eval/kl")),
    ("accuracy", ("train/rewards/accuracies", "eval/rewards/accuracies", "train/accuracy", "eval/accuracy")),
    ("reward margin", ("train/rewards/margins", "eval/rewards/margins", "train/margin")),
    ("perplexity", ("eval/perplexity",)),
    ("entropy", ("train/entropy", "objective/entropy")),
    ("completion length", ("train/completions/mean_length", "eval/completions/mean_length",
                           "tokens/responses_len_mean", "eval/length_mean")),
    ("episodic return", ("episodic_return",)),
)


class PlotError(ValueError):
    """A run folder or metric that cannot be plotted; the message names it."""


# ---------------------------------------------------------------------------------- reading
def read_metrics(run_dir) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (a half-written last line of a killed run is skipped)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: no such folder")
    if not path.is_file():
        raise PlotError(f"{run_dir}: no {METRICS_FILE} in this folder (is it a training output_dir?)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _x_key(rows: list[dict]) -> str:
    return next((k for k in X_KEYS if any(k in r for r in rows)), "step")


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key``: the rows that logged it with a finite number, in file order."""
    x = _x_key(rows)
    points = [(r[x], r[key]) for r in rows
              if isinstance(r.get(key), (int, float)) and isinstance(r.get(x), (int, float))
              and math.isfinite(r[key])]
    return [float(s) for s, _ in points], [float(v) for _, v in points]


def metric_names(rows: list[dict]) -> list[str]:
    """Every numeric metric in ``rows`` (the step counters left out), sorted."""
    names = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names - set(X_KEYS))


def learning_curve_panels(rows: list[dict]) -> list[tuple[str, dict[str, tuple[list, list]]]]:
    """The panels ``learning_curve`` draws: (title, {metric: (steps, values)}) for each panel with data."""
    panels = []
    for title, keys in PANELS:
        lines = {k: series(rows, k) for k in keys}
        lines = {k: v for k, v in lines.items() if v[0]}
        if lines:
            panels.append((title, lines))
    return panels[:MAX_PANELS]


# ---------------------------------------------------------------------------------- drawing
def learning_curve(run_dir, path=None, title: str | None = None) -> Path | None:
    """Draw ``run_dir/metrics.jsonl`` into ``path`` (default ``run_dir/learning_curve.png``).

    Returns the file written, or None when the run has logged nothing that a panel shows."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    panels = learning_curve_panels(rows)
    if not panels:
        return None
    path = Path(path) if path is not None else run_dir / FIGURE_FILE
    return _draw(panels, path, title or run_dir.name, X_KEYS[_x_key(rows)])


def save_learning_curve(run_dir, path=None, title: str | None = None) -> Path | None:
    """``learning_curve`` at the end of a training run: a figure that cannot be drawn (matplotlib missing, a
    full disk) is one line on stderr, never a failed run whose model is already saved."""
    try:
        return learning_curve(run_dir, path, title)
    except (ImportError, OSError, ValueError, RuntimeError) as err:
        print(f"{FIGURE_FILE} not written: {err}", file=sys.stderr)
        return None


def plot_runs(run_dirs: list, metrics: list[str] | None, path) -> Path:
    """``metrics`` of each run in ``run_dirs``: one panel per metric, one line per run (labelled by folder).

    A metric name without a prefix also matches ``train/<name>`` (``loss`` is ``train/loss``).
    ``metrics=None``: the learning curve's metrics that any of the runs logged. ``PlotError`` names a
    folder without ``metrics.jsonl`` or a metric no run logged (listing the ones there are)."""
    runs = {label: read_metrics(d) for label, d in zip(run_labels(run_dirs), run_dirs)}
    every = sorted({name for rows in runs.values() for name in metric_names(rows)})
    if not every:
        raise PlotError(f"{', '.join(map(str, run_dirs))}: {METRICS_FILE} has no logged metrics yet")
    if metrics is None:
        metrics = [k for _, keys in PANELS for k in keys if k in every][:MAX_PANELS] or every[:MAX_PANELS]
    else:
        metrics = [resolve_metric(name, every) for name in metrics]
    panels = []
    for name in metrics:
        lines = {label: series(rows, name) for label, rows in runs.items()}
        panels.append((name, {label: v for label, v in lines.items() if v[0]}))
    colors = {label: f"C{i % 10}" for i, label in enumerate(runs)}  # a run keeps its colour in every panel
    return _draw(panels, Path(path), None, X_KEYS[_x_key(next(iter(runs.values())))], colors)


def resolve_metric(name: str, available: list[str]) -> str:
    if name in available:
        return name
    if f"train/{name}" in available:
        return f"train/{name}"
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise PlotError(f"unknown metric {name!r}{hint}; the runs logged: {', '.join(available)}")


def run_labels(run_dirs: list) -> list[str]:
    """Each folder's name, or as many trailing path parts as make the labels distinct."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in run_dirs]


def check_output(path) -> None:
    """``path`` names an image file matplotlib writes (png, pdf, svg, ...), not a folder."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    if path.is_dir():
        raise PlotError(f"{path} is a folder; give a file name such as {path / 'plot.png'}")
    if path.suffix.lstrip(".").lower() not in formats:
        raise PlotError(f"{path}: unknown image type {path.suffix or '(none)'!r}; use one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")


def _draw(panels, path: Path, title: str | None, xlabel: str, colors: dict | None = None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    width, height = 4.4 * cols, 3.2 * rows + (0.4 if title else 0.0)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    # margins in inches (no tight_layout: it costs twice the drawing)
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.2 / width, bottom=0.5 / height,
                        top=1 - (0.75 if title else 0.35) / height, wspace=0.3, hspace=0.45)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (name, lines) in zip(axes, panels):
        for i, (label, (xs, ys)) in enumerate(lines.items()):
            _line(ax, label, xs, ys, (colors or {}).get(label, f"C{i % 10}"))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _line(ax, label: str, xs: list[float], ys: list[float], color: str) -> None:
    if len(ys) <= SMOOTH:
        ax.plot(xs, ys, color=color, marker="o" if len(ys) <= 12 else None, markersize=3, label=label)
        return
    ax.plot(xs, ys, color=color, alpha=0.25, linewidth=1)
    mean = [sum(ys[i - SMOOTH + 1:i + 1]) / SMOOTH for i in range(SMOOTH - 1, len(ys))]
    ax.plot(xs[SMOOTH - 1:], mean, color=color, label=f"{label} (mean of {SMOOTH})")
