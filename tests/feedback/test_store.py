"""The schema: migrations equal the models, SQLite settings, constraints, URLs."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timezone

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from rlhfkit.feedback import db
from rlhfkit.feedback.store import (Annotator, Assignment, Base, Comparison, Item, Project, Prompt, Rating, Response,
                                    utcnow)

from .scenario import MIGRATE, PACKAGE, run_upgrade_from_0001, schema_diff


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def test_migrations_build_exactly_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert db.migrate(url) == _head() == "0003"
    assert db.migrate(url) == "0003"  # idempotent
    engine = db.make_engine(url)
    try:
        assert schema_diff(engine) == []
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        assert db.downgrade(engine, "base") == ""  # the downgrade works too
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert db.current_revision(engine) is None
        db.migrate(engine)
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_a_first_release_database_upgrades_with_its_data(tmp_path):
    run_upgrade_from_0001(f"sqlite:///{tmp_path / 'old.db'}")


def test_schema_diff_would_notice_a_drift(tmp_path):
    """Guard the guard: a model change without a migration shows up."""
    engine = db.make_engine(tmp_path / "d.db")
    try:
        db.migrate(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_rating_response_id")
        assert any(d[0] == "add_index" for d in schema_diff(engine))
    finally:
        engine.dispose()


def test_sqlite_pragmas_and_foreign_keys(tmp_path):
    Session = db.connect(tmp_path / "sub" / "f.db")  # parent folders are created
    try:
        with Session() as s:
            assert s.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert s.connection().exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            s.add(Response(prompt_id=12345, text="orphan"))
            with pytest.raises(IntegrityError):
                s.flush()
    finally:
        db.engine_of(Session).dispose()


def test_unique_constraints_stop_double_work(tmp_path):
    Session = db.connect(tmp_path / "u.db")
    try:
        with Session() as s:
            project = Project(name="p")
            prompt = Prompt(project=project, text="q")
            r1, r2 = Response(prompt=prompt, text="a"), Response(prompt=prompt, text="b")
            ann = Annotator(name="x", token_hash="0" * 64)
            s.add_all([project, prompt, r1, r2, ann])
            s.flush()
            item = Item(project=project, kind="pair", prompt=prompt, response_ids=[r1.id, r2.id], key="1,2")
            s.add(item)
            s.flush()
            a = Assignment(item=item, annotator=ann, shown=[r2.id, r1.id])
            s.add(a)
            s.commit()
            for duplicate in (lambda: Assignment(item=item, annotator=ann, shown=[r1.id, r2.id]),
                              lambda: Item(project=project, kind="pair", prompt=prompt, response_ids=[1, 2], key="1,2"),
                              lambda: Annotator(name="x", token_hash="1" * 64),
                              lambda: Annotator(name="y", token_hash="0" * 64),
                              lambda: Project(name="p")):
                s.add(duplicate())
                with pytest.raises(IntegrityError):
                    s.flush()
                s.rollback()
            s.add_all([Rating(assignment_id=a.id, response_id=r1.id, score=1),
                       Rating(assignment_id=a.id, response_id=r1.id, score=2)])
            with pytest.raises(IntegrityError):
                s.flush()
            s.rollback()
            s.add_all([Comparison(assignment_id=a.id, winner="a", left_response_id=r2.id),
                       Comparison(assignment_id=a.id, winner="b", left_response_id=r2.id)])
            with pytest.raises(IntegrityError):
                s.flush()
            s.rollback()
            for bad in (Comparison(assignment_id=a.id, winner="left", left_response_id=r2.id),
                        Comparison(assignment_id=a.id, winner="a", strength=7, left_response_id=r2.id),
                        Project(name="q", scale_min=3, scale_max=1)):
                s.add(bad)
                with pytest.raises(IntegrityError):  # CHECK constraints
                    s.flush()
                s.rollback()
    finally:
        db.engine_of(Session).dispose()


def test_timestamps_come_back_in_utc(tmp_path):
    Session = db.connect(tmp_path / "t.db")
    try:
        with Session() as s:
            s.add(Annotator(name="t", token_hash="2" * 64))
            s.commit()
        with Session() as s:
            created = s.query(Annotator).one().created_at
            assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
            assert abs((utcnow() - created).total_seconds()) < 60
            assert created.astimezone(timezone.utc) == created
    finally:
        db.engine_of(Session).dispose()


def test_urls_and_in_memory_database(tmp_path, monkeypatch):
    assert db.normalize_url(tmp_path / "x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert db.normalize_url("sqlite:///rel.db") == "sqlite:///rel.db"
    assert db.normalize_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert db.normalize_url("postgres://u@h:5/d") == "postgresql+psycopg://u@h:5/d"
    assert db.normalize_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    monkeypatch.delenv(db.ENV_VAR, raising=False)
    assert db.default_url() == "sqlite:///feedback.db"
    monkeypatch.setenv(db.ENV_VAR, "sqlite:///elsewhere.db")
    assert db.default_url() == "sqlite:///elsewhere.db"
    Session = db.connect("sqlite://")  # one shared in-memory database, migrated
    with Session() as s:
        s.add(Project(name="mem"))
        s.commit()
    with Session() as s:
        assert s.query(Project).one().name == "mem"
    db.engine_of(Session).dispose()


def test_concurrent_first_migrations_do_not_collide(tmp_path):
    """Several app processes starting at once on a fresh database: one migrates, the others wait and find head."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, url, str(PACKAGE)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _out, err in outputs]
    assert [out.strip() for out, _err in outputs] == ["0003"] * 3
    engine = db.make_engine(url)
    try:
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_migrations_in_threads_are_serialised(tmp_path):
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(db.migrate(url))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == ["0003"] * 3
