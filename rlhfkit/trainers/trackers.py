"""Experiment trackers named by ``report_to`` (TRL's spelling): checked before any model loads.

``report_to`` is a comma-separated list of ``jsonl``, ``tensorboard``, ``wandb``, ``trackio``, ``all``
(every installed tracker) or ``none``. ``metrics.jsonl`` in ``output_dir`` is written whatever it says;
a tracker whose package is not installed is refused with the pip command that installs it.

Beside the trackers, every logged row becomes one line on the console (``console_line``), as
Transformers' Trainer prints it: a few key metrics, written on stderr above the progress bar so
that stdout carries a command's JSON summary only.
"""

from __future__ import annotations

import importlib.util
import sys

from tqdm.auto import tqdm

# tracker -> (modules any of which provides it, pip package)
TRACKERS = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
            "wandb": (("wandb",), "wandb"),
            "trackio": (("trackio",), "trackio")}
REPORTERS = ("jsonl", *TRACKERS, "all", "none")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken parent package
        return False


def is_installed(tracker: str) -> bool:
    return any(_importable(m) for m in TRACKERS[tracker][0])


def missing_tracker_problem(tracker: str, field: str = "report_to") -> str | None:
    """None when ``tracker``'s package imports, else what is wrong and the fix."""
    if tracker not in TRACKERS or is_installed(tracker):
        return None
    package = TRACKERS[tracker][1]
    return f"{tracker} is requested but the {package} package is not installed; pip install {package} " \
           f"(or leave {tracker} out of {field})"


def parse_report_to(value: str) -> list[str]:
    return [r.strip() for r in str(value).split(",") if r.strip()]


def check_report_to(value: str, installed: bool = True) -> str | None:
    """None when ``value`` is a valid report_to whose trackers are all installed, else the problem.

    ``installed=False``: the value is the config's default, whose missing trackers are left out quietly."""
    names = parse_report_to(value)
    unknown = [r for r in names if r not in REPORTERS]
    if unknown or not names:
        return f"must be a comma-separated list of {', '.join(REPORTERS)}, got {value!r}"
    for name in names if installed else ():
        problem = missing_tracker_problem(name)
        if problem:
            return problem
    return None


def resolve_trackers(value: str | list | None) -> list[str]:
    """The Accelerate trackers ``report_to`` asks for: ``all`` is every installed one; jsonl and none are none."""
    names = parse_report_to(value) if isinstance(value, str) else [str(v) for v in (value or [])]
    if "all" in names:
        return [t for t in TRACKERS if is_installed(t)]
    return sorted({n for n in names if n in TRACKERS and is_installed(n)})  # a requested one was checked


# The metrics a console line shows, in this order, when a row has them ("train/" dropped); the rest stay in
# metrics.jsonl and the trackers. Held-out rows show their first CONSOLE_EVAL top-level eval/* metrics.
CONSOLE_KEYS = ("loss", "reward", "reward_std", "kl", "rewards/accuracies", "rewards/margins", "accuracy", "margin",
                "mae", "entropy", "completions/mean_length", "response_len", "grad_norm", "learning_rate", "epoch")
CONSOLE_EVAL = 6


def console_line(row: dict, step: int) -> str:
    """``{'step': 10, 'loss': 0.4123, 'grad_norm': 1.52, 'learning_rate': 4.5e-05, 'epoch': 0.5}`` for a logged row.

    ``row``: metric -> number, with or without the ``train/`` prefix; eval rows keep ``eval/``."""
    short = {k.removeprefix("train/"): v for k, v in row.items()}
    shown = [(k, short[k]) for k in CONSOLE_KEYS if isinstance(short.get(k), (int, float))]
    evals = [(k, v) for k, v in row.items() if k.startswith("eval/") and k.count("/") == 1
             and isinstance(v, (int, float))]
    shown += evals[:CONSOLE_EVAL]
    return "{" + ", ".join(f"'{k}': {_number(v)}" for k, v in [("step", step), *shown]) + "}"


def write_console(text: str) -> None:
    """``text`` on stderr, above any progress bar there (the bar is redrawn below it)."""
    tqdm.write(text, file=sys.stderr)


def _number(value) -> str:
    if isinstance(value, int):  # bool too
        return str(int(value))
    return f"{value:.4g}"
