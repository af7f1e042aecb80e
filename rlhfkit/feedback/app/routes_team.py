"""Admin pages for running a project as a team: settings (edit, archive), members and invite links.

Included by ``routes_admin`` (under ``/admin``, admins only, CSRF-guarded). An invite link's code is
shown once, in the answer to the POST that made it (like a token); afterwards only its state is.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from .. import service
from ..errors import FeedbackError
from ..store import Project
from .routes_review import parse_optional_int
from .web import RowId, db, path_for, render, see_other

router = APIRouter()


def _team_page(request: Request, s: Session, project: Project, status: int = 200, **extra) -> Response:
    members = service.members(s, project)
    member_ids = {m.id for m in members}
    others = [a for a in service.list_annotators(s) if a.id not in member_ids and a.active]
    invites = [{"invite": i, "state": service.invite_state(i)} for i in service.list_invites(s, project)]
    ctx = {"project": project, "members": members, "others": others, "invites": invites, **extra}
    return render(request, "admin/team.html", ctx, status=status)


@router.get("/projects/{project}/team", name="admin_team")
def team(request: Request, project: RowId, s: Session = Depends(db)) -> Response:
    return _team_page(request, s, service.get_project(s, project))


@router.post("/projects/{project}/settings", name="admin_settings")
def settings(request: Request, project: RowId, name: str = Form(...), per_item: int = Form(...),
             gold_rate: float = Form(...), timeout_minutes: int = Form(...), instructions: str = Form(""),
             members_only: str = Form(""), s: Session = Depends(db)) -> Response:
    proj = service.get_project(s, project)
    try:
        service.update_project(s, proj, name=name, per_item=per_item, gold_rate=gold_rate,
                               timeout_minutes=timeout_minutes, instructions=instructions.strip(),
                               members_only=members_only == "1")
    except FeedbackError as err:
        s.rollback()
        return _team_page(request, s, service.get_project(s, project), status=err.status, error=err.message)
    return _team_page(request, s, proj, notice="Settings saved.")


@router.post("/projects/{project}/archive", name="admin_archive")
def archive(request: Request, project: RowId, archived: str = Form(...), s: Session = Depends(db)) -> Response:
    """Archive (annotators no longer see it; open items are released) or restore."""
    proj = service.set_archived(s, service.get_project(s, project), archived == "1")
    return _team_page(request, s, proj, notice="Archived: annotators no longer see this project." if proj.archived
                      else "Restored: annotators see this project again.")


@router.post("/projects/{project}/members", name="admin_add_member")
def add_member(request: Request, project: RowId, annotator: str = Form(...), s: Session = Depends(db)) -> Response:
    proj = service.get_project(s, project)
    person = service.get_annotator(s, int(annotator) if annotator.strip().isdigit() else annotator)
    service.add_member(s, proj, person)
    return see_other(request, "admin_team", project=proj.id)


@router.post("/projects/{project}/members/{annotator}/remove", name="admin_remove_member")
def remove_member(request: Request, project: RowId, annotator: RowId, s: Session = Depends(db)) -> Response:
    proj = service.get_project(s, project)
    service.remove_member(s, proj, annotator)
    return see_other(request, "admin_team", project=proj.id)


@router.post("/projects/{project}/invites", name="admin_create_invite")
def create_invite(request: Request, project: RowId, note: str = Form(""), max_uses: str = Form(""),
                  days: str = Form("14"), s: Session = Depends(db)) -> Response:
    """Answer with the page itself: the link's code exists only in this response."""
    proj = service.get_project(s, project)
    try:
        invite, code = service.create_invite(s, proj, note=note, max_uses=parse_optional_int(max_uses, "max uses"),
                                             days=parse_optional_int(days, "days"))
    except FeedbackError as err:
        return _team_page(request, s, proj, status=err.status, error=err.message)
    link = str(request.base_url).rstrip("/") + path_for(request, "join", code=code).removeprefix(
        request.scope.get("root_path", ""))
    return _team_page(request, s, proj, new_link=link, new_invite=invite)


@router.post("/projects/{project}/invites/{invite}/revoke", name="admin_revoke_invite")
def revoke_invite(request: Request, project: RowId, invite: RowId, s: Session = Depends(db)) -> Response:
    proj = service.get_project(s, project)
    service.revoke_invite(s, proj, invite)
    return see_other(request, "admin_team", project=proj.id)
