"""team features: project membership and archiving, invite links, skips/discards, comments, generation jobs

- ``project.archived`` (default false): an archived project is hidden from annotators and serves
  nothing; its data stays and it can be restored.
- ``project.members_only`` (default false, so existing projects stay open to every annotator):
  when true only the project's members (``project_member``) and admins see and judge it.
- ``project_member``: one row per (project, annotator).
- ``invite``: an invite link to a project. Only ``sha256(code)`` is stored, like tokens; a link
  can expire, have a use limit and be revoked.
- ``item_skip``: an annotator skipped an item (``kind = 'skip'``) or discarded it as unfit to
  judge, with a reason (``'discard'``); the item is not served to them again and the
  assignment it replaced is deleted, so it does not count against ``per_item``.
- ``assignment.comment``: an optional note an annotator leaves with a judgement.
- ``generation_job``: responses being sampled from a policy in the background, with progress.

Written by hand. SQLite adds the columns with plain ``ALTER TABLE ... ADD COLUMN`` (see 0002 for
why not batch mode); the new tables use 64-bit ids on PostgreSQL as 0002 made every other table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NEW_TABLES = ("generation_job", "item_skip", "invite", "project_member")  # drop order


def _id() -> sa.Column:
    return sa.Column("id", ID, nullable=False)


def _ref(name: str) -> sa.Column:
    return sa.Column(name, ID, nullable=False)


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"),
                                   ondelete="CASCADE")


def _columns(sqlite: bool) -> None:
    if sqlite:
        op.execute("ALTER TABLE project ADD COLUMN archived BOOLEAN DEFAULT 0 NOT NULL")
        op.execute("ALTER TABLE project ADD COLUMN members_only BOOLEAN DEFAULT 0 NOT NULL")
        op.execute("ALTER TABLE assignment ADD COLUMN comment TEXT")
        return
    op.add_column("project", sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("project", sa.Column("members_only", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("assignment", sa.Column("comment", sa.Text(), nullable=True))


def upgrade() -> None:
    _columns(op.get_bind().dialect.name == "sqlite")
    op.create_table(
        "project_member", _id(), _ref("project_id"), _ref("annotator_id"), _time("created_at"),
        _fk("project_member", "project_id", "project"), _fk("project_member", "annotator_id", "annotator"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_member")),
        sa.UniqueConstraint("project_id", "annotator_id", name=op.f("uq_project_member_project_id_annotator_id")),
    )
    op.create_index(op.f("ix_project_member_annotator_id"), "project_member", ["annotator_id"])
    op.create_table(
        "invite", _id(), _ref("project_id"),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        _time("expires_at", nullable=True), _time("created_at"),
        sa.CheckConstraint("max_uses IS NULL OR max_uses >= 1", name=op.f("ck_invite_max_uses_positive")),
        _fk("invite", "project_id", "project"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invite")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_invite_code_hash")),
    )
    op.create_index(op.f("ix_invite_project_id"), "invite", ["project_id"])
    op.create_table(
        "item_skip", _id(), _ref("item_id"), _ref("annotator_id"),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _time("created_at"),
        sa.CheckConstraint("kind IN ('skip', 'discard')", name=op.f("ck_item_skip_kind")),
        _fk("item_skip", "item_id", "item"), _fk("item_skip", "annotator_id", "annotator"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_skip")),
        sa.UniqueConstraint("item_id", "annotator_id", name=op.f("uq_item_skip_item_id_annotator_id")),
    )
    op.create_index(op.f("ix_item_skip_annotator_id"), "item_skip", ["annotator_id"])
    op.create_index(op.f("ix_item_skip_item_id"), "item_skip", ["item_id"])
    op.create_table(
        "generation_job", _id(), _ref("project_id"),
        sa.Column("policy", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _time("created_at"), _time("finished_at", nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_generation_job_status")),
        _fk("generation_job", "project_id", "project"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_job")),
    )
    op.create_index(op.f("ix_generation_job_project_id"), "generation_job", ["project_id"])


def downgrade() -> None:
    for table in NEW_TABLES:
        op.drop_table(table)
    if op.get_bind().dialect.name == "sqlite":  # SQLite >= 3.35
        for table, column in (("assignment", "comment"), ("project", "members_only"), ("project", "archived")):
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        return
    op.drop_column("assignment", "comment")
    op.drop_column("project", "members_only")
    op.drop_column("project", "archived")
