"""Every read and write of the feedback store: the web app and the CLI call these, nothing else.

    Session = db.connect("feedback.db")
    with Session() as s:
        project = create_project(s, "helpfulness", scale=(1, 3), per_item=2)
        admin, token = add_annotator(s, "ada", admin=True)       # token shown once, stored hashed
        import_records(s, project, rows, kinds=("rating", "pair"))
        a = next_assignment(s, project, annotator)             # None: nothing left for this annotator
        submit_judgement(s, annotator, a.id, {"scores": {12: 3, 13: 1}})
        data = collect(s, project)                             # records.FeedbackData for quality/export

Transactions. Every write function commits before it returns and rolls back everything it
did if it raises, so a judgement is on disk once ``submit_*`` returns (a server killed right
after the HTTP answer loses nothing) and a refused request leaves no partial rows. A write
first commits whatever read transaction the session had open (so it starts from fresh data
and, on SQLite, takes the write lock up front). To make several writes one unit, wrap them
in ``with atomic(s):`` - the inner functions then leave committing to that block.

Errors are ``FeedbackError`` with the HTTP status to answer (see ``errors.py``). Functions
that act for an annotator check ownership themselves; admin-only functions (``progress``,
``item_judgements``, ``collect`` and the creation functions) trust their caller, which must
check ``require_admin`` first. Identifiers may be passed as objects or ids; a project also
by name.

Where the code lives: projects, annotators and content here; the queue, judgements, skips and
"x of N" in ``judging``; admin reads (``progress``, ``collect``) in ``readout``; the item browser
and disagreement review in ``review``; membership, invite links and archiving in ``team``;
imports and generation in ``ingest`` (background jobs in ``jobs``); ``atomic``, the access rule
and the argument checks in ``base``. Import them all from here.
"""


from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .base import (MAX_ID, as_id, as_int, atomic, check_permutation, check_scores, check_text, clean_name,
                   get_project, require_admin, resolve_project, unstorable)
from .errors import FeedbackError, conflict, invalid, not_found
# The queue/judgement, admin-read and import functions live in modules of their own; this
# module is the one place callers import from.
from .ingest import generate_responses, import_file, import_records
from .judging import (assignment_view, my_judgements, next_assignment, queue_position, skip_assignment,
                      submit_comparison, submit_judgement, submit_ranking, submit_rating, update_judgement)
from .team import (add_member, create_invite, find_invite, invite_state, list_invites, members, redeem_invite,
                   remove_member, revoke_invite, set_archived, visible_projects)
from .readout import collect, get_item, item_judgements, progress
from .review import browse_items, item_review
from .store import KINDS, Annotator, Assignment, Item, Project, Prompt, Response

_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,199}$")
SCALE_LIMIT = 1000          # |scale min|, |scale max| (the columns are 32-bit on PostgreSQL)
MAX_PER_ITEM = 1000
DEFAULT_TIMEOUT_MINUTES = 30  # an open assignment not submitted in this time expires (see judging.next_assignment)
MAX_TIMEOUT_MINUTES = 7 * 24 * 60


# ---------------------------------------------------------------------------------------- projects

def create_project(s: Session, name: str, *, scale: Sequence[int] = (1, 3), per_item: int = 2,
                   gold_rate: float = 0.1, instructions: str = "",
                   timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES, members_only: bool = False) -> Project:
    """A new project: ratings on the integer scale ``scale`` (min, max), each item judged by
    ``per_item`` distinct annotators, about ``gold_rate`` of the served items gold; an item taken
    and not submitted within ``timeout_minutes`` goes to someone else. ``members_only``: only its
    members (``add_member``, invite links) and admins may judge it.
    Names: letters, digits, space, ``_ . -`` (they appear in URLs), not all digits. 409 if taken."""
    name = _project_name(name)
    if len(scale) != 2:
        raise invalid(f"scale must be (min, max), got {scale!r}")
    low, high = as_int(scale[0], "scale min"), as_int(scale[1], "scale max")
    if not low < high or high - low > 100 or max(abs(low), abs(high)) > SCALE_LIMIT:
        raise invalid(f"scale must satisfy min < max, span at most 100 points and stay within "
                      f"-{SCALE_LIMIT}..{SCALE_LIMIT}, got ({low}, {high})")
    settings = _settings(per_item, gold_rate, timeout_minutes, instructions)
    with atomic(s):
        if s.scalar(select(Project.id).where(Project.name == name)) is not None:
            raise conflict(f"project {name!r} already exists")
        project = Project(name=name, scale_min=low, scale_max=high, members_only=bool(members_only), **settings)
        s.add(project)
        s.flush()
    return project


def update_project(s: Session, project: Project | str | int, *, name: str | None = None, per_item: int | None = None,
                   gold_rate: float | None = None, instructions: str | None = None,
                   timeout_minutes: int | None = None, members_only: bool | None = None) -> Project:
    """Change a project's settings (None: keep). The scale cannot change (stored ratings are on it)."""
    with atomic(s):
        project = resolve_project(s, project)
        settings = _settings(project.per_item if per_item is None else per_item,
                             project.gold_rate if gold_rate is None else gold_rate,
                             project.timeout_minutes if timeout_minutes is None else timeout_minutes,
                             project.instructions if instructions is None else instructions)
        if name is not None and name.strip() != project.name:
            name = _project_name(name)
            if s.scalar(select(Project.id).where(Project.name == name)) is not None:
                raise conflict(f"project {name!r} already exists")
            project.name = name
        for key, value in settings.items():
            setattr(project, key, value)
        if members_only is not None:
            project.members_only = bool(members_only)
    return project


def _project_name(name: str) -> str:
    name = clean_name(name, "project name")
    if not _PROJECT_NAME.match(name) or name.isdigit():
        raise invalid(f"project name {name!r}: use letters, digits, spaces, '_', '.', '-' (not only digits)")
    return name


def _settings(per_item: Any, gold_rate: Any, timeout_minutes: Any, instructions: Any) -> dict:
    """The checked settings ``create_project`` and ``update_project`` share, as Project fields."""
    per_item = as_int(per_item, "per_item")
    if not 1 <= per_item <= MAX_PER_ITEM:
        raise invalid(f"per_item must be between 1 and {MAX_PER_ITEM}, got {per_item}")
    if isinstance(gold_rate, bool) or not isinstance(gold_rate, (int, float)) or not 0 <= gold_rate < 1:
        raise invalid(f"gold_rate must be a number in [0, 1), got {gold_rate!r}")
    timeout_minutes = as_int(timeout_minutes, "timeout_minutes")
    if not 1 <= timeout_minutes <= MAX_TIMEOUT_MINUTES:
        raise invalid(f"timeout_minutes must be between 1 and {MAX_TIMEOUT_MINUTES} (a week), got {timeout_minutes}")
    instructions = check_text(str(instructions or ""), "instructions")
    return {"per_item": per_item, "gold_rate": float(gold_rate), "timeout_minutes": timeout_minutes,
            "instructions": instructions}


def list_projects(s: Session) -> list[Project]:
    """All projects, oldest first."""
    return list(s.scalars(select(Project).order_by(Project.id)))


def set_priorities(s: Session, project: Project | str | int, priorities: Mapping[int, float]) -> int:
    """Set ``Item.priority`` (higher is served first) for items of ``project``; returns how many changed.
    Active selection calls this with the items the reward model is least sure about."""
    with atomic(s):
        project = resolve_project(s, project)
        ids = {as_id(k, "item"): _priority(v) for k, v in priorities.items()}
        items = s.scalars(select(Item).where(Item.project_id == project.id, Item.id.in_(ids))).all()
        missing = sorted(set(ids) - {item.id for item in items})
        if missing:
            raise not_found(f"item(s) {missing} in project {project.name!r}")
        for item in items:
            item.priority = ids[item.id]
    return len(items)


def _priority(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise invalid(f"a priority must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise invalid(f"a priority must be a finite number, got {value!r}")
    return number


# ---------------------------------------------------------------------------------------- annotators

def hash_token(token: str) -> str:
    """sha256 hex of a token. Tokens are 192 random bits, so a fast unsalted hash is enough:
    there is nothing to brute-force, and a unique hash can be looked up by index."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_annotator(s: Session, name: str, *, admin: bool = False) -> tuple[Annotator, str]:
    """A new annotator (or admin) and their personal token. The token is returned this once
    and only its hash is stored: lose it and ``reset_token`` issues a new one. 409 if the name is taken."""
    name = clean_name(name, "annotator name")
    with atomic(s):
        if s.scalar(select(Annotator.id).where(Annotator.name == name)) is not None:
            raise conflict(f"annotator {name!r} already exists")
        token = secrets.token_urlsafe(24)
        annotator = Annotator(name=name, token_hash=hash_token(token), is_admin=bool(admin), active=True)
        s.add(annotator)
        s.flush()
    return annotator, token


def reset_token(s: Session, annotator: Annotator | int | str) -> str:
    """A fresh token for an annotator (the old one stops working); returned once."""
    with atomic(s):
        found = get_annotator(s, annotator)
        token = secrets.token_urlsafe(24)
        found.token_hash = hash_token(token)
    return token


def authenticate(s: Session, token: str | None) -> Annotator | None:
    """The active annotator holding ``token``, or None (unknown, empty or deactivated)."""
    if not isinstance(token, str) or not token.strip() or len(token) > 256:
        return None
    digest = hash_token(token.strip())
    annotator = s.scalar(select(Annotator).where(Annotator.token_hash == digest))
    if annotator is None or not annotator.active or not hmac.compare_digest(annotator.token_hash, digest):
        return None
    return annotator


def get_annotator(s: Session, annotator: Annotator | int | str) -> Annotator:
    """An annotator by object, id or name; 404 if none."""
    if isinstance(annotator, Annotator):
        annotator = annotator.id
    if isinstance(annotator, str):
        found = None if unstorable(annotator) else s.scalar(select(Annotator).where(Annotator.name == annotator))
    else:
        number = as_int(annotator, "annotator id")
        found = s.get(Annotator, number) if 1 <= number <= MAX_ID else None
    if found is None:
        raise not_found(f"annotator {annotator!r}")
    return found


def list_annotators(s: Session) -> list[Annotator]:
    return list(s.scalars(select(Annotator).order_by(Annotator.id)))


def set_annotator_active(s: Session, annotator: Annotator | int | str, active: bool) -> Annotator:
    """Deactivate (or re-activate) an annotator: a deactivated token no longer signs in, and their
    open assignments are released so the items go to someone else. Their judgements stay."""
    with atomic(s):
        found = get_annotator(s, annotator)
        found.active = bool(active)
        if not active:
            for assignment in s.scalars(select(Assignment).where(Assignment.annotator_id == found.id,
                                                                 Assignment.status == "open")):
                s.delete(assignment)
    return found


# ---------------------------------------------------------------------------------------- content

def add_prompt(s: Session, project: Project | str | int, text: str, meta: dict | None = None) -> Prompt:
    """A prompt in ``project``. ``meta`` is any JSON object (e.g. the original chat messages)."""
    if not isinstance(text, str) or not text.strip():
        raise invalid("prompt text must be a non-empty text")
    check_text(text, "prompt text")
    if meta is not None and not isinstance(meta, dict):
        raise invalid(f"prompt meta must be a JSON object, got {type(meta).__name__}")
    with atomic(s):
        prompt = Prompt(project_id=resolve_project(s, project).id, text=text, meta=meta)
        s.add(prompt)
        s.flush()
    return prompt


def add_response(s: Session, prompt: Prompt | int, text: str, policy: str = "", meta: dict | None = None) -> Response:
    """A response to ``prompt``; ``policy`` names the model that wrote it (kept for analysis, never shown)."""
    check_text(text, "response text")
    check_text(str(policy or ""), "policy")
    with atomic(s):
        prompt_id = prompt.id if isinstance(prompt, Prompt) else as_id(prompt, "prompt")
        if s.get(Prompt, prompt_id) is None:
            raise not_found(f"prompt {prompt_id}")
        response = Response(prompt_id=prompt_id, text=text, policy=str(policy or "")[:500], meta=meta)
        s.add(response)
        s.flush()
    return response


def add_item(s: Session, project: Project | str | int, kind: str, response_ids: Sequence[int], *,
             gold_answer: Any = None, priority: float = 0.0) -> Item:
    """An item to judge: ``rating`` (>= 1 response, each scored), ``pair`` (exactly 2) or ``ranking`` (>= 2),
    all responses of one prompt of this project. ``gold_answer`` makes it a gold item:
    rating ``{response_id: score}`` for every response, pair ``"a"``/``"b"``/``"tie"`` or the winning
    response id (``a`` is the smaller id), ranking a list of all ids best first. 409 if the same
    kind and responses already form an item."""
    if kind not in KINDS:
        raise invalid(f"kind must be one of {list(KINDS)}, got {kind!r}")
    ids = [as_id(r, "response") for r in response_ids]
    if len(set(ids)) != len(ids):
        raise invalid(f"response ids {ids} list a response twice")
    need = {"rating": (1, None), "pair": (2, 2), "ranking": (2, None)}[kind]
    if len(ids) < need[0] or (need[1] is not None and len(ids) > need[1]):
        raise invalid(f"a {kind} item needs {'exactly 2' if kind == 'pair' else f'at least {need[0]}'} "
                      f"response(s), got {len(ids)}")
    ids.sort()
    with atomic(s):
        project = resolve_project(s, project)
        found = s.execute(select(Response.id, Prompt.id, Prompt.project_id).join(Prompt)
                          .where(Response.id.in_(ids))).all()
        missing = sorted(set(ids) - {row[0] for row in found})
        if missing:
            raise invalid(f"response(s) {missing} do not exist")
        prompts = {row[1] for row in found}
        if len(prompts) != 1 or found[0][2] != project.id:
            raise invalid(f"responses {ids} must all answer one prompt of project {project.name!r} "
                          f"(they answer prompt(s) {sorted(prompts)})")
        key = ",".join(map(str, ids))
        existing = s.scalar(select(Item.id).where(Item.project_id == project.id, Item.kind == kind, Item.key == key))
        if existing is not None:
            raise conflict(f"a {kind} item of responses {ids} already exists (item {existing})")
        gold = None if gold_answer is None else _gold(kind, ids, gold_answer, project)
        item = Item(project_id=project.id, kind=kind, prompt_id=prompts.pop(), response_ids=ids, key=key,
                    is_gold=gold is not None, gold_answer=gold, priority=_priority(priority))
        s.add(item)
        s.flush()
    return item


def _gold(kind: str, ids: list[int], answer: Any, project: Project) -> Any:
    """The gold answer in stored form, or 422 saying what it should look like."""
    if kind == "rating":
        if not isinstance(answer, Mapping):
            raise invalid(f"a rating gold answer is {{response_id: score}}, got {answer!r}")
        return {str(k): v for k, v in check_scores(answer, ids, project, "gold answer").items()}
    if kind == "pair":
        if answer in ("a", "b", "tie"):
            return answer
        if not isinstance(answer, str) and as_int(answer, "pair gold answer") in ids:
            return "a" if int(answer) == ids[0] else "b"
        raise invalid(f"a pair gold answer is 'a', 'b', 'tie' or one of the ids {ids}, got {answer!r}")
    return check_permutation(answer, ids, "gold order")


__all__ = [
    "FeedbackError", "add_annotator", "add_item", "add_prompt", "add_response", "as_int", "assignment_view", "atomic",
    "authenticate", "collect", "create_project", "generate_responses", "get_annotator", "get_item", "get_project",
    "hash_token", "import_file", "import_records", "item_judgements", "list_annotators", "list_projects",
    "my_judgements", "next_assignment", "progress", "require_admin", "reset_token", "set_annotator_active",
    "set_priorities", "submit_comparison", "submit_judgement", "submit_ranking", "submit_rating",
    "update_judgement", "update_project", "queue_position", "skip_assignment", "add_member", "create_invite",
    "find_invite", "invite_state", "list_invites", "members", "redeem_invite", "remove_member", "revoke_invite",
    "set_archived", "visible_projects", "browse_items", "item_review",
]
