"""The test PostgreSQL server (started by scripts/with_test_services.sh) and throwaway databases on it."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from rlhfkit.feedback import db


def postgres_server() -> str:
    """``RLHFKIT_TEST_POSTGRES_URL``, normalised; skips the test without it, unless
    ``RLHFKIT_REQUIRE_POSTGRES=1`` (CI sets it): then a missing server is a failure."""
    url = os.environ.get("RLHFKIT_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("RLHFKIT_REQUIRE_POSTGRES") == "1":
            pytest.fail("RLHFKIT_REQUIRE_POSTGRES=1 but RLHFKIT_TEST_POSTGRES_URL is not set; start a server with "
                        "url=$(scripts/start_postgres.sh) and export RLHFKIT_TEST_POSTGRES_URL=$url")
        pytest.skip("RLHFKIT_TEST_POSTGRES_URL is not set (url=$(scripts/start_postgres.sh) starts a server)")
    return db.normalize_url(url)


@contextlib.contextmanager
def scratch_database(server: str, prefix: str):
    """The URL of a new, empty database on ``server``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
