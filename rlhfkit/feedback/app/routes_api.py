"""JSON API under ``/api`` for scripts and the human-reward PPO function.

Authenticate with ``Authorization: Bearer <token>`` (no CSRF token needed) or, from a signed-in
browser, the session cookie plus the ``X-CSRF-Token`` header on POST. Errors are
``{"detail": "..."}`` with the status ``FeedbackError`` carries (401, 403, 404, 409, 422).

    GET  /api/me                          who the token belongs to
    GET  /api/projects/{p}/next           the next item to judge ({"assignment": null} when none)
    POST /api/assignments/{id}            submit (or, with "resubmit": true, change) a judgement
    POST /api/assignments/{id}/skip       skip, or discard with a reason, an open assignment
    GET  /api/projects/{p}/progress       admin: counts per project and annotator
    POST /api/projects/{p}/items          admin: add a prompt, its responses and items
    GET  /api/items/{id}/judgements       admin: every judgement of one item

``{p}`` is a project id or name.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from .. import service
from ..errors import FeedbackError
from ..store import Annotator
from . import queries
from .views import job_from_view
from .web import ProjectRef, RowId, api_admin, api_user, db

router = APIRouter(prefix="/api")


@router.get("/me")
def me(user: Annotator = Depends(api_user)) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "is_admin": user.is_admin}


@router.get("/projects/{project}/next")
def next_item(project: ProjectRef, user: Annotator = Depends(api_user), s: Session = Depends(db)) -> dict[str, Any]:
    """The annotator's next assignment (the same one until it is submitted), or ``null``."""
    proj = service.get_project(s, project)
    assignment = service.next_assignment(s, proj, user)
    done = queries.done_count(s, proj, user)
    position = service.queue_position(s, proj, user)  # {"done", "total"}: "item x of N"
    if assignment is None:
        return {"assignment": None, "done": done, "position": position}
    return {"assignment": job_from_view(service.assignment_view(s, user, assignment)).as_json(), "done": done,
            "position": position}


class SkipIn(BaseModel):
    kind: Literal["skip", "discard"] = "skip"
    reason: str = Field("", max_length=2000)


@router.post("/assignments/{assignment_id}/skip")
def skip(assignment_id: RowId, body: SkipIn, user: Annotator = Depends(api_user),
         s: Session = Depends(db)) -> dict[str, Any]:
    """Give an open assignment back: ``{"kind": "skip"}`` or ``{"kind": "discard", "reason": "..."}`` (a reason is
    required to discard). The item is not served to this annotator again. 409 if already submitted."""
    done = service.skip_assignment(s, user, assignment_id, body.kind, body.reason)
    return {"item_id": done.item_id, "kind": done.kind}


@router.post("/assignments/{assignment_id}")
def submit(assignment_id: RowId, body: dict[str, Any], user: Annotator = Depends(api_user),
           s: Session = Depends(db)) -> dict[str, Any]:
    """Body by kind: ``{"scores": {"<id>": n, ...}}``, ``{"winner": "left"|"right"|"a"|"b"|"tie",
    "strength": 1..3}`` or ``{"order": [ids best first]}``; add ``"resubmit": true`` to change an
    own submitted judgement. The service checks ownership (404/403), kind (400), values (422)
    and double submission (409)."""
    resubmit = body.pop("resubmit", False)
    if not isinstance(resubmit, bool):
        raise FeedbackError(f'"resubmit" must be true or false, got {resubmit!r}', 422)
    a = service.submit_judgement(s, user, assignment_id, body, resubmit=resubmit)
    return {"assignment_id": a.id, "status": a.status, "kind": a.item.kind}


@router.get("/projects/{project}/progress")
def progress(project: ProjectRef, user: Annotator = Depends(api_admin), s: Session = Depends(db)) -> dict[str, Any]:
    return service.progress(s, service.get_project(s, project))


class ItemsIn(BaseModel):
    """A prompt (text or chat messages) with its responses; items of each asked kind are made
    from them exactly as a file import would (rating: one item scoring all responses; pair:
    every pair; ranking: one item of all)."""
    prompt: str | list[dict[str, str]]
    responses: list[str] = Field(min_length=1)
    policy: str = ""
    kinds: list[Literal["rating", "pair", "ranking"]] = Field(default_factory=lambda: ["pair"], min_length=1)
    priority: float = Field(0.0, allow_inf_nan=False, ge=-1e12, le=1e12)


@router.post("/projects/{project}/items", status_code=201)
def add_items(project: ProjectRef, body: ItemsIn, user: Annotator = Depends(api_admin),
              s: Session = Depends(db)) -> dict[str, Any]:
    """Returns ``{"item_ids", "response_ids", "items_existing"}`` (ids of items this call created;
    sending the same responses again creates nothing)."""
    proj = service.get_project(s, project)
    row = {"prompt": body.prompt, "responses": body.responses, "policy": body.policy}
    with service.atomic(s):  # import and priorities: one transaction
        summary = service.import_records(s, proj, [row], kinds=tuple(dict.fromkeys(body.kinds)), source="api")
        if body.priority and summary["item_ids"]:
            service.set_priorities(s, proj, {item_id: body.priority for item_id in summary["item_ids"]})
    return {"item_ids": summary["item_ids"], "response_ids": summary["response_ids"],
            "items_existing": summary["items_existing"]}


@router.get("/items/{item_id}/judgements")
def item_judgements(item_id: RowId, user: Annotator = Depends(api_admin), s: Session = Depends(db)) -> dict[str, Any]:
    """Everything about one item, gold answer and every annotator's judgement included (admins only)."""
    return service.item_judgements(s, item_id)
