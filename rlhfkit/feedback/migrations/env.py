"""Alembic environment for the feedback store, run in-process by ``rlhfkit.feedback.db.migrate``.

``migrate`` hands over an open connection in ``config.attributes["connection"]``; when Alembic
is run by hand (``alembic -c ... upgrade head``), the URL comes from ``sqlalchemy.url`` or
``$RLHFKIT_FEEDBACK_DB``. Offline (``--sql``) mode is supported for reviewing the DDL.

Concurrent upgrades (two app processes starting on a fresh database) are serialised: the whole
upgrade is one transaction, begun before Alembic reads the current revision, that holds the
SQLite write lock (BEGIN IMMEDIATE) or, on PostgreSQL, a transaction-scoped advisory lock; the
second process then reads the revision the first one committed and finds the schema at head.
(Alembic alone would read the revision first and, on SQLite, commit after every migration, so
a process that read "0002" could wait for the lock and then apply 0003 a second time.)
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
    """Run the migrations in one locked transaction that the caller commits."""
    connection = connection.execution_options(**{db.WRITE_OPTION: True})
    if connection.in_transaction():
        connection.rollback()  # a read begun earlier would not hold the write lock
    connection.begin()  # SQLite: BEGIN IMMEDIATE (the write lock), see db._sqlite_events
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
    # Configured inside the transaction, Alembic treats it as external: it reads the current
    # revision under the lock and neither begins nor commits transactions of its own.
    _configure(connection)
    with context.begin_transaction():
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
