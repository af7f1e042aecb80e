"""Small read-only queries the pages need beyond ``service``: counts and list rows for display.

Writes never happen here (they all go through ``service``, which validates and commits). Every query that serves an
annotator filters by ``Assignment.annotator_id`` so nobody sees another person's work, and none
of them selects ``Item.is_gold`` or ``Item.gold_answer``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..store import Annotator, Assignment, Item, Project, Prompt


def done_count(s: Session, project: Project, user: Annotator) -> int:
    """How many of this annotator's assignments in the project are submitted."""
    return s.scalar(select(func.count(Assignment.id)).join(Item, Assignment.item_id == Item.id)
                    .where(Item.project_id == project.id, Assignment.annotator_id == user.id,
                           Assignment.status == "done")) or 0


def projects_for(s: Session, user: Annotator) -> list[dict[str, Any]]:
    """The projects this annotator may judge (``team.visible_projects``) with their own "x of N"."""
    from ..judging import queue_position
    from ..team import visible_projects

    return [{"id": p.id, "name": p.name, **queue_position(s, p, user)} for p in visible_projects(s, user)]


def project_rows(s: Session) -> list[dict[str, Any]]:
    """Admin list: every project with its item count (archived ones flagged)."""
    counts = dict(s.execute(select(Item.project_id, func.count(Item.id)).group_by(Item.project_id)).all())
    prompts = dict(s.execute(select(Prompt.project_id, func.count(Prompt.id)).group_by(Prompt.project_id)).all())
    return [{"id": p.id, "name": p.name, "n_items": counts.get(p.id, 0), "n_prompts": prompts.get(p.id, 0),
             "scale": f"{p.scale_min}–{p.scale_max}", "per_item": p.per_item, "archived": p.archived,
             "members_only": p.members_only}
            for p in s.scalars(select(Project).order_by(Project.created_at.desc(), Project.id.desc()))]
