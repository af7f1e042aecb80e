"""64-bit ids on PostgreSQL; per-project assignment timeout

- PostgreSQL: every ``id`` and every foreign key naming one becomes BIGINT, and each id
  sequence ``AS bigint``, so ids run to 2^63 - 1 as they do on SQLite (whose INTEGER PRIMARY
  KEY is already the 64-bit rowid: nothing to change there). Existing rows keep their ids.
- ``project.timeout_minutes`` (default 30, at least 1): an assignment taken and not
  submitted within this time expires and its item can go to someone else. Existing
  projects get 30.

Written by hand. SQLite adds the column with a plain ``ALTER TABLE ... ADD COLUMN`` carrying
its CHECK: Alembic's batch mode would copy and drop the ``project`` table, and with foreign
keys on, dropping it would cascade-delete every prompt and item.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# table -> its id-valued columns (primary key first)
ID_COLUMNS = {
    "annotator": ["id"],
    "project": ["id"],
    "prompt": ["id", "project_id"],
    "response": ["id", "prompt_id"],
    "item": ["id", "project_id", "prompt_id"],
    "assignment": ["id", "item_id", "annotator_id"],
    "rating": ["id", "assignment_id", "response_id"],
    "comparison": ["id", "assignment_id", "left_response_id"],
    "ranking_judgement": ["id", "assignment_id"],
}
CHECK = "ck_project_timeout_positive"


def _ids(new: sa.types.TypeEngine, old: sa.types.TypeEngine, sequence_type: str) -> None:
    for table, columns in ID_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=False)
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS {sequence_type}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE project ADD COLUMN timeout_minutes INTEGER DEFAULT 30 NOT NULL "
                   f"CONSTRAINT {CHECK} CHECK (timeout_minutes >= 1)")
        return
    _ids(sa.BigInteger(), sa.Integer(), "bigint")
    op.add_column("project", sa.Column("timeout_minutes", sa.Integer(), server_default="30", nullable=False))
    op.create_check_constraint(CHECK, "project", "timeout_minutes >= 1")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE project DROP COLUMN timeout_minutes")  # SQLite >= 3.35
        return
    op.drop_constraint(CHECK, "project", type_="check")
    op.drop_column("project", "timeout_minutes")
    _ids(sa.Integer(), sa.BigInteger(), "integer")  # fails, changing nothing, if an id no longer fits
