"""Experiment trackers named by ``report_to`` (TRL's spelling): checked before any model loads.

``report_to`` is a comma-separated list of ``jsonl``, ``tensorboard``, ``wandb``, ``trackio``, ``all``
(every installed tracker) or ``none``. ``metrics.jsonl`` in ``output_dir`` is written whatever it says;
a tracker whose package is not installed is refused with the pip command that installs it.
"""

from __future__ import annotations

import importlib.util

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
