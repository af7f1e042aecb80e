"""Running a project as a team: who may judge it (membership, invite links), editing and archiving it.

Re-exported by ``service``; its transaction rules apply. Admin-only functions trust their caller,
which must check ``require_admin`` first (as for ``service.create_project``).

Membership. A project is open to every annotator unless ``members_only`` is set; then only its
members and admins see it, in the project list, the queue and the API (``base.check_access``).
Adding a member never removes anyone's work; removing one releases their open items.

Invite links. ``create_invite`` returns a random code once (only its sha256 is stored, as for
tokens); ``/join/<code>`` makes the visitor a member of the project, creating an annotator account
for a newcomer (their personal token is shown once on that page). A link can expire, have a use
limit, and be revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from .base import as_int, atomic, check_text, clean_name, is_member, may_judge, resolve_project
from .errors import FeedbackError, conflict, invalid, not_found
from .store import Annotator, Assignment, Invite, Item, Project, ProjectMember, utcnow

MAX_INVITE_DAYS = 365


# ---------------------------------------------------------------------------------------- membership

def visible_projects(s: Session, annotator: Annotator) -> list[Project]:
    """The projects ``annotator`` may judge (not archived; open to all, or they are a member or admin), by name."""
    return [p for p in s.scalars(select(Project).where(Project.archived.is_(False)).order_by(Project.name))
            if may_judge(s, p, annotator)]


def members(s: Session, project: Project | str | int) -> list[Annotator]:
    """The project's members, by name."""
    project = resolve_project(s, project)
    return list(s.scalars(select(Annotator).join(ProjectMember, ProjectMember.annotator_id == Annotator.id)
                          .where(ProjectMember.project_id == project.id).order_by(Annotator.name)))


def add_member(s: Session, project: Project | str | int, annotator: Annotator | int | str) -> bool:
    """Make ``annotator`` a member of ``project``; False if they already were."""
    from .service import get_annotator

    with atomic(s):
        project = resolve_project(s, project)
        person = get_annotator(s, annotator)
        if is_member(s, project, person):
            return False
        s.add(ProjectMember(project_id=project.id, annotator_id=person.id))
        s.flush()
    return True


def remove_member(s: Session, project: Project | str | int, annotator: Annotator | int | str) -> bool:
    """End a membership (False if there was none). Their open items in the project are released; their
    submitted judgements stay."""
    from .service import get_annotator

    with atomic(s):
        project = resolve_project(s, project)
        person = get_annotator(s, annotator)
        row = s.scalar(select(ProjectMember).where(ProjectMember.project_id == project.id,
                                                   ProjectMember.annotator_id == person.id))
        if row is None:
            return False
        s.delete(row)
        for a in s.scalars(select(Assignment).join(Item).where(Item.project_id == project.id,
                                                                Assignment.annotator_id == person.id,
                                                                Assignment.status == "open")):
            s.delete(a)
    return True


# ---------------------------------------------------------------------------------------- invites

def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def create_invite(s: Session, project: Project | str | int, *, note: str = "", max_uses: int | None = None,
                  days: int | None = 14) -> tuple[Invite, str]:
    """A new invite link to ``project``; returns it and its code (shown once: only the hash is kept).
    ``max_uses``: how many people may use it (None: any number); ``days``: how long it works (None: always)."""
    note = check_text(str(note or "").strip(), "note")[:200]
    if max_uses is not None:
        max_uses = as_int(max_uses, "max_uses")
        if not 1 <= max_uses <= 100_000:
            raise invalid(f"max_uses must be between 1 and 100000 (or empty for no limit), got {max_uses}")
    expires = None
    if days is not None:
        days = as_int(days, "days")
        if not 1 <= days <= MAX_INVITE_DAYS:
            raise invalid(f"an invite works for 1 to {MAX_INVITE_DAYS} days (or empty for no end), got {days}")
        expires = utcnow() + timedelta(days=days)
    with atomic(s):
        project = resolve_project(s, project)
        code = secrets.token_urlsafe(18)
        invite = Invite(project_id=project.id, code_hash=_code_hash(code), note=note, max_uses=max_uses, uses=0,
                        revoked=False, expires_at=expires)
        s.add(invite)
        s.flush()
    return invite, code


def list_invites(s: Session, project: Project | str | int) -> list[Invite]:
    project = resolve_project(s, project)
    return list(s.scalars(select(Invite).where(Invite.project_id == project.id).order_by(Invite.id.desc())))


def revoke_invite(s: Session, project: Project | str | int, invite_id: int) -> Invite:
    with atomic(s):
        project = resolve_project(s, project)
        invite = s.get(Invite, as_int(invite_id, "invite"))
        if invite is None or invite.project_id != project.id:
            raise not_found(f"invite {invite_id} of project {project.name!r}")
        invite.revoked = True
    return invite


def invite_state(invite: Invite, now: datetime | None = None) -> str:
    """``"active"``, ``"revoked"``, ``"expired"`` or ``"used up"``."""
    now = now or utcnow()
    if invite.revoked:
        return "revoked"
    if invite.expires_at is not None and invite.expires_at <= now:
        return "expired"
    if invite.max_uses is not None and invite.uses >= invite.max_uses:
        return "used up"
    return "active"


def find_invite(s: Session, code: str, *, usable: bool = True, lock: bool = False) -> Invite:
    """The invite with this code; 404 if unknown, and with ``usable`` 410 if revoked, expired or used up.
    ``lock``: hold its row until the transaction ends (PostgreSQL), so two people using the last use of a
    link at once cannot both get in."""
    if not isinstance(code, str) or not 8 <= len(code) <= 100:
        raise not_found("invite link")
    query = select(Invite).where(Invite.code_hash == _code_hash(code))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    invite = s.scalar(query)
    if invite is None:
        raise not_found("invite link (check that the whole link was copied)")
    state = invite_state(invite)
    if not usable:
        return invite
    if state != "active":
        raise FeedbackError(f"this invite link is {state}; ask the project's admin for a new one", 410)
    return invite


def redeem_invite(s: Session, code: str, *, annotator: Annotator | None = None,
                  name: str | None = None) -> tuple[Annotator, str | None, Project]:
    """Use an invite: the signed-in ``annotator`` joins its project, or a newcomer gets an account named
    ``name`` (409 if taken). Returns (annotator, their new token or None, project)."""
    from .service import add_annotator

    with atomic(s):
        invite = find_invite(s, code, usable=False, lock=True)
        project = invite.project
        if annotator is not None and is_member(s, project, annotator):
            return annotator, None, project  # following the link again changes nothing
        invite = find_invite(s, code)  # now also usable (the locked row, as this transaction sees it)
        if project.archived:
            raise conflict(f"project {project.name!r} is archived; it takes no new members")
        token = None
        if annotator is None:
            annotator, token = add_annotator(s, clean_name(name or "", "your name"))
        s.add(ProjectMember(project_id=project.id, annotator_id=annotator.id))
        invite.uses += 1
        s.flush()
    return annotator, token, project


# ---------------------------------------------------------------------------------------- editing

def set_archived(s: Session, project: Project | str | int, archived: bool) -> Project:
    """Archive (hide from annotators, serve nothing, keep every row) or restore a project."""
    with atomic(s):
        project = resolve_project(s, project)
        project.archived = bool(archived)
        if archived:  # open items would otherwise hold their place until they expire
            for a in s.scalars(select(Assignment).join(Item).where(Item.project_id == project.id,
                                                                    Assignment.status == "open")):
                s.delete(a)
    return project
