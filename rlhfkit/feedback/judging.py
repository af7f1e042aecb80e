"""The annotator's side: the queue, what they see, and their judgements (re-exported by ``service``)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .base import (as_id, as_int, atomic, check_access, check_permutation, check_scores, check_text, resolve_annotator,
                   resolve_project)
from .errors import FeedbackError, conflict, forbidden, invalid, not_found
from .store import (SKIP_KINDS, Annotator, Assignment, Comparison, Item, ItemSkip, Project, RankingJudgement, Rating,
                    Response, utcnow)

MAX_COMMENT = 2000   # characters of a comment or a discard reason

_SIDES = {"left": 0, "right": 1}


def next_assignment(s: Session, project: Project | str | int, annotator: Annotator) -> Assignment | None:
    """The annotator's next assignment in ``project``, or None when nothing is left for them.

    An open assignment of theirs is returned again (a reload shows the same item). Otherwise
    the item is the one with the highest priority, then the fewest assignments, then of the
    prompt they saw longest ago, then the oldest, among items not yet given to this annotator and given to fewer than ``per_item``
    annotators. With probability ``gold_rate`` a gold item they have not seen is served
    instead; gold items have no ``per_item`` cap (every annotator should meet some) and look
    exactly like other items. The display order is shuffled per assignment, reproducibly.

    Expiry: an open assignment older than the project's ``timeout_minutes`` no longer holds
    its item, which can then go to someone else. When its annotator comes back, they keep it
    (renewed) if the item still needs them, else it is dropped and they get another item.

    Items the annotator skipped or discarded (``skip_assignment``) are never served to them again.
    Among equally urgent items, the one whose prompt this annotator saw longest ago (or never) comes
    first, so prompts take turns rather than one prompt coming up many times in a row. 403/409 if the annotator
    may not judge the project (members only, archived: ``base.check_access``).
    """
    with atomic(s):
        project = resolve_project(s, project)
        annotator = resolve_annotator(s, annotator)
        check_access(s, project, annotator)
        # Serialise assignment per project on PostgreSQL (SQLite already holds its write lock),
        # so two annotators asking at once cannot push an item past per_item.
        s.execute(select(Project.id).where(Project.id == project.id).with_for_update())
        mine = select(Assignment).join(Item).where(Item.project_id == project.id,
                                                   Assignment.annotator_id == annotator.id)
        current = s.scalar(mine.where(Assignment.status == "open").order_by(Assignment.id).limit(1))
        now = utcnow()
        if current is not None:
            if current.assigned_at >= _cutoff(project, now):
                return current
            if _has_room(s, current, project, now):
                current.assigned_at = now  # theirs again, for a fresh timeout
                return current
            s.delete(current)  # the item went to others meanwhile
            s.flush()
        item = _pick_item(s, project, annotator, now)
        if item is None:
            return None
        shown = list(item.response_ids)
        random.Random(f"shown:{item.id}:{annotator.id}").shuffle(shown)
        assignment = Assignment(item_id=item.id, annotator_id=annotator.id, shown=shown, status="open",
                                assigned_at=now)
        s.add(assignment)
        s.flush()
    return assignment


def _cutoff(project: Project, now: datetime) -> datetime:
    """Open assignments taken before this have expired."""
    return now - timedelta(minutes=project.timeout_minutes)


def _holds(project: Project, now: datetime):
    """SQL condition: the assignment counts against its item's ``per_item`` (submitted, or open and not expired)."""
    return or_(Assignment.status == "done", Assignment.assigned_at >= _cutoff(project, now))


def _has_room(s: Session, a: Assignment, project: Project, now: datetime) -> bool:
    """Whether ``a``'s item still needs ``a``: fewer than ``per_item`` other assignments hold it (gold: always)."""
    if a.item.is_gold:
        return True
    others = s.scalar(select(func.count(Assignment.id)).where(Assignment.item_id == a.item_id, Assignment.id != a.id,
                                                              _holds(project, now)))
    return others < project.per_item


def _pick_item(s: Session, project: Project, annotator: Annotator, now: datetime) -> Item | None:
    counts = select(Assignment.item_id, func.count(Assignment.id).label("n")).where(_holds(project, now)) \
        .group_by(Assignment.item_id).subquery()
    n = func.coalesce(counts.c.n, 0)
    candidates = select(Item).outerjoin(counts, counts.c.item_id == Item.id) \
        .where(Item.project_id == project.id, *_not_seen(annotator))
    # The prompt this annotator saw longest ago (or never) first: prompts take turns instead of coming in runs.
    last = select(Item.prompt_id, func.max(Assignment.id).label("last")).join(Assignment) \
        .where(Item.project_id == project.id, Assignment.annotator_id == annotator.id) \
        .group_by(Item.prompt_id).subquery()
    candidates = candidates.outerjoin(last, last.c.prompt_id == Item.prompt_id)
    order = [Item.priority.desc(), n.asc(), func.coalesce(last.c.last, 0).asc(), Item.id.asc()]
    regular = s.scalar(candidates.where(Item.is_gold.is_(False), n < project.per_item).order_by(*order).limit(1))
    if regular is None or project.gold_rate <= 0:
        return regular  # gold alone is never served: it is a check on real work, not work
    served = s.scalar(select(func.count(Assignment.id)).join(Item).where(Item.project_id == project.id,
                                                                         Assignment.annotator_id == annotator.id))
    if random.Random(f"gold:{project.id}:{annotator.id}:{served}").random() >= project.gold_rate:
        return regular
    gold = s.scalar(candidates.where(Item.is_gold.is_(True)).order_by(n.asc(), Item.id.asc()).limit(1))
    return gold if gold is not None else regular


def _not_seen(annotator: Annotator) -> list:
    """SQL conditions on ``Item``: never given to the annotator, and not skipped or discarded by them."""
    seen = select(Assignment.item_id).where(Assignment.annotator_id == annotator.id)
    skipped = select(ItemSkip.item_id).where(ItemSkip.annotator_id == annotator.id)
    return [Item.id.not_in(seen), Item.id.not_in(skipped)]


def queue_position(s: Session, project: Project | str | int, annotator: Annotator) -> dict:
    """``{"done", "total"}`` for the "x of N" line: ``total`` is what they submitted, plus their open item,
    plus the items still waiting for them now (not gold; gold items only come on top of real work)."""
    project = resolve_project(s, project)
    now = utcnow()
    mine = select(Assignment.status, func.count(Assignment.id)).join(Item) \
        .where(Item.project_id == project.id, Assignment.annotator_id == annotator.id).group_by(Assignment.status)
    by_status = dict(s.execute(mine).all())
    counts = select(Assignment.item_id, func.count(Assignment.id).label("n")).where(_holds(project, now)) \
        .group_by(Assignment.item_id).subquery()
    waiting = s.scalar(select(func.count(Item.id)).outerjoin(counts, counts.c.item_id == Item.id)
                       .where(Item.project_id == project.id, Item.is_gold.is_(False),
                              func.coalesce(counts.c.n, 0) < project.per_item, *_not_seen(annotator))) or 0
    done = by_status.get("done", 0)
    return {"done": done, "total": done + by_status.get("open", 0) + waiting}


def skip_assignment(s: Session, annotator: Annotator, assignment_id: int, kind: str = "skip",
                    reason: str = "") -> ItemSkip:
    """Give an open assignment back without judging it: ``kind="skip"`` (reason optional) or ``"discard"``
    (the item cannot be judged as it is: a reason is required, and admins see it in the item browser).
    The item is not served to this annotator again and goes to someone else. 409 if already submitted."""
    if kind not in SKIP_KINDS:
        raise invalid(f"kind must be one of {list(SKIP_KINDS)}, got {kind!r}")
    reason = check_text(reason if isinstance(reason, str) else "", "reason").strip()
    if kind == "discard" and not reason:
        raise invalid("say why the item is discarded (the reason is shown to the project's admins)")
    if len(reason) > MAX_COMMENT:
        raise invalid(f"the reason is {len(reason)} characters; keep it under {MAX_COMMENT}")
    with atomic(s):
        annotator = resolve_annotator(s, annotator)
        a = _own(s, annotator, assignment_id, lock=True)
        check_access(s, a.item.project, annotator)
        if a.status == "done":
            raise conflict(f"assignment {a.id} was already submitted; edit it from your judgements instead")
        skip = ItemSkip(item_id=a.item_id, annotator_id=annotator.id, kind=kind, reason=reason)
        s.add(skip)
        s.delete(a)
        s.flush()
    return skip


def _own(s: Session, annotator: Annotator, assignment_id: int | Assignment, *, lock: bool = False) -> Assignment:
    """The annotator's assignment: 404 if it does not exist, 403 if it is someone else's
    (without saying anything about it)."""
    aid = assignment_id.id if isinstance(assignment_id, Assignment) else as_id(assignment_id, "assignment")
    query = select(Assignment).where(Assignment.id == aid).execution_options(populate_existing=True)
    assignment = s.scalar(query.with_for_update() if lock else query)
    if assignment is None:
        raise not_found(f"assignment {aid}")
    if assignment.annotator_id != annotator.id:
        raise forbidden(f"assignment {aid} is not yours")
    return assignment


def assignment_view(s: Session, annotator: Annotator, assignment: int | Assignment) -> dict:
    """What the annotator may see of their own assignment (never gold status or policies):

    ``assignment_id, item_id, project, kind, status, prompt, prompt_meta, responses`` (each
    ``{id, text, position}`` in display order), ``scale``, ``instructions``, ``judgement``
    (None while open; rating ``{"scores": {id: score}}``, pair ``{"winner": "a"|"b"|"tie",
    "winner_id", "side": "left"|"right"|"tie", "strength"}``, ranking ``{"order": [ids]}``),
    ``comment`` (the annotator's note, "" if none), ``assigned_at``, ``done_at`` (ISO 8601 text).
    404/403 as for a submission."""
    return _view(s, _own(s, resolve_annotator(s, annotator), assignment))


def _view(s: Session, a: Assignment) -> dict:
    item, project = a.item, a.item.project
    texts = dict(s.execute(select(Response.id, Response.text).where(Response.id.in_(a.shown))).all())
    return {"assignment_id": a.id, "item_id": item.id, "project": project.name, "kind": item.kind,
            "status": a.status, "prompt": item.prompt.text, "prompt_meta": item.prompt.meta or {},
            "responses": [{"id": rid, "text": texts[rid], "position": i} for i, rid in enumerate(a.shown)],
            "scale": [project.scale_min, project.scale_max], "instructions": project.instructions,
            "judgement": judgement_of(a), "comment": a.comment or "", "assigned_at": a.assigned_at.isoformat(),
            "done_at": a.done_at.isoformat() if a.done_at else None}


def judgement_of(a: Assignment) -> dict | None:
    if a.status != "done":
        return None
    kind = a.item.kind
    if kind == "rating":
        return {"scores": {r.response_id: r.score for r in a.ratings}}
    if kind == "ranking":
        return {"order": list(a.ranking.order)}
    c = a.comparison
    winner_id = None if c.winner == "tie" else a.item.response_ids[0 if c.winner == "a" else 1]
    side = "tie" if winner_id is None else ("left" if winner_id == a.shown[0] else "right")
    return {"winner": c.winner, "winner_id": winner_id, "side": side, "strength": c.strength}

# ---------------------------------------------------------------------------------------- judgements

def _start(s: Session, annotator: Annotator, assignment_id, kind: str, resubmit: bool) -> Assignment:
    annotator = resolve_annotator(s, annotator)
    a = _own(s, annotator, assignment_id, lock=True)
    check_access(s, a.item.project, annotator)
    if a.item.kind != kind:
        raise FeedbackError(f"assignment {a.id} is a {a.item.kind} item; a {kind} judgement does not fit it", 400)
    if a.status == "done" and not resubmit:
        raise conflict(f"assignment {a.id} was already submitted; edit it from your judgements instead")
    if a.status == "open":
        _check_not_expired(s, a)
    return a


def _check_not_expired(s: Session, a: Assignment) -> None:
    """A late answer to an expired assignment is taken while its item still needs it; else 409 saying so."""
    project, now = a.item.project, utcnow()
    if a.assigned_at >= _cutoff(project, now):
        return
    # Serialise with next_assignment (PostgreSQL), so the item is not handed out while we count.
    s.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    if not _has_room(s, a, project, now):
        raise conflict(f"assignment {a.id} expired: it was not submitted within {project.timeout_minutes} minutes "
                       f"and its item has since gone to other annotators, so this answer was not saved. "
                       f"Open the queue for your next item")


def _finish(a: Assignment, comment: str | None = None) -> Assignment:
    """Mark done; ``comment``: None keeps the stored one, text (empty clears it) replaces it."""
    if comment is not None:
        comment = check_text(comment, "comment").strip()
        if len(comment) > MAX_COMMENT:
            raise invalid(f"the comment is {len(comment)} characters; keep it under {MAX_COMMENT}")
        a.comment = comment or None
    if a.status != "done":
        a.status, a.done_at = "done", utcnow()
    return a


def submit_rating(s: Session, annotator: Annotator, assignment_id: int, scores: Mapping[int, int], *,
                  resubmit: bool = False, comment: str | None = None) -> Assignment:
    """Score every response of a rating assignment: ``{response_id: score}``, integers on the
    project's scale (422 otherwise). 409 if already submitted unless ``resubmit``."""
    with atomic(s):
        a = _start(s, annotator, assignment_id, "rating", resubmit)
        clean = check_scores(scores, a.item.response_ids, a.item.project)
        existing = {r.response_id: r for r in a.ratings}
        for rid, score in clean.items():
            if rid in existing:
                existing[rid].score = score
            else:
                a.ratings.append(Rating(response_id=rid, score=score))
        _finish(a, comment)
    return a


def submit_comparison(s: Session, annotator: Annotator, assignment_id: int, winner: str | int,
                      strength: int | None = None, *, resubmit: bool = False,
                      comment: str | None = None) -> Assignment:
    """Judge a pair: ``winner`` is ``"left"``/``"right"`` (as displayed), ``"a"``/``"b"`` (canonical:
    ``a`` is the smaller response id), ``"tie"``, or the winning response id. It is stored
    canonically, with the response shown on the left. ``strength`` 1 slightly, 2 clearly,
    3 much better (ignored for a tie)."""
    with atomic(s):
        a = _start(s, annotator, assignment_id, "pair", resubmit)
        ids = a.item.response_ids
        if isinstance(winner, str) and winner.strip().lower() in _SIDES:
            winner_id = a.shown[_SIDES[winner.strip().lower()]]
            canonical = "a" if winner_id == ids[0] else "b"
        elif isinstance(winner, str) and winner.strip().lower() in ("a", "b", "tie"):
            canonical = winner.strip().lower()
        elif not isinstance(winner, str) and as_int(winner, "winner") in ids:
            canonical = "a" if int(winner) == ids[0] else "b"
        else:
            raise invalid(f"winner must be 'left', 'right', 'a', 'b', 'tie' or one of the ids {ids}; got {winner!r}")
        if canonical == "tie" or strength is None or strength == "":
            strength = None
        else:
            strength = as_int(strength, "strength")
            if strength not in (1, 2, 3):
                raise invalid(f"strength must be 1 (slightly), 2 (clearly) or 3 (much better), got {strength}")
        if a.comparison is None:
            a.comparison = Comparison(winner=canonical, strength=strength, left_response_id=a.shown[0])
        else:
            a.comparison.winner, a.comparison.strength = canonical, strength
        _finish(a, comment)
    return a


def submit_ranking(s: Session, annotator: Annotator, assignment_id: int, order: Sequence[int], *,
                   resubmit: bool = False, comment: str | None = None) -> Assignment:
    """Rank a ranking assignment: ``order`` lists every response id once, best first (422 otherwise)."""
    with atomic(s):
        a = _start(s, annotator, assignment_id, "ranking", resubmit)
        clean = check_permutation(order, a.item.response_ids)
        if a.ranking is None:
            a.ranking = RankingJudgement(order=clean)
        else:
            a.ranking.order = clean
        _finish(a, comment)
    return a


def submit_judgement(s: Session, annotator: Annotator, assignment_id: int, payload: Mapping[str, Any], *,
                     resubmit: bool = False) -> Assignment:
    """One entry point for JSON clients: ``{"scores": {...}}``, ``{"winner": ..., "strength": ...}``
    or ``{"order": [...]}``, routed to ``submit_rating`` / ``submit_comparison`` / ``submit_ranking``."""
    if not isinstance(payload, Mapping):
        raise invalid("a judgement must be a JSON object with 'scores', 'winner' or 'order'")
    comment = payload.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise invalid(f"'comment' must be text, got {type(comment).__name__}")
    if "scores" in payload:
        return submit_rating(s, annotator, assignment_id, payload["scores"], resubmit=resubmit, comment=comment)
    if "winner" in payload:
        return submit_comparison(s, annotator, assignment_id, payload["winner"], payload.get("strength"),
                                 resubmit=resubmit, comment=comment)
    if "order" in payload:
        return submit_ranking(s, annotator, assignment_id, payload["order"], resubmit=resubmit, comment=comment)
    raise invalid(f"a judgement needs 'scores' (rating), 'winner' (pair) or 'order' (ranking); got keys "
                  f"{sorted(payload)}")


def update_judgement(s: Session, annotator: Annotator, assignment_id: int, payload: Mapping[str, Any]) -> Assignment:
    """Change one's own judgement (the payload as for ``submit_judgement``); 403 for anyone else's."""
    return submit_judgement(s, annotator, assignment_id, payload, resubmit=True)


def my_judgements(s: Session, project: Project | str | int, annotator: Annotator) -> list[dict]:
    """The annotator's own submitted judgements in ``project``, newest first, as ``assignment_view`` dicts."""
    project = resolve_project(s, project)
    annotator = resolve_annotator(s, annotator)
    done = s.scalars(select(Assignment).join(Item).where(Item.project_id == project.id,
                                                         Assignment.annotator_id == annotator.id,
                                                         Assignment.status == "done")
                     .order_by(Assignment.done_at.desc(), Assignment.id.desc()))
    return [_view(s, a) for a in done]
