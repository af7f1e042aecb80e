"""Open the feedback database and bring its schema up to date.

    Session = connect("feedback.db")            # a path, sqlite:///..., or postgresql+psycopg://...
    with Session() as s:
        project = service.create_project(s, "helpfulness")

``connect`` returns a ``sessionmaker`` (its engine is ``Session.kw["bind"]``) and by default
runs the Alembic migrations first, so a fresh file or an empty PostgreSQL database just
works. Sessions do not expire objects on commit: the service commits inside its write
functions and callers keep using what they got back.

SQLite settings, and why:

- ``journal_mode=WAL``: readers (the admin's live progress page) never block the writer.
- ``synchronous=FULL``: each commit is fsynced, so a submitted judgement survives a killed
  process *and* a power cut (WAL's NORMAL only survives the former).
- ``foreign_keys=ON``: SQLite ignores foreign keys unless asked, per connection.
- ``busy_timeout``: a second writer waits up to 30 s for the lock instead of failing.
- write transactions start with ``BEGIN IMMEDIATE`` (``service`` asks for it with the
  ``rlhfkit_write`` execution option): taking the write lock up front means a read-then-
  write such as "pick the next item, then assign it" cannot be overtaken by another
  writer, which in WAL mode would otherwise fail with SQLITE_BUSY_SNAPSHOT.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .errors import FeedbackError

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_URL = "sqlite:///feedback.db"
ENV_VAR = "RLHFKIT_FEEDBACK_DB"
# Alembic keeps the running migration in module globals (``alembic.context``): one at a time per process.
_ALEMBIC_LOCK = threading.Lock()
WRITE_OPTION = "rlhfkit_write"  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)


def default_url() -> str:
    """``$RLHFKIT_FEEDBACK_DB`` if set, else ``sqlite:///feedback.db`` in the working directory."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def normalize_url(url_or_path: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a URL or a bare file path.

    ``postgresql://`` and ``postgres://`` get the psycopg (v3) driver, the one rlhfkit
    installs; SQLAlchemy's default for them would be psycopg2.
    """
    text = str(url_or_path)
    if "://" not in text:
        return "sqlite:///" + str(Path(text).expanduser().resolve())
    for prefix in ("postgresql://", "postgres://"):
        if text.startswith(prefix):
            return "postgresql+psycopg://" + text[len(prefix):]
    return text


def new_sqlite_file(url_or_path: str | os.PathLike) -> Path | None:
    """The SQLite file ``url_or_path`` names when it does not exist yet (None: it exists, is in memory, is not
    SQLite or not a URL). The CLI removes such a file again when its command fails."""
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(normalize_url(url_or_path))
    except ArgumentError:
        return None
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return None if Path(database).exists() else Path(database)


def make_engine(url_or_path: str | os.PathLike, **kwargs) -> Engine:
    """An engine with the pragmas above for SQLite; other backends as SQLAlchemy makes them."""
    url = make_url(normalize_url(url_or_path))
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    else:  # an in-memory database lives in one connection: share it
        kwargs.setdefault("poolclass", StaticPool)
    connect_args = {"timeout": 30, "check_same_thread": False, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _sqlite_events(engine)
    return engine


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Leave transaction control to SQLAlchemy (the "begin" hook below); pysqlite's own
        # implicit BEGIN would otherwise always be DEFERRED.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")


def migrate(target: str | os.PathLike | Engine, revision: str = "head") -> str:
    """Upgrade the schema to ``revision`` (Alembic, run in-process); returns the revision now current.

    ``target`` is a URL, a path or an engine (pass the engine for ``sqlite://`` in memory,
    whose data lives in that engine only). Safe to run again and from several processes
    at once: the migration holds the SQLite write lock or a PostgreSQL advisory lock.
    """
    return _alembic(target, "upgrade", revision)


def downgrade(target: str | os.PathLike | Engine, revision: str) -> str:
    """Downgrade the schema to ``revision`` (``"base"``: drop every table); returns the revision now current."""
    return _alembic(target, "downgrade", revision)


def _alembic(target: str | os.PathLike | Engine, action: str, revision: str) -> str:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    engine = target if isinstance(target, Engine) else make_engine(target)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with _ALEMBIC_LOCK, engine.connect() as conn:
            if action == "upgrade":
                _check_foreign(conn)
                conn.rollback()  # end that read: the migration must begin its own (write) transaction
            config.attributes["connection"] = conn
            getattr(command, action)(config, revision)
            conn.commit()
            return MigrationContext.configure(conn).get_current_revision() or ""
    finally:
        if engine is not target:
            engine.dispose()


def _check_foreign(conn) -> None:
    """Refuse to add our tables to a SQLite file that already holds another application's tables."""
    if conn.dialect.name != "sqlite":
        return  # a PostgreSQL database is commonly shared by several applications' tables
    tables = inspect(conn).get_table_names()
    if tables and "alembic_version" not in tables:
        shown = conn.engine.url.database or ":memory:"
        raise FeedbackError(f"database {shown} already holds tables of something else ({', '.join(tables[:5])}); "
                            "point --db at a new file or an rlhfkit feedback database", 422)


def unusable(target, err: BaseException) -> FeedbackError:
    """One line saying why the database at ``target`` cannot be used (instead of a driver traceback)."""
    try:
        url = make_url(normalize_url(target)) if not isinstance(target, Engine) else target.url
        shown = (url.database or ":memory:") if url.get_backend_name() == "sqlite" else \
            url.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL
        shown = str(target)
    detail = (str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__])[0]
    if "file is not a database" in detail:
        return FeedbackError(f"database {shown} is not a SQLite database ({detail}); point --db at a new file or "
                             "an rlhfkit feedback database", 422)
    if "unable to open database file" in detail:
        return FeedbackError(f"cannot open database {shown} ({detail}): is it a folder, or in a folder you "
                             "cannot write to?", 422)
    if "Can't locate revision" in detail:
        return FeedbackError(f"database {shown} was migrated by another application or a newer rlhfkit "
                             f"({detail})", 422)
    return FeedbackError(f"cannot use database {shown}: {detail}", 422)


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def connect(url_or_path: str | os.PathLike | None = None, *, upgrade: bool = True, **engine_kwargs) -> sessionmaker[Session]:
    """A session factory for the database at ``url_or_path`` (default: ``default_url()``).

    With ``upgrade`` (the default) the schema is migrated to the newest revision first. A target
    that is not a usable database (a text file, a folder, another program's SQLite file, a bad
    URL, a server that does not answer) raises ``FeedbackError`` with one line naming it.
    """
    from alembic.util import CommandError

    target = url_or_path if url_or_path is not None else default_url()
    engine = None
    try:
        engine = make_engine(target, **engine_kwargs)
        if upgrade:
            migrate(engine)
    except (SQLAlchemyError, CommandError, OSError) as err:
        if engine is not None:
            engine.dispose()
        raise unusable(target, err) from None
    except FeedbackError:
        engine.dispose()
        raise
    return sessionmaker(bind=engine, expire_on_commit=False)


def engine_of(factory: sessionmaker) -> Engine:
    """The engine behind a factory from ``connect`` (to ``dispose()`` it when done)."""
    return factory.kw["bind"]
