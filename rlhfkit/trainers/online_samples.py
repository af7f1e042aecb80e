"""``log_completions``: what the policy wrote, next to what it was scored, in ``completions.jsonl``.

TRL prints a table of prompts, completions, rewards and advantages on logging steps; here each
logged step appends one JSON line per completion (the step's generation, all processes,
``num_completions_to_print`` of them at most) to ``output_dir/completions.jsonl``:

    {"step": 10, "prompt": ..., "completion": ..., "reward": 0.5, "rewards/<function>": 0.5, "advantage": 0.7}

A resume drops the lines of steps after its checkpoint, as it does in ``metrics.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FILE = "completions.jsonl"


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
    rows = rows[:limit] if limit is not None else rows
    with open(Path(output_dir) / FILE, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"step": step, **row}, ensure_ascii=False, default=str) + "\n")


def _number(value) -> float | None:
    value = float(value)
    return None if value != value else round(value, 6)  # NaN (unscorable) -> null
