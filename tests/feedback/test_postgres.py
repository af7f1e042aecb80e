"""The feedback store on a real PostgreSQL server: the SQLite scenarios, migrations and races again.

Needs ``RLHFKIT_TEST_POSTGRES_URL`` (a role allowed to create databases; each test gets a
fresh database, dropped afterwards). Locally:

    url=$(scripts/start_postgres.sh)
    RLHFKIT_TEST_POSTGRES_URL=$url .venv/bin/pytest tests/feedback/test_postgres.py
    scripts/stop_postgres.sh "$url"

Skipped without the URL, unless ``RLHFKIT_REQUIRE_POSTGRES=1`` (CI sets it): then a missing
server is a failure, not a silent skip.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhfkit.cli import main
from rlhfkit.feedback import db
from rlhfkit.feedback import service as sv

from .pg import postgres_server, scratch_database
from .scenario import (MIGRATE, PACKAGE, run_failed_writes_leave_nothing, run_kill, run_races, run_scenario,
                       run_invite_race, run_team, run_upgrade_from_0001, schema_diff)


@pytest.fixture(scope="module")
def server() -> str:
    return postgres_server()


@pytest.fixture
def url(server):
    """A fresh, empty database on the server for one test."""
    with scratch_database(server, "rlhfkit_test") as url:
        yield url


@pytest.fixture
def Session(url):
    factory = db.connect(url)
    assert db.engine_of(factory).dialect.name == "postgresql"
    yield factory
    db.engine_of(factory).dispose()


def test_migrations_build_exactly_the_models(url):
    engine = db.make_engine(url)
    try:
        assert db.migrate(engine) == "0003" and db.migrate(engine) == "0003"
        assert schema_diff(engine) == []
        assert db.downgrade(engine, "base") == ""
        assert db.migrate(engine) == "0003" and schema_diff(engine) == []
    finally:
        engine.dispose()


def test_a_first_release_database_upgrades_to_64_bit_ids_with_its_data(url):
    run_upgrade_from_0001(url)


def test_concurrent_first_migrations_take_turns(url):
    """Three processes migrate one fresh database at once: the advisory lock makes them take turns."""
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, url, str(PACKAGE)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _out, err in outputs]
    assert [out.strip() for out, _err in outputs] == ["0003"] * 3


def test_scenario(Session):
    run_scenario(Session)


def test_team_features(Session):
    run_team(Session)


def test_a_one_use_invite_link_admits_one_of_many_at_once(Session):
    run_invite_race(Session)


def test_failed_writes_leave_no_partial_rows(Session):
    run_failed_writes_leave_nothing(Session)


def test_concurrent_assignment_and_double_submission(Session):
    run_races(Session, n=6)


def test_killed_client_keeps_committed_judgements(url):
    run_kill(url)


def test_json_and_timestamps_round_trip(Session):
    with Session() as s:
        project = sv.create_project(s, "types", gold_rate=0.0, per_item=1)
        prompt = sv.add_prompt(s, project, "q", meta={"messages": [{"role": "user", "content": "q"}], "n": 1.5})
        ids = [sv.add_response(s, prompt, t).id for t in ("a", "b", "c")]
        sv.add_item(s, project, "ranking", ids, gold_answer=[ids[2], ids[0], ids[1]])
    with Session() as s:
        item = sv.get_item(s, 1)
        assert item.gold_answer == [ids[2], ids[0], ids[1]] and item.prompt.meta["n"] == 1.5
        assert item.created_at.utcoffset().total_seconds() == 0


def test_cli_against_postgres(url, tmp_path, capsys):
    assert main(["feedback", "init", "--db", url]) == 0
    assert "***" in capsys.readouterr().out  # the password is not printed
    assert main(["feedback", "project", "create", "pg", "--db", url]) == 0
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "p", "responses": ["a", "b", "c"]}) + "\n")
    assert main(["feedback", "import", "--project", "pg", str(tmp_path / "rows.jsonl"), "--kind", "ranking",
                 "--db", url]) == 0
    capsys.readouterr()
    assert main(["feedback", "progress", "--project", "pg", "--db", url]) == 0
    assert json.loads(capsys.readouterr().out)["items_by_kind"]["ranking"] == 1
