"""The admin's review of items: browse them with filters, and see where annotators disagree.

Re-exported by ``service``; admin only (the caller checks ``require_admin``), so gold answers and
policies appear here. Responses are labelled A, B, C... in id order (the item's canonical order),
the same letters for every annotator, whatever order each of them was shown.

When do annotators of one item disagree (``item_agreement``; at least two judgements needed)?

- comparison: not all chose the same winner (a tie counts as its own answer);
- ranking: not all put the same response first;
- rating: some response's scores span more than half the scale (on 1-3: a 1 and a 3; on 1-5:
  a 1 and a 4; on 1-10: a gap of 5 or more).
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from .base import as_id, resolve_project
from .errors import invalid, not_found
from .judging import judgement_of
from .store import KINDS, Annotator, Assignment, Item, ItemSkip, Project, Prompt, Response

STATUSES = ("waiting", "partial", "complete", "discarded")  # filter values; see ItemRow.status
AGREEMENTS = ("agree", "disagree", "single")               # "single": fewer than two judgements
MAX_PER_PAGE = 200


def letter(i: int) -> str:
    """A, B, ..., Z, AA, AB, ... for the i-th response (0-based) of an item."""
    out = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        out = string.ascii_uppercase[rest] + out
    return out


@dataclass
class ItemRow:
    item_id: int
    kind: str
    prompt_id: int
    is_gold: bool
    response_ids: list[int]
    done: int = 0
    open: int = 0
    annotators: list[str] = field(default_factory=list)  # of the submitted judgements
    discards: int = 0
    skips: int = 0
    agreement: str = "single"
    judgements: list[dict] = field(default_factory=list)
    prompt: str = ""

    def status(self, per_item: int) -> str:
        """waiting: nothing submitted; partial: fewer than ``per_item`` judgements; complete: enough."""
        return "waiting" if self.done == 0 else ("complete" if self.done >= per_item else "partial")


def item_agreement(kind: str, judgements: list[dict], scale: tuple[int, int]) -> str:
    """``"agree"``, ``"disagree"`` or ``"single"`` (fewer than two) for one item (module docstring)."""
    if len(judgements) < 2:
        return "single"
    if kind == "pair":
        return "agree" if len({j["winner"] for j in judgements}) == 1 else "disagree"
    if kind == "ranking":
        return "agree" if len({j["order"][0] for j in judgements}) == 1 else "disagree"
    half = (scale[1] - scale[0]) / 2
    spans = {}
    for j in judgements:
        for rid, score in j["scores"].items():
            low, high = spans.get(rid, (score, score))
            spans[rid] = (min(low, score), max(high, score))
    return "disagree" if any(high - low > half for low, high in spans.values()) else "agree"


def _rows(s: Session, project: Project) -> list[ItemRow]:
    rows = {item_id: ItemRow(item_id, kind, prompt_id, bool(gold), list(ids)) for item_id, kind, prompt_id, gold, ids
            in s.execute(select(Item.id, Item.kind, Item.prompt_id, Item.is_gold, Item.response_ids)
                         .where(Item.project_id == project.id).order_by(Item.id)).all()}
    query = select(Assignment).join(Item).where(Item.project_id == project.id).order_by(Assignment.id) \
        .options(selectinload(Assignment.ratings), selectinload(Assignment.comparison),
                 selectinload(Assignment.ranking), selectinload(Assignment.annotator), selectinload(Assignment.item))
    for a in s.scalars(query):
        row = rows[a.item_id]
        if a.status != "done":
            row.open += 1
            continue
        row.done += 1
        row.annotators.append(a.annotator.name)
        row.judgements.append({"assignment": a, **judgement_of(a)})
    for item_id, kind in s.execute(select(ItemSkip.item_id, ItemSkip.kind).join(Item)
                                   .where(Item.project_id == project.id)).all():
        if kind == "discard":
            rows[item_id].discards += 1
        else:
            rows[item_id].skips += 1
    scale = (project.scale_min, project.scale_max)
    for row in rows.values():
        row.agreement = item_agreement(row.kind, row.judgements, scale)
    return list(rows.values())


def browse_items(s: Session, project: Project | str | int, *, kind: Optional[str] = None,
                 status: Optional[str] = None, agreement: Optional[str] = None, annotator: Optional[str] = None,
                 gold: Optional[bool] = None, page: int = 1, per_page: int = 50) -> dict:
    """Items of ``project`` matching every given filter, ``per_page`` at a time (page 1 first), oldest first.

    ``kind`` rating/pair/ranking; ``status`` waiting/partial/complete (see ``ItemRow.status``) or
    discarded (someone discarded it); ``agreement`` agree/disagree/single; ``annotator`` a name that
    submitted a judgement of it; ``gold`` True/False. Returns ``{"rows": [ItemRow], "total", "page",
    "pages", "per_page"}``, each row with its prompt text."""
    project = resolve_project(s, project)
    for value, allowed, what in ((kind, KINDS, "kind"), (status, STATUSES, "status"),
                                 (agreement, AGREEMENTS, "agreement")):
        if value is not None and value not in allowed:
            raise invalid(f"{what} must be one of {list(allowed)}, got {value!r}")
    if not 1 <= per_page <= MAX_PER_PAGE or page < 1:
        raise invalid(f"page must be >= 1 and per_page 1..{MAX_PER_PAGE}, got page={page}, per_page={per_page}")
    rows = [r for r in _rows(s, project)
            if (kind is None or r.kind == kind)
            and (status is None or (r.discards > 0 if status == "discarded" else r.status(project.per_item) == status))
            and (agreement is None or r.agreement == agreement)
            and (annotator is None or annotator in r.annotators)
            and (gold is None or r.is_gold == gold)]
    pages = max(1, math.ceil(len(rows) / per_page))
    shown = rows[(page - 1) * per_page:page * per_page]
    texts = dict(s.execute(select(Prompt.id, Prompt.text).where(Prompt.id.in_({r.prompt_id for r in shown}))).all())
    for r in shown:
        r.prompt = texts[r.prompt_id]
    return {"rows": shown, "total": len(rows), "page": page, "pages": pages, "per_page": per_page}


def _describe(kind: str, judgement: dict, labels: dict[int, str]) -> str:
    """A judgement in the item's letters: "A: 3, B: 1", "B better (clearly)", "tie", "C > A > B"."""
    if kind == "rating":
        return ", ".join(f"{labels[int(rid)]}: {score}" for rid, score in
                         sorted(judgement["scores"].items(), key=lambda kv: labels[int(kv[0])]))
    if kind == "pair":
        if judgement["winner"] == "tie":
            return "tie"
        strength = {1: "slightly", 2: "clearly", 3: "much"}.get(judgement["strength"] or 0)
        return f"{labels[judgement['winner_id']]} better" + (f" ({strength})" if strength else "")
    return " > ".join(labels[rid] for rid in judgement["order"])


def gold_text(item: Item, labels: dict[int, str]) -> str:
    """The gold answer in the item's letters ("" if not gold)."""
    if not item.is_gold:
        return ""
    answer = item.gold_answer
    if item.kind == "rating":
        return ", ".join(f"{labels[int(rid)]}: {score}" for rid, score in sorted(answer.items(),
                                                                               key=lambda kv: labels[int(kv[0])]))
    if item.kind == "pair":
        return "tie" if answer == "tie" else f"{labels[item.response_ids[0 if answer == 'a' else 1]]} better"
    return " > ".join(labels[rid] for rid in answer)


def item_review(s: Session, item_id: int, project: Project | None = None) -> dict:
    """One item for review: prompt (and chat messages), responses A, B, ... with their policies, gold answer,
    agreement, and every judgement (annotator, answer in letters, the order they saw, comment), plus who
    skipped or discarded it and why. 404 if it is not in ``project`` (when given)."""
    item = s.get(Item, as_id(item_id, "item"))
    if item is None or (project is not None and item.project_id != project.id):
        raise not_found(f"item {item_id}" + (f" in project {project.name!r}" if project is not None else ""))
    labels = {rid: letter(i) for i, rid in enumerate(item.response_ids)}
    responses = {r.id: r for r in s.scalars(select(Response).where(Response.id.in_(item.response_ids)))}
    done = [a for a in sorted(item.assignments, key=lambda a: a.id) if a.status == "done"]
    judgements = [{"assignment": a, **judgement_of(a)} for a in done]
    skips = s.execute(select(ItemSkip, Annotator.name).join(Annotator, ItemSkip.annotator_id == Annotator.id)
                      .where(ItemSkip.item_id == item.id).order_by(ItemSkip.id)).all()
    p = item.project
    return {"item_id": item.id, "kind": item.kind, "prompt": item.prompt.text, "prompt_meta": item.prompt.meta or {},
            "is_gold": item.is_gold, "gold": gold_text(item, labels), "priority": item.priority,
            "responses": [{"id": rid, "label": labels[rid], "text": responses[rid].text,
                           "policy": responses[rid].policy} for rid in item.response_ids],
            "agreement": item_agreement(item.kind, judgements, (p.scale_min, p.scale_max)),
            "open": sum(a.status == "open" for a in item.assignments),
            "judgements": [{"annotator": j["assignment"].annotator.name, "answer": _describe(item.kind, j, labels),
                            "shown": " ".join(labels[rid] for rid in j["assignment"].shown),
                            "comment": j["assignment"].comment or "",
                            "done_at": j["assignment"].done_at.strftime("%Y-%m-%d %H:%M")} for j in judgements],
            "skips": [{"annotator": name, "kind": skip.kind, "reason": skip.reason} for skip, name in skips]}


def annotator_names(s: Session, project: Project) -> list[str]:
    """Everyone with a submitted judgement in ``project`` (for the browser's annotator filter)."""
    return list(s.scalars(select(Annotator.name).join(Assignment).join(Item)
                          .where(Item.project_id == project.id, Assignment.status == "done")
                          .distinct().order_by(Annotator.name)))


__all__ = ["AGREEMENTS", "STATUSES", "annotator_names", "browse_items", "item_agreement", "item_review", "letter"]
