"""Fixtures shared by the feedback tests: a migrated SQLite store in the test's temp folder."""

import pytest

from rlhfkit.feedback import db


@pytest.fixture
def Session(tmp_path):
    """A session factory on a fresh, migrated SQLite file (test_postgres.py overrides it with PostgreSQL)."""
    factory = db.connect(tmp_path / "feedback.db")
    yield factory
    db.engine_of(factory).dispose()


@pytest.fixture
def s(Session):
    with Session() as session:
        yield session
