"""The admin's reads: progress, one item's judgements, and every judgement as plain records
(re-exported by ``service``; the caller checks ``require_admin``)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import records
from .base import as_id, resolve_project
from .errors import not_found
from .judging import judgement_of
from .store import KINDS, Annotator, Assignment, Item, Project, Prompt, Response


def progress(s: Session, project: Project | str | int) -> dict:
    """Counts for the admin page (admin only): ``items`` (all), ``gold_items``, ``items_by_kind``,
    ``items_complete`` (non-gold items with ``per_item`` done judgements), ``assignments``
    ``{"open", "done"}`` and ``annotators`` ``[{"name", "open", "done"}]``."""
    project = resolve_project(s, project)
    items = s.execute(select(Item.kind, Item.is_gold, func.count(Item.id)).where(Item.project_id == project.id)
                      .group_by(Item.kind, Item.is_gold)).all()
    done_per_item = select(Assignment.item_id, func.count(Assignment.id).label("n")).join(Item) \
        .where(Item.project_id == project.id, Item.is_gold.is_(False), Assignment.status == "done") \
        .group_by(Assignment.item_id).subquery()
    complete = s.scalar(select(func.count()).select_from(done_per_item).where(done_per_item.c.n >= project.per_item))
    rows = s.execute(select(Annotator.name, Assignment.status, func.count(Assignment.id)).select_from(Assignment)
                     .join(Assignment.annotator).join(Assignment.item).where(Item.project_id == project.id)
                     .group_by(Annotator.name, Assignment.status).order_by(Annotator.name)).all()
    people: dict[str, dict] = {}
    for name, status, count in rows:
        people.setdefault(name, {"name": name, "open": 0, "done": 0})[status] = count
    by_kind = {kind: 0 for kind in KINDS}
    for kind, _gold, count in items:
        by_kind[kind] += count
    return {"project": project.name, "per_item": project.per_item, "items": sum(by_kind.values()),
            "gold_items": sum(count for _k, gold, count in items if gold), "items_by_kind": by_kind,
            "items_complete": complete or 0,
            "assignments": {status: sum(p[status] for p in people.values()) for status in ("open", "done")},
            "annotators": list(people.values())}


def get_item(s: Session, item_id: int) -> Item:
    item = s.get(Item, as_id(item_id, "item"))
    if item is None:
        raise not_found(f"item {item_id}")
    return item


def item_judgements(s: Session, item_id: int) -> dict:
    """Everything about one item (admin only): prompt, responses with their policies, gold answer,
    and every assignment with its annotator, display order, judgement and comment."""
    item = get_item(s, item_id)
    responses = s.scalars(select(Response).where(Response.id.in_(item.response_ids)).order_by(Response.id))
    return {"item_id": item.id, "project": item.project.name, "kind": item.kind, "prompt": item.prompt.text,
            "responses": [{"id": r.id, "text": r.text, "policy": r.policy} for r in responses],
            "is_gold": item.is_gold, "gold_answer": item.gold_answer, "priority": item.priority,
            "judgements": [{"assignment_id": a.id, "annotator": a.annotator.name, "status": a.status,
                            "shown": list(a.shown), "judgement": judgement_of(a), "comment": a.comment or "",
                            "done_at": a.done_at.isoformat() if a.done_at else None}
                           for a in sorted(item.assignments, key=lambda a: a.id)]}


def collect(s: Session, project: Project | str | int) -> records.FeedbackData:
    """Every submitted judgement of ``project`` as plain records (for quality metrics and export).
    Pair winners are canonical (``a`` = smaller id); ``left`` is what was shown on the left."""
    project = resolve_project(s, project)
    data = records.FeedbackData(project=project.name, scale=(project.scale_min, project.scale_max))
    for r, prompt in s.execute(select(Response, Prompt).join(Prompt).where(Prompt.project_id == project.id)
                               .order_by(Response.id)).all():
        data.responses[r.id] = records.ResponseRec(id=r.id, prompt_id=prompt.id, prompt=prompt.text, text=r.text,
                                                   policy=r.policy)
    done = s.execute(select(Assignment, Item, Annotator.name).join(Assignment.item).join(Assignment.annotator)
                     .where(Item.project_id == project.id, Assignment.status == "done").order_by(Assignment.id)).all()
    for a, item, who in done:
        gold = item.gold_answer if item.is_gold else None
        if item.kind == "rating":
            for r in a.ratings:
                data.ratings.append(records.RatingObs(
                    item_id=item.id, response_id=r.response_id, annotator=who, score=float(r.score),
                    is_gold=item.is_gold, gold_score=None if gold is None else float(gold[str(r.response_id)])))
        elif item.kind == "pair":
            c = a.comparison
            data.pairs.append(records.PairObs(item_id=item.id, a=item.response_ids[0], b=item.response_ids[1],
                                              annotator=who, winner=c.winner, left=c.left_response_id,
                                              strength=c.strength, is_gold=item.is_gold, gold_winner=gold))
        else:
            data.rankings.append(records.RankingObs(item_id=item.id, order=tuple(a.ranking.order),
                                                    shown=tuple(a.shown), annotator=who, is_gold=item.is_gold,
                                                    gold_order=None if gold is None else tuple(gold)))
    return data
