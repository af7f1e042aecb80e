"""Active selection: queue first the pairs the current reward model is least sure about.

    from rlhfkit import RewardModel
    summary = prioritise_uncertain(s, "helpful", RewardModel("runs/reward"))
    # rlhfkit feedback prioritise --project helpful --reward_model runs/reward

Annotator time is the scarce resource of RLHF. A pair the reward model already orders with
confidence teaches it little; a pair it finds a coin flip is where a human judgement moves
it most. So every open pair item is scored and given

    p           = sigmoid(r_a - r_b)          Bradley–Terry: P(a beats b) under the reward model
    uncertainty = 1 - |2 p - 1|               1 for a coin flip, towards 0 for a sure call

as its ``Item.priority``; ``service.next_assignment`` serves higher priority first.

Why this measure: the reward model is trained with the Bradley–Terry loss, so ``p`` is exactly
the probability it assigns to the human answer, and choosing the ``p`` closest to 0.5 is
classic uncertainty sampling (Lewis & Gale, 1994). It ranks items the same as the binary
entropy of ``p`` and as the Fisher information ``p (1 - p)`` of the pair about the reward
gap (all are decreasing in ``|r_a - r_b|``), but it is the simplest of them to read:
it lies in [0, 1] and equals 1 - tanh(|r_a - r_b| / 2). Staying in [0, 1] also keeps these
priorities below the human-reward batches (``human_reward.HumanReward`` queues at 100 and
more), which a waiting PPO run needs answered first.

Open means not yet judged by the project's ``per_item`` annotators; gold items are left
alone (they are served by ``gold_rate``, not by priority), and so are ranking items. Rating
items keep their priority unless ``rating_threshold`` is given: then a rating item gets the
uncertainty of its least certain response about that threshold, ``1 - |2 sigmoid(r - t) - 1|``
(a response the model puts right at the accept/reject line is worth a human look).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import service
from .errors import invalid
from .store import Assignment, Item, Project, Prompt, Response

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


def uncertainty(gap: float) -> float:
    """``1 - |2 sigmoid(gap) - 1|`` = ``1 - tanh(|gap| / 2)``: 1 when the reward model cannot
    tell the two responses apart, approaching 0 as it grows sure (tanh form: no overflow)."""
    return 1.0 - math.tanh(abs(gap) / 2.0)


def load_reward_fn(reward: RewardFn | str | os.PathLike, *, batch_size: int = 32) -> RewardFn:
    """A reward function from a callable (returned as is) or a reward-model folder (``RewardModel``)."""
    if callable(reward):
        return reward
    from ..models import RewardModel  # torch + transformers: only when a folder is given
    from .sources import model_source

    try:
        return RewardModel(model_source(reward, "reward model"), batch_size=batch_size)
    except (OSError, ValueError) as err:
        raise invalid(f"cannot load a reward model from {str(reward)!r} (a folder with a num_labels=1 "
                      f"sequence classifier and its tokenizer): {err}") from None


def open_items(s: Session, project: Project, kinds: Sequence[str]) -> list[Item]:
    """Non-gold items of ``kinds`` with fewer than ``per_item`` submitted judgements, oldest first."""
    done = select(Assignment.item_id, func.count(Assignment.id).label("n")) \
        .where(Assignment.status == "done").group_by(Assignment.item_id).subquery()
    query = select(Item).outerjoin(done, done.c.item_id == Item.id) \
        .where(Item.project_id == project.id, Item.kind.in_(list(kinds)), Item.is_gold.is_(False),
               func.coalesce(done.c.n, 0) < project.per_item).order_by(Item.id)
    return list(s.scalars(query))


def score_responses(s: Session, response_ids: Sequence[int], reward_fn: RewardFn, *, batch_size: int = 32,
                    progress: bool = False) -> dict[int, float]:
    """``{response_id: reward}``: each response scored once with its prompt, ``batch_size`` at a time."""
    from tqdm.auto import tqdm

    ids = sorted(set(response_ids))
    texts: dict[int, tuple[str, str]] = {}
    for start in range(0, len(ids), 500):  # keep IN lists short for every backend
        chunk = ids[start:start + 500]
        for rid, prompt, text in s.execute(select(Response.id, Prompt.text, Response.text).join(Prompt)
                                           .where(Response.id.in_(chunk))):
            texts[rid] = (prompt, text)
    scores: dict[int, float] = {}
    with tqdm(total=len(ids), desc="scoring responses", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            out = [float(x) for x in reward_fn([texts[i][0] for i in chunk], [texts[i][1] for i in chunk])]
            if len(out) != len(chunk):
                raise ValueError(f"reward_fn returned {len(out)} scores for {len(chunk)} responses")
            bad = [i for i, x in zip(chunk, out) if not math.isfinite(x)]
            if bad:
                raise ValueError(f"reward_fn returned a non-finite score for response(s) {bad[:5]}")
            scores.update(zip(chunk, out))
            bar.update(len(chunk))
    return scores


def prioritise_uncertain(s: Session, project: Project | str | int, reward_fn: RewardFn | str | os.PathLike, *,
                         batch_size: int = 32, rating_threshold: float | None = None, top: int = 5,
                         progress: bool = False) -> dict[str, Any]:
    """Set the priority of every open pair item (and, with ``rating_threshold``, rating item)
    to the reward model's uncertainty about it (see the module docstring); one transaction.

    ``reward_fn(prompts, responses) -> scores`` is any scorer (``RewardModel`` is one) or a
    reward-model folder. Returns ``{"project", "pairs", "ratings", "responses_scored",
    "items_updated", "mean_uncertainty", "most_uncertain": [{"item_id", "uncertainty",
    "reward_a", "reward_b"}, ...]}`` (``top`` of them, most uncertain first).
    """
    if batch_size < 1:
        raise invalid(f"batch_size must be at least 1, got {batch_size}")
    project = service.get_project(s, project.id if isinstance(project, Project) else project)
    kinds = ("pair",) if rating_threshold is None else ("pair", "rating")
    items = open_items(s, project, kinds)
    summary: dict[str, Any] = {"project": project.name, "pairs": 0, "ratings": 0, "responses_scored": 0,
                               "items_updated": 0, "mean_uncertainty": None, "most_uncertain": []}
    if not items:
        return summary
    scorer = load_reward_fn(reward_fn, batch_size=batch_size)
    rewards = score_responses(s, [rid for item in items for rid in item.response_ids], scorer,
                              batch_size=batch_size, progress=progress)
    priorities: dict[int, float] = {}
    rows = []
    for item in items:
        if item.kind == "pair":
            a, b = item.response_ids
            priorities[item.id] = uncertainty(rewards[a] - rewards[b])
            rows.append({"item_id": item.id, "uncertainty": priorities[item.id], "reward_a": rewards[a],
                         "reward_b": rewards[b]})
            summary["pairs"] += 1
        else:
            priorities[item.id] = max(uncertainty(rewards[rid] - rating_threshold) for rid in item.response_ids)
            summary["ratings"] += 1
    summary["items_updated"] = service.set_priorities(s, project, priorities)
    summary["responses_scored"] = len(rewards)
    summary["mean_uncertainty"] = sum(priorities.values()) / len(priorities)
    summary["most_uncertain"] = sorted(rows, key=lambda r: (-r["uncertainty"], r["item_id"]))[:max(0, top)]
    return summary


# ---------------------------------------------------------------------------------------- command line
def run_prioritise(args: argparse.Namespace) -> int:
    """Run ``rlhfkit feedback prioritise`` from its parsed options (``db``, ``project``, ``reward_model``,
    ``batch_size``, ``rating_threshold``; ``cli.PrioritiseArgs``); prints what changed."""
    from .db import connect, default_url, engine_of
    from .sources import model_source

    model_source(args.reward_model, "reward model")  # a typo fails now, not after the queue was read
    factory = connect(args.db or default_url())
    try:
        with factory() as s:
            summary = prioritise_uncertain(s, args.project, args.reward_model, batch_size=args.batch_size,
                                           rating_threshold=args.rating_threshold, progress=True)
    finally:
        engine_of(factory).dispose()
    if not summary["items_updated"]:
        print(f"project {summary['project']!r}: no open items to prioritise")
        return 0
    print(f"project {summary['project']!r}: {summary['pairs']} pair and {summary['ratings']} rating item(s) "
          f"prioritised from {summary['responses_scored']} scored response(s); mean uncertainty "
          f"{summary['mean_uncertainty']:.3f}")
    for row in summary["most_uncertain"]:
        print(f"  item {row['item_id']}: uncertainty {row['uncertainty']:.3f} "
              f"(rewards {row['reward_a']:.3f} vs {row['reward_b']:.3f})")
    return 0


__all__ = ["load_reward_fn", "open_items", "prioritise_uncertain", "run_prioritise",
           "score_responses", "uncertainty"]
