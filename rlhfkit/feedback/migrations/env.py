"""Alembic environment for the feedback store, run in-process by ``rlhfkit.feedback.db.migrate``.

``migrate`` hands over an open connection in ``config.attributes["connection"]``; when Alembic
is run by hand (``alembic -c ... upgrade head``), the URL comes from ``sqlalchemy.url`` or
``$RLHFKIT_FEEDBACK_DB``. Offline (``--sql``) mode is supported for reviewing the DDL.

Concurrent upgrades (two app processes starting on a fresh database) are serialised: on
SQLite the migration transaction takes the write lock (BEGIN IMMEDIATE), on PostgreSQL a
transaction-scoped advisory lock; the second process then finds the schema at head.
"""

from __future__ import annotations

from alembic import context

from rlhfkit.feedback import db
from rlhfkit.feedback.store import Base

config = context.config
target_metadata = Base.metadata
PG_LOCK_KEY = 0x726C68666B  # "rlhfk": any constant shared by every migrating process


def _configure(connection=None, url=None) -> None:
    backend = connection.dialect.name if connection is not None else (url or "").split(":", 1)[0].split("+")[0]
    context.configure(connection=connection, url=url, target_metadata=target_metadata,
                      render_as_batch=backend == "sqlite",  # SQLite alters tables by copying them
                      compare_type=True, literal_binds=connection is None)


def run_offline() -> None:
    _configure(url=db.normalize_url(config.get_main_option("sqlalchemy.url") or db.default_url()))
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    connection = connection.execution_options(**{db.WRITE_OPTION: True})
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = db.make_engine(config.get_main_option("sqlalchemy.url") or db.default_url())
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
