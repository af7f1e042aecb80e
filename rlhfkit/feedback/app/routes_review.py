"""Admin review pages: the item browser with filters, one item in full, and the disagreement queue.

Included by ``routes_admin`` (so under ``/admin``, admins only, CSRF-guarded). Filters are query
parameters, so a filtered view is a link an admin can share; an empty value means "any".
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi import Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from .. import service
from ..errors import FeedbackError
from ..review import AGREEMENTS, STATUSES, annotator_names
from ..store import KINDS
from .web import RowId, db, path_for, render

router = APIRouter()
GOLD = {"": None, "yes": True, "no": False}
KIND_LABELS = {"rating": "rating", "pair": "comparison", "ranking": "ranking"}


def _filters(kind: str, status: str, agreement: str, annotator: str, gold: str) -> dict:
    """The chosen filters ('' = any), each checked against its allowed values (422 naming it)."""
    for value, allowed, what in ((kind, KINDS, "kind"), (status, STATUSES, "status"),
                                 (agreement, AGREEMENTS, "agreement"), (gold, tuple(GOLD)[1:], "gold")):
        if value and value not in allowed:
            raise FeedbackError(f"filter {what} must be one of {', '.join(allowed)} (or empty for any), "
                                f"got {value!r}", 422)
    return {"kind": kind, "status": status, "agreement": agreement, "annotator": annotator.strip(), "gold": gold}


def _browse(s: Session, project, chosen: dict, page: int, per_page: int) -> dict:
    return service.browse_items(s, project, kind=chosen["kind"] or None, status=chosen["status"] or None,
                                agreement=chosen["agreement"] or None, annotator=chosen["annotator"] or None,
                                gold=GOLD[chosen["gold"]], page=page, per_page=per_page)


def _pages(request: Request, route: str, project_id: int, chosen: dict, result: dict) -> dict:
    def link(page: int) -> str:
        query = {k: v for k, v in chosen.items() if v}
        query["page"] = page
        return path_for(request, route, project=project_id) + "?" + urlencode(query)

    return {"prev": link(result["page"] - 1) if result["page"] > 1 else None,
            "next": link(result["page"] + 1) if result["page"] < result["pages"] else None}


@router.get("/projects/{project}/items", name="admin_items")
def items(request: Request, project: RowId, kind: str = "", status: str = "", agreement: str = "",
          annotator: str = "", gold: str = "", page: int = 1, s: Session = Depends(db)) -> Response:
    """Every item with its kind, status, agreement and annotators; filters narrow the list."""
    proj = service.get_project(s, project)
    chosen = _filters(kind, status, agreement, annotator, gold)
    result = _browse(s, proj, chosen, max(page, 1), 50)
    return render(request, "admin/items.html", {
        "project": proj, "result": result, "chosen": chosen, "kinds": KIND_LABELS, "statuses": STATUSES,
        "agreements": AGREEMENTS, "annotators": annotator_names(s, proj), "pages": _pages(request, "admin_items",
                                                                                          proj.id, chosen, result)})


@router.get("/projects/{project}/items/{item}", name="admin_item")
def item(request: Request, project: RowId, item: RowId, s: Session = Depends(db)) -> Response:
    proj = service.get_project(s, project)
    return render(request, "admin/item.html", {"project": proj, "item": service.item_review(s, item, proj),
                                               "kinds": KIND_LABELS})


@router.get("/projects/{project}/disagreements", name="admin_disagreements")
def disagreements(request: Request, project: RowId, kind: str = "", annotator: str = "", page: int = 1,
                  s: Session = Depends(db)) -> Response:
    """The review queue: items whose annotators disagree, each with its texts and every judgement."""
    proj = service.get_project(s, project)
    chosen = _filters(kind, "", "disagree", annotator, "")
    result = _browse(s, proj, chosen, max(page, 1), 10)
    reviews = [service.item_review(s, row.item_id, proj) for row in result["rows"]]
    chosen_links = {k: v for k, v in chosen.items() if k in ("kind", "annotator")}
    return render(request, "admin/disagreements.html", {
        "project": proj, "result": result, "reviews": reviews, "chosen": chosen, "kinds": KIND_LABELS,
        "annotators": annotator_names(s, proj),
        "pages": _pages(request, "admin_disagreements", proj.id, chosen_links, result)})


def parse_optional_int(value: Optional[str], what: str) -> Optional[int]:
    """A form's optional whole number ('' = none), or 422 naming the field."""
    if value is None or not str(value).strip():
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise FeedbackError(f"{what} must be a whole number or empty, got {value!r}", 422) from None
