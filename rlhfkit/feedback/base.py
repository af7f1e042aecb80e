"""Shared rules of the feedback service: the transaction block, argument checks, lookups.

Split out of ``service.py`` so that ``judging``, ``readout`` and ``ingest`` can use them
without importing each other; ``service`` re-exports the public names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import WRITE_OPTION
from .errors import FeedbackError, conflict, forbidden, invalid, not_found
from .store import Annotator, Project, ProjectMember

_ATOMIC = "rlhfkit_atomic"
# Ids are 64-bit on every backend (SQLite's rowid; BIGINT on PostgreSQL since migration 0002): anything outside
# 1..MAX_ID cannot name a row, and passing it to the driver would fail with an overflow instead of a 404.
MAX_ID = 2 ** 63 - 1


# ---------------------------------------------------------------------------------------- transactions

@contextmanager
def atomic(s: Session) -> Iterator[Session]:
    """One write transaction: commit on success, roll back on any error; nests (inner blocks join).

    A unique-constraint violation (two requests racing to submit the same judgement or
    create the same name) becomes ``FeedbackError`` 409.
    """
    if s.info.get(_ATOMIC):
        yield s
        return
    if s.in_transaction():
        s.commit()
    s.connection(execution_options={WRITE_OPTION: True})  # SQLite: BEGIN IMMEDIATE (see db.py)
    s.info[_ATOMIC] = True
    try:
        yield s
        s.commit()
    except IntegrityError as err:
        s.rollback()
        raise conflict(f"conflicting write, nothing was saved (already exists or already submitted): "
                       f"{str(err.orig).splitlines()[0]}") from err
    except BaseException:
        s.rollback()
        raise
    finally:
        s.info.pop(_ATOMIC, None)


# ---------------------------------------------------------------------------------------- small checks

def as_int(value: Any, what: str) -> int:
    """``value`` as an int (ints and decimal strings, as forms send them); else 422 naming ``what``."""
    if isinstance(value, bool):
        raise invalid(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,19}\s*", value):
        return int(value)
    raise invalid(f"{what} must be an integer, got {value!r}")


def as_id(value: Any, what: str) -> int:
    """``value`` as a row id: an integer in 1..MAX_ID, else 404 (no row can have it) or 422 (not an integer)."""
    number = as_int(value, what)
    if not 1 <= number <= MAX_ID:
        raise not_found(f"{what} {number}")
    return number


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None: a NUL (PostgreSQL refuses it) or an unpaired surrogate such as
    the JSON escape ``"\\ud800"`` (not Unicode text: no UTF-8 encoding exists, so no driver can send it)."""
    if "\x00" in text:
        return f"contains a NUL character (\\x00) at position {text.index(chr(0))}; remove it"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"contains an unpaired surrogate (\\u{ord(text[err.start]):04x}) at position {err.start}, which is "
                f"not Unicode text; remove it")
    return None


def check_text(value: Any, what: str) -> str:
    """``value`` if it is text that can be stored (see ``unstorable``), else 422 naming ``what``."""
    if not isinstance(value, str):
        raise invalid(f"{what} must be text, got {type(value).__name__}")
    reason = unstorable(value)
    if reason:
        raise invalid(f"{what} {reason}")
    return value


def clean_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{what} must be a non-empty text")
    value = value.strip()
    if len(value) > 200 or any(ord(c) < 32 for c in value) or unstorable(value):
        raise invalid(f"{what} must be at most 200 printable characters, got {value[:40]!r}")
    return value


def resolve_project(s: Session, project: Project | str | int) -> Project:
    if isinstance(project, Project):
        return project if project in s else get_project(s, project.id)
    return get_project(s, project)


def resolve_annotator(s: Session, annotator: Annotator | int) -> Annotator:
    """The annotator as this session sees it now (a deactivation since sign-in counts)."""
    found = s.get(Annotator, annotator.id if isinstance(annotator, Annotator) else as_id(annotator, "annotator"))
    if found is None:
        raise FeedbackError("unknown annotator", 401)
    if not found.active:
        raise forbidden(f"annotator {found.name!r} is deactivated; ask an admin")
    return found


def is_member(s: Session, project: Project, annotator: Annotator) -> bool:
    return s.scalar(select(ProjectMember.id).where(ProjectMember.project_id == project.id,
                                                   ProjectMember.annotator_id == annotator.id)) is not None


def may_judge(s: Session, project: Project, annotator: Annotator) -> bool:
    """Whether ``annotator`` may see and judge ``project``: not archived, and open to all, or they are an admin
    or a member."""
    if project.archived:
        return False
    return not project.members_only or annotator.is_admin or is_member(s, project, annotator)


def check_access(s: Session, project: Project, annotator: Annotator) -> None:
    """409 for an archived project, 403 for a members-only project the annotator is not a member of."""
    if project.archived:
        raise conflict(f"project {project.name!r} is archived: it takes no judgements until an admin restores it")
    if not may_judge(s, project, annotator):
        raise forbidden(f"project {project.name!r} is for its members only; ask an admin for an invite link")


def require_admin(annotator: Annotator | None) -> Annotator:
    """``annotator`` if it is an active admin, else ``FeedbackError`` 401/403 (for admin-only routes)."""
    if annotator is None:
        raise FeedbackError("sign in first (no or unknown token)", 401)
    if not annotator.is_admin or not annotator.active:
        raise forbidden("admins only")
    return annotator


def get_project(s: Session, name_or_id: str | int) -> Project:
    """The project with this name (or id); 404 if none."""
    project = None
    if isinstance(name_or_id, str) and not unstorable(name_or_id) and len(name_or_id) <= 400:
        project = s.scalar(select(Project).where(Project.name == name_or_id.strip()))
    if project is None and (isinstance(name_or_id, int) or re.fullmatch(r"\s*[0-9]{1,19}\s*", str(name_or_id))):
        number = int(name_or_id)
        project = s.get(Project, number) if 1 <= number <= MAX_ID else None
    if project is None:
        raise not_found(f"project {name_or_id!r}")
    return project


def check_scores(scores: Any, ids: list[int], project: Project, what: str = "scores") -> dict[int, int]:
    if not isinstance(scores, Mapping):
        raise invalid(f"{what} must map response id -> score, got {type(scores).__name__}")
    clean: dict[int, int] = {}
    for key, value in scores.items():
        rid = as_int(key, f"{what}: response id")
        if rid not in ids:
            raise invalid(f"{what}: response {rid} is not part of this item (its responses: {ids})")
        if rid in clean:
            raise invalid(f"{what}: response {rid} is scored twice")
        score = as_int(value, f"{what}: the score of response {rid}")
        if not project.scale_min <= score <= project.scale_max:
            raise invalid(f"{what}: the score of response {rid} is {score}, outside the project's scale "
                          f"{project.scale_min}..{project.scale_max}")
        clean[rid] = score
    missing = [rid for rid in ids if rid not in clean]
    if missing:
        raise invalid(f"{what}: every response needs a score; missing {missing}")
    return clean


def check_permutation(order: Any, ids: list[int], what: str = "order") -> list[int]:
    if isinstance(order, (str, bytes)) or not isinstance(order, Sequence):
        raise invalid(f"{what} must be a list of response ids, best first; got {order!r}")
    clean = [as_int(r, f"{what}: response id") for r in order]
    if sorted(clean) != sorted(ids):
        raise invalid(f"{what} must list each of the responses {ids} exactly once, best first; got {clean}")
    return clean
