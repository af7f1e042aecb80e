"""The feedback database: SQLAlchemy 2.0 typed declarative models.

    Project ─< Prompt ─< Response
       └─< Item (kind, response_ids, gold) ─< Assignment (annotator, shown order, status)
                                                 ├─< Rating (one per response)
                                                 ├── Comparison (one)
                                                 └── RankingJudgement (one)

A judgement hangs off an ``Assignment`` (item x annotator), so "an annotator's own
judgements" is simply their assignments, and uniqueness constraints (one assignment per
item and annotator, one rating per response, one comparison or ranking per assignment)
make double submission impossible even when two requests race.

The schema is created by the Alembic migrations in ``migrations/`` (``db.migrate``), not by
``create_all``; a test checks the migrated schema equals these models. Constraint names
follow ``NAMING`` so later migrations can refer to them on every backend.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Integer, MetaData, String,
                        Text, TypeDecorator, UniqueConstraint, false)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
KINDS = ("rating", "pair", "ranking")
SKIP_KINDS = ("skip", "discard")  # ItemSkip.kind
JOB_STATUSES = ("queued", "running", "done", "failed")  # GenerationJob.status
WINNERS = ("a", "b", "tie")
STRENGTHS = (1, 2, 3)  # 1 slightly, 2 clearly, 3 much better
# Row ids and the foreign keys naming them are 64-bit everywhere: BIGINT on PostgreSQL (migration 0002), and
# SQLite's INTEGER PRIMARY KEY is its 64-bit rowid already (a BIGINT primary key there would not autoincrement).
ID = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp that always comes back timezone-aware in UTC.

    PostgreSQL keeps the zone (timestamptz); SQLite stores text without one, so values
    read back from SQLite are naive. Tagging them UTC here makes both backends compare
    and serialise alike.
    """
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Project(Base):
    __tablename__ = "project"
    __table_args__ = (CheckConstraint("scale_min < scale_max", name="scale_order"),
                      CheckConstraint("per_item >= 1", name="per_item_positive"),
                      CheckConstraint("gold_rate >= 0 AND gold_rate < 1", name="gold_rate_range"),
                      CheckConstraint("timeout_minutes >= 1", name="timeout_positive"))

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    scale_min: Mapped[int] = mapped_column(Integer, default=1)
    scale_max: Mapped[int] = mapped_column(Integer, default=3)
    per_item: Mapped[int] = mapped_column(Integer, default=2)  # distinct annotators per (non-gold) item
    gold_rate: Mapped[float] = mapped_column(Float, default=0.1)
    instructions: Mapped[str] = mapped_column(Text, default="")
    # An open assignment older than this expires: its item may go to someone else (judging.next_assignment).
    timeout_minutes: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Migration 0003. Archived: hidden from annotators, serves nothing, data kept. Members only: just the
    # project's members (ProjectMember) and admins see it; false keeps a project open to every annotator.
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    members_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    prompts: Mapped[list[Prompt]] = relationship(back_populates="project")
    items: Mapped[list[Item]] = relationship(back_populates="project")

    @property
    def scale(self) -> tuple[int, int]:
        return (self.scale_min, self.scale_max)


class Prompt(Base):
    __tablename__ = "prompt"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ID, ForeignKey("project.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)

    project: Mapped[Project] = relationship(back_populates="prompts")
    responses: Mapped[list[Response]] = relationship(back_populates="prompt", order_by="Response.id")


class Response(Base):
    __tablename__ = "response"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ID, ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    policy: Mapped[str] = mapped_column(String(500), default="")  # the model (folder or name) that wrote it
    meta: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)

    prompt: Mapped[Prompt] = relationship(back_populates="responses")


class Annotator(Base):
    """A person with a personal token. Only ``sha256(token)`` is stored (see ``service.hash_token``)."""
    __tablename__ = "annotator"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Item(Base):
    """One unit of work: rate the responses, compare two, or rank several, all of one prompt.

    ``response_ids`` is sorted (the canonical order: in a pair, ``a`` is the smaller id);
    ``key`` is the same ids as text, unique per project and kind so re-importing a file
    never duplicates work. ``gold_answer`` is never shown to annotators.
    """
    __tablename__ = "item"
    __table_args__ = (UniqueConstraint("project_id", "kind", "key"),
                      CheckConstraint("kind IN ('rating', 'pair', 'ranking')", name="kind"))

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ID, ForeignKey("project.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    prompt_id: Mapped[int] = mapped_column(ID, ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    response_ids: Mapped[list[int]] = mapped_column(JSON)
    key: Mapped[str] = mapped_column(String(400))
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_answer: Mapped[Optional[Any]] = mapped_column(JSON, nullable=True)
    priority: Mapped[float] = mapped_column(Float, default=0.0)  # higher is served first (active selection)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship(back_populates="items")
    prompt: Mapped[Prompt] = relationship()
    assignments: Mapped[list[Assignment]] = relationship(back_populates="item")


class Assignment(Base):
    """An item given to one annotator; ``shown`` is the display order of its responses."""
    __tablename__ = "assignment"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id"),
                      CheckConstraint("status IN ('open', 'done')", name="status"))

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    item_id: Mapped[int] = mapped_column(ID, ForeignKey("item.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ID, ForeignKey("annotator.id", ondelete="CASCADE"), index=True)
    shown: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(8), default="open")
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime, nullable=True)
    comment: Mapped[Optional[str]] = mapped_column(Text, nullable=True)  # the annotator's note (migration 0003)

    item: Mapped[Item] = relationship(back_populates="assignments")
    annotator: Mapped[Annotator] = relationship()
    ratings: Mapped[list[Rating]] = relationship(back_populates="assignment", cascade="all, delete-orphan",
                                                 order_by="Rating.response_id")
    comparison: Mapped[Optional[Comparison]] = relationship(back_populates="assignment", cascade="all, delete-orphan")
    ranking: Mapped[Optional[RankingJudgement]] = relationship(back_populates="assignment",
                                                               cascade="all, delete-orphan")


class Rating(Base):
    __tablename__ = "rating"
    __table_args__ = (UniqueConstraint("assignment_id", "response_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ID, ForeignKey("assignment.id", ondelete="CASCADE"), index=True)
    response_id: Mapped[int] = mapped_column(ID, ForeignKey("response.id", ondelete="CASCADE"), index=True)
    score: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    assignment: Mapped[Assignment] = relationship(back_populates="ratings")


class Comparison(Base):
    """``winner`` in canonical terms (``a`` = the smaller response id); ``left_response_id`` was shown left."""
    __tablename__ = "comparison"
    __table_args__ = (CheckConstraint("winner IN ('a', 'b', 'tie')", name="winner"),
                      CheckConstraint("strength IS NULL OR strength BETWEEN 1 AND 3", name="strength_range"))

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ID, ForeignKey("assignment.id", ondelete="CASCADE"), unique=True)
    winner: Mapped[str] = mapped_column(String(4))
    strength: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    left_response_id: Mapped[int] = mapped_column(ID, ForeignKey("response.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    assignment: Mapped[Assignment] = relationship(back_populates="comparison")


class RankingJudgement(Base):
    __tablename__ = "ranking_judgement"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ID, ForeignKey("assignment.id", ondelete="CASCADE"), unique=True)
    order: Mapped[list[int]] = mapped_column(JSON)  # response ids, best first
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    assignment: Mapped[Assignment] = relationship(back_populates="ranking")


# ---------------------------------------------------------------------------------------- team (migration 0003)

class ProjectMember(Base):
    """An annotator allowed into a ``members_only`` project."""
    __tablename__ = "project_member"
    __table_args__ = (UniqueConstraint("project_id", "annotator_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ID, ForeignKey("project.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ID, ForeignKey("annotator.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    annotator: Mapped[Annotator] = relationship()


class Invite(Base):
    """An invite link to a project (``/join/<code>``); only ``sha256(code)`` is stored, as for tokens."""
    __tablename__ = "invite"
    __table_args__ = (CheckConstraint("max_uses IS NULL OR max_uses >= 1", name="max_uses_positive"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ID, ForeignKey("project.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    note: Mapped[str] = mapped_column(String(200), default="")  # who it was made for, shown to admins only
    max_uses: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)  # None: no limit
    uses: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship()


class ItemSkip(Base):
    """An item an annotator skipped or discarded (with a reason); it is not served to them again."""
    __tablename__ = "item_skip"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id"),
                      CheckConstraint("kind IN ('skip', 'discard')", name="kind"))

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    item_id: Mapped[int] = mapped_column(ID, ForeignKey("item.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ID, ForeignKey("annotator.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    annotator: Mapped[Annotator] = relationship()


class GenerationJob(Base):
    """Responses being sampled from a policy in the background (``ingest.run_generation_job``)."""
    __tablename__ = "generation_job"
    __table_args__ = (CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ID, ForeignKey("project.id", ondelete="CASCADE"), index=True)
    policy: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(8), default="queued")
    done: Mapped[int] = mapped_column(Integer, default=0)    # responses sampled so far
    total: Mapped[int] = mapped_column(Integer, default=0)   # responses to sample
    message: Mapped[str] = mapped_column(Text, default="")   # the outcome, or why it failed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime, nullable=True)
