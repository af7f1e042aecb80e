"""Annotator pages: sign in/out, project list, the judging queue, "my judgements" with edit.

Every page works as plain HTML forms (POST, then a 303 redirect back to the queue). With htmx
the judging form posts in the background and the answer is the next item's fragment, swapped
into ``#work``; errors (422 bad value, 409 already submitted) come back as the same form with
the message, at that status.
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from .. import service
from ..base import check_access
from ..errors import FeedbackError
from ..store import Annotator, Project
from . import auth, queries
from .views import answer_text, form_values, job_from_view, parse_pair, parse_rating, parse_ranking, saved_values
from .web import (RowId, csrf_guard, db, is_htmx, optional_user, page_user, path_for, render, safe_next, see_other,
                  shown)

router = APIRouter(dependencies=[Depends(csrf_guard)])


@router.get("/", name="home")
def home(request: Request, user: Optional[Annotator] = Depends(optional_user)) -> Response:
    return see_other(request, "projects" if user else "signin")


@router.get("/signin", name="signin")
def signin_form(request: Request, next: str = "", user: Optional[Annotator] = Depends(optional_user)) -> Response:
    return render(request, "signin.html", {"next": safe_next(next, "")})


@router.post("/signin")
def signin(request: Request, token: str = Form(""), next: str = Form(""), s: Session = Depends(db)) -> Response:
    user = service.authenticate(s, token.strip()) if token.strip() else None
    if user is None:
        request.state.user = None
        error = ("That token is not valid (or the account is inactive). Check for missing characters, "
                 "or ask your admin for a new one.")
        return render(request, "signin.html", {"next": safe_next(next, ""), "error": error}, status=401)
    auth.sign_in(request, user.id, user.token_hash)
    default = path_for(request, "admin_index" if user.is_admin else "projects")
    return Response(status_code=303, headers={"location": safe_next(next, default)})


@router.post("/signout", name="signout")
def signout(request: Request) -> Response:
    auth.sign_out(request)
    return see_other(request, "signin")


@router.get("/projects", name="projects")
def projects(request: Request, user: Annotator = Depends(page_user), s: Session = Depends(db)) -> Response:
    return render(request, "projects.html", {"projects": queries.projects_for(s, user)})


def _project(s: Session, project: int, user: Annotator | None = None) -> Project:
    """The project; with ``user``, 403/409 unless they may judge it (members only, archived)."""
    found = service.get_project(s, project)
    if user is not None:
        check_access(s, found, user)
    return found


def _queue_context(request: Request, s: Session, project: Project, user: Annotator, notice: str = "") -> dict:
    assignment = service.next_assignment(s, project, user)
    job = None
    if assignment is not None:
        url = path_for(request, "submit", project=project.id, assignment=assignment.id)
        skip = path_for(request, "skip", project=project.id, assignment=assignment.id)
        job = job_from_view(service.assignment_view(s, user, assignment), submit_url=url, skip_url=skip)
    return {"project": project, "job": job, "done": queries.done_count(s, project, user),
            "position": service.queue_position(s, project, user), "notice": notice}


@router.get("/p/{project}", name="queue")
def queue(request: Request, project: RowId, user: Annotator = Depends(page_user), s: Session = Depends(db)) -> Response:
    proj = _project(s, project, user)
    ctx = _queue_context(request, s, proj, user)
    return render(request, "_work.html" if is_htmx(request) else "queue.html", ctx)


def _own_view(s: Session, project: Project, user: Annotator, assignment_id: int) -> dict:
    """The annotator's own assignment (404 / 403 from the service otherwise), checked to be in this project."""
    view = service.assignment_view(s, user, assignment_id)
    if view["project"] != project.name:
        raise FeedbackError(f"assignment {assignment_id} is not part of project {project.name!r}", 404)
    return view


def _save(s: Session, user: Annotator, view: dict, form, resubmit: bool) -> None:
    kind, aid = view["kind"], view["assignment_id"]
    comment = form.get("comment")
    comment = comment if isinstance(comment, str) else None
    if kind == "rating":
        service.submit_rating(s, user, aid, parse_rating(form), resubmit=resubmit, comment=comment)
    elif kind == "pair":
        winner, strength = parse_pair(form)
        service.submit_comparison(s, user, aid, winner, strength, resubmit=resubmit, comment=comment)
    else:
        service.submit_ranking(s, user, aid, parse_ranking(form), resubmit=resubmit, comment=comment)


@router.post("/p/{project}/a/{assignment}", name="submit")
async def submit(request: Request, project: RowId, assignment: RowId, user: Annotator = Depends(page_user),
                 s: Session = Depends(db)) -> Response:
    form = await request.form()  # async only to read the form; the database work runs in a thread
    return await run_in_threadpool(_submit_sync, request, s, user, project, assignment, form)


def _submit_sync(request: Request, s: Session, user: Annotator, project: int, assignment: int, form) -> Response:
    proj = _project(s, project)
    view = _own_view(s, proj, user, assignment)
    resubmit = form.get("resubmit") == "1"
    try:
        _save(s, user, view, form, resubmit)
    except FeedbackError as err:
        if err.status not in (400, 409, 422):
            raise
        # Show the same form again with the message and what was entered.
        url = path_for(request, "submit", project=proj.id, assignment=assignment)
        skip = "" if resubmit else path_for(request, "skip", project=proj.id, assignment=assignment)
        comment = form.get("comment")
        job = job_from_view(view, submit_url=url, values=form_values(view["kind"], form), error=err.message,
                            resubmit=resubmit, htmx=not resubmit, skip_url=skip,
                            comment=comment if isinstance(comment, str) else "")
        ctx = {"project": proj, "job": job, "done": queries.done_count(s, proj, user),
               "position": service.queue_position(s, proj, user)}
        if resubmit:
            return render(request, "edit.html", ctx, status=err.status)
        return render(request, "_work.html" if is_htmx(request) else "queue.html", ctx, status=err.status)
    if resubmit:
        return see_other(request, "mine", project=proj.id)
    if is_htmx(request):
        return render(request, "_work.html", _queue_context(request, s, proj, user))
    return see_other(request, "queue", project=proj.id)


@router.post("/p/{project}/a/{assignment}/skip", name="skip")
async def skip(request: Request, project: RowId, assignment: RowId, user: Annotator = Depends(page_user),
               s: Session = Depends(db)) -> Response:
    form = await request.form()
    return await run_in_threadpool(_skip_sync, request, s, user, project, assignment, form)


def _skip_sync(request: Request, s: Session, user: Annotator, project: int, assignment: int, form) -> Response:
    """Skip (``kind=skip``) or discard with a reason (``kind=discard``); the answer is the next item."""
    proj = _project(s, project, user)
    view = _own_view(s, proj, user, assignment)
    kind = form.get("kind") if form.get("kind") in ("skip", "discard") else "skip"
    reason = form.get("reason") if isinstance(form.get("reason"), str) else ""
    try:
        service.skip_assignment(s, user, view["assignment_id"], kind, reason if kind == "discard" else "")
    except FeedbackError as err:
        if err.status not in (400, 409, 422):
            raise
        ctx = _queue_context(request, s, proj, user)  # the same item again, with the message
        if ctx["job"] is not None:
            ctx["job"].error = err.message
        return render(request, "_work.html" if is_htmx(request) else "queue.html", ctx, status=err.status)
    notice = "Skipped: it goes to someone else." if kind == "skip" else "Discarded: the admins will see your reason."
    if is_htmx(request):
        return render(request, "_work.html", _queue_context(request, s, proj, user, notice=notice))
    return see_other(request, "queue", project=proj.id)


@router.get("/p/{project}/a/{assignment}", name="edit")
def edit(request: Request, project: RowId, assignment: RowId, user: Annotator = Depends(page_user),
         s: Session = Depends(db)) -> Response:
    """One own assignment as a form: pre-filled and posting as a change when it was submitted."""
    proj = _project(s, project)
    view = _own_view(s, proj, user, assignment)
    url = path_for(request, "submit", project=proj.id, assignment=assignment)
    job = job_from_view(view, submit_url=url, values=saved_values(view), resubmit=view["status"] == "done",
                        htmx=False)
    return render(request, "edit.html", {"project": proj, "job": job})


@router.get("/p/{project}/mine", name="mine")
def mine(request: Request, project: RowId, user: Annotator = Depends(page_user), s: Session = Depends(db)) -> Response:
    """The annotator's own judgements with the texts they judged, in the order they were shown."""
    proj = _project(s, project, user)
    rows = [{"assignment_id": v["assignment_id"], "kind": v["kind"], "prompt": v["prompt"],
             "prompt_meta": v["prompt_meta"], "responses": v["responses"], "answer": answer_text(v),
             "comment": v["comment"], "done_at": (v["done_at"] or "")[:16].replace("T", " ")}
            for v in service.my_judgements(s, proj, user)]
    return render(request, "mine.html", {"project": proj, "rows": rows})


# ---------------------------------------------------------------------------------------------- invite links

@router.get("/join/{code}", name="join")
def join_form(request: Request, code: str, user: Optional[Annotator] = Depends(optional_user),
              s: Session = Depends(db)) -> Response:
    invite = service.find_invite(s, code)
    return render(request, "join.html", {"project": invite.project, "code": code})


@router.post("/join/{code}")
def join(request: Request, code: str, name: str = Form(""), user: Optional[Annotator] = Depends(optional_user),
         s: Session = Depends(db)) -> Response:
    """A signed-in annotator joins; a newcomer gets an account (token shown once, on this page) and is signed in."""
    try:
        person, token, project = service.redeem_invite(s, code, annotator=user, name=None if user else name)
    except FeedbackError as err:
        if err.status not in (409, 422):
            raise
        invite = service.find_invite(s, code)
        return render(request, "join.html", {"project": invite.project, "code": code, "error": err.message},
                      status=err.status)
    if token is None:
        return see_other(request, "queue", project=project.id)
    auth.sign_in(request, person.id, person.token_hash)
    request.state.user = shown(person)
    return render(request, "joined.html", {"project": project, "token": token, "person": person})
