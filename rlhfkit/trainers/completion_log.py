"""``log_completions``: what the policy wrote, next to what it was scored, on the console and in ``completions.jsonl``.

As TRL does, each logged step prints a table of prompts, completions, rewards and advantages (the
step's generation, all processes, ``num_completions_to_print`` of them at most) on stderr, cut to
the width of a terminal line; it also appends one JSON line per completion, uncut, to
``output_dir/completions.jsonl``:

    {"step": 10, "prompt": ..., "completion": ..., "reward": 0.5, "rewards/<function>": 0.5, "advantage": 0.7}

A resume drops the lines of steps after its checkpoint, as it does in ``metrics.jsonl``. GRPO
and RLOO (``online.py``) and ``rlhfkit ppo`` (``ppo_train.py``, rows without per-function
rewards and advantages) write these rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .trackers import write_console

FILE = "completions.jsonl"
WIDTHS = {"prompt": 30, "completion": 50}  # characters of text shown per table cell


def samples(prompts: list, completions: list, rewards: torch.Tensor, per_func: torch.Tensor, names: list[str],
            advantages: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """One row per completion of a generation; a token-level advantage is averaged over the completion."""
    if advantages.dim() == 2:  # (N, R): REINFORCE++'s per-token advantages
        advantages = (advantages * mask).sum(-1) / mask.sum(-1).clamp_min(1)
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        row = {"prompt": prompt, "completion": completion, "reward": _number(rewards[i])}
        row.update({f"rewards/{name}": _number(per_func[i, j]) for j, name in enumerate(names)})
        row["advantage"] = _number(advantages[i])
        rows.append(row)
    return rows


def write(output_dir, step: int, rows: list[dict], limit: int | None, accelerator) -> None:
    """Append ``rows`` of every process (gathered) for ``step``, on the main process."""
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
    if not accelerator.is_main_process:
        return
    total = len(rows)
    rows = rows[:limit] if limit is not None else rows
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(output_dir) / FILE, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"step": step, **row}, ensure_ascii=False, default=str) + "\n")
    write_console(table(step, rows, total))


def table(step: int, rows: list[dict], total: int) -> str:
    """The console table of one step's ``rows``: prompt and completion cut to one line each, then the rewards."""
    numbers = [k for k in rows[0] if k not in WIDTHS] if rows else []
    head = [*WIDTHS, *numbers]
    body = [[_cell(row[k], WIDTHS[k]) for k in WIDTHS] + [_score(row.get(k)) for k in numbers] for row in rows]
    widths = [max(len(c) for c in column) for column in zip(head, *body)]
    lines = [f"completions at step {step} ({len(rows)} of {total})",
             " | ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += [" | ".join(c.ljust(w) if i < len(WIDTHS) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
              for line in body]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value, width: int) -> str:
    """A prompt or completion as one line: a conversation's last message, newlines shown as ⏎, cut with …."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content", "")
    text = " ".join(str(value).replace("\r", "").replace("\n", " ⏎ ").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _score(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _number(value) -> float | None:
    value = float(value)
    return None if value != value else round(value, 6)  # NaN (unscorable) -> null
