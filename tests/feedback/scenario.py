"""Service scenarios shared by the SQLite tests (test_service.py) and the PostgreSQL tests
(test_postgres.py): the same assertions must hold on both backends."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text

from rlhfkit.feedback import db
from rlhfkit.feedback import service as sv
from rlhfkit.feedback.errors import FeedbackError
from rlhfkit.feedback.store import Assignment, Base, Comparison, Item, Rating

PACKAGE = Path(__file__).resolve().parents[2] / "rlhfkit"

# A script that migrates the database sys.argv[1] with the package folder sys.argv[2]. It waits
# 0.2 s before each migration's step, which widens the window a concurrent process could slip
# into if the lock were released between migrations (it was, on SQLite, until the whole upgrade
# became one locked transaction: 3 of 3 runs of three processes then failed with "duplicate column").
MIGRATE = """
import sys, time, types
from alembic.runtime.migration import MigrationContext
_begin = MigrationContext.begin_transaction
def _slow_begin(self, _per_migration=False):
    if _per_migration:
        time.sleep(0.2)
    return _begin(self, _per_migration)
MigrationContext.begin_transaction = _slow_begin
sys.modules["rlhfkit"] = types.ModuleType("rlhfkit")  # skip rlhfkit/__init__ (torch): seconds per process
sys.modules["rlhfkit"].__path__ = [sys.argv[2]]
from rlhfkit.feedback import db
print(db.migrate(sys.argv[1]))
"""


def schema_diff(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


ROWS = [
    {"prompt": "Name a colour.", "responses": ["red", "blue", "green"], "policy": "sft"},
    {"prompt": "Say hi.", "chosen": "Hello there!", "rejected": "go away", "gold_winner": "chosen"},
]


def status_of(call) -> int:
    with pytest.raises(FeedbackError) as info:
        call()
    return info.value.status


def judge(s, annotator, assignment_id: int, side: str = "left") -> None:
    """Submit a valid judgement of any kind: all scores 2, the ``side`` response wins, the shown order reversed."""
    view = sv.assignment_view(s, annotator, assignment_id)
    ids = [r["id"] for r in view["responses"]]
    payload = {"rating": {"scores": {i: 2 for i in ids}}, "pair": {"winner": side, "strength": 2},
               "ranking": {"order": ids[::-1]}}[view["kind"]]
    sv.submit_judgement(s, annotator, assignment_id, payload)


def run_scenario(Session) -> None:
    """Two annotators work through a project of all three kinds; every rule of the service is exercised."""
    with Session() as s:
        project = sv.create_project(s, "scenario", scale=(1, 3), per_item=2, gold_rate=0.5)
        ada, ada_token = sv.add_annotator(s, "ada")
        bob, _ = sv.add_annotator(s, "bob")
        cy, _ = sv.add_annotator(s, "cy", admin=True)
        assert sv.authenticate(s, ada_token).id == ada.id
        summary = sv.import_records(s, project, ROWS, kinds=("rating", "pair", "ranking"))
        # prompt 1: 1 rating + 3 pairs + 1 ranking; prompt 2: 1 rating + 1 pair + 1 ranking
        assert summary["items_created"] == {"rating": 2, "pair": 4, "ranking": 2}
        assert sv.import_records(s, project, ROWS, kinds=("pair",))["items_existing"] == 4

    with Session() as s:
        done: dict[str, list[int]] = {"ada": [], "bob": [], "cy": []}
        for who in (ada, bob, cy):
            while (a := sv.next_assignment(s, "scenario", who)) is not None:
                assert sv.next_assignment(s, "scenario", who).id == a.id  # an open one is served again
                judge(s, who, a.id, side="right" if who is bob else "left")
                done[who.name].append(a.item_id)
        # each of the 7 regular items went to exactly per_item=2 distinct annotators, never twice to one;
        # the gold pair ("Say hi.") is mixed in by chance (seeded, so the same on every backend) and
        # never served once the real work is gone: cy, coming last, gets nothing
        gold_id = s.scalar(select(Item.id).where(Item.is_gold.is_(True)))
        for name in ("ada", "bob"):
            assert len(done[name]) == len(set(done[name])) == 7 + (gold_id in done[name])
        assert gold_id in done["ada"] + done["bob"] and done["cy"] == []
        n_done = len(done["ada"]) + len(done["bob"])
        first = sv.my_judgements(s, "scenario", ada)
        assert len(first) == len(done["ada"]) and all(j["judgement"] is not None for j in first)
        assert all("gold" not in key for j in first for key in j)
        assert {j["assignment_id"] for j in first}.isdisjoint({j["assignment_id"]
                                                               for j in sv.my_judgements(s, "scenario", bob)})
        ada_pair = next(j for j in first if j["kind"] == "pair")
        ada_rating = next(j for j in first if j["kind"] == "rating")
        aid = ada_pair["assignment_id"]

        # bob may neither read, submit, nor change ada's judgement; the checks come before any detail
        assert status_of(lambda: sv.assignment_view(s, bob, aid)) == 403
        assert status_of(lambda: sv.submit_comparison(s, bob, aid, "left")) == 403
        assert status_of(lambda: sv.update_judgement(s, bob, aid, {"winner": "tie"})) == 403
        assert status_of(lambda: sv.submit_comparison(s, ada, 10_000, "left")) == 404
        assert status_of(lambda: sv.submit_comparison(s, ada, aid, "left")) == 409  # no double submission
        assert status_of(lambda: sv.submit_rating(s, ada, aid, {1: 2})) == 400  # wrong kind
        # a refused change leaves the stored judgement exactly as it was
        rid = ada_rating["assignment_id"]
        ids = [r["id"] for r in ada_rating["responses"]]
        bad = {ids[0]: 3, **{i: 9 for i in ids[1:]}}
        assert status_of(lambda: sv.update_judgement(s, ada, rid, {"scores": bad})) == 422
        assert sv.assignment_view(s, ada, rid)["judgement"]["scores"] == {i: 2 for i in ids}

        # ada changes her own pair judgement to a tie, explicitly
        sv.update_judgement(s, ada, aid, {"winner": "tie"})
        assert sv.assignment_view(s, ada, aid)["judgement"]["winner"] == "tie"

        progress = sv.progress(s, "scenario")
        assert progress["items"] == 8 and progress["gold_items"] == 1 and progress["items_complete"] == 7
        assert progress["assignments"] == {"open": 0, "done": n_done}
        assert {p["name"]: p["done"] for p in progress["annotators"]} == {"ada": len(done["ada"]),
                                                                          "bob": len(done["bob"])}

        data = sv.collect(s, "scenario")
        n_gold = n_done - 14
        assert len(data.ratings) == 2 * (3 + 2) and len(data.pairs) == 6 + n_gold and len(data.rankings) == 4
        assert data.annotators == ["ada", "bob"]
        for obs in data.pairs:
            assert obs.a < obs.b and obs.left in (obs.a, obs.b)
            if obs.annotator == "bob":  # bob always chose the response shown on the right
                assert obs.winner == ("b" if obs.left == obs.a else "a")
        assert sum(o.winner == "tie" for o in data.pairs) == 1
        gold = [o for o in data.pairs if o.is_gold]  # "Say hi.": chosen wins
        assert len(gold) == n_gold >= 1 and {o.gold_winner for o in gold} <= {"a", "b"}
        hello = next(r.id for r in data.responses.values() if r.text == "Hello there!")
        assert all((o.a if o.gold_winner == "a" else o.b) == hello for o in gold)
        for obs in data.rankings:
            assert sorted(obs.order) == sorted(obs.shown)


def run_failed_writes_leave_nothing(Session) -> None:
    """A refused import or judgement writes no row at all (one transaction per call)."""
    with Session() as s:
        project = sv.create_project(s, "atomic", per_item=1, gold_rate=0.0)
        ann, _ = sv.add_annotator(s, "solo")
        rows = [{"prompt": "p1", "response": "r1"}, {"prompt": "p2", "response": "r2"}, {"prompt": "p3"}]
        with pytest.raises(FeedbackError, match="row 3") as info:
            sv.import_records(s, project, rows)
        assert info.value.status == 422
        assert sv.progress(s, project)["items"] == 0
        assert sv.import_records(s, project, rows[:1] + [{"prompt": "p1", "response": "r2"}])["items_created"] == \
            {"rating": 1}
        a = sv.next_assignment(s, project, ann)
        ids = sorted(a.shown)
        assert status_of(lambda: sv.submit_rating(s, ann, a.id, {ids[0]: 2, ids[1]: 4})) == 422
        assert status_of(lambda: sv.submit_rating(s, ann, a.id, {ids[0]: 2})) == 422
        assert s.scalar(select(func.count(Rating.id))) == 0
        assert s.get(Assignment, a.id).status == "open"
        sv.submit_rating(s, ann, a.id, {ids[0]: 2, ids[1]: 3})
        assert s.scalar(select(func.count(Rating.id))) == 2


def _threads(target, n: int) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as err:  # noqa: BLE001 - collected and inspected by the caller
            results[i] = err

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def run_races(Session, n: int = 4) -> None:
    """Concurrent requests: an item with per_item=1 goes to exactly one of ``n`` annotators at once,
    and of ``n`` simultaneous submissions of one assignment exactly one is stored (the rest: 409)."""
    with Session() as s:
        project = sv.create_project(s, "race", per_item=1, gold_rate=0.0)
        people = [sv.add_annotator(s, f"racer{i}")[0] for i in range(n)]
        sv.import_records(s, project, [{"prompt": "only", "response": "one"}])

    def ask(i: int):
        with Session() as s:
            a = sv.next_assignment(s, "race", people[i])
            return None if a is None else (a.id, a.shown[0])

    got = _threads(ask, n)
    assert not any(isinstance(g, Exception) for g in got), got
    assert sum(g is not None for g in got) == 1
    winner = next(i for i, g in enumerate(got) if g is not None)

    def submit(i: int):
        with Session() as s:
            assignment_id, response_id = got[winner]
            return sv.submit_rating(s, people[winner], assignment_id, {str(response_id): 3}).id

    results = _threads(submit, n)
    refused = [r for r in results if isinstance(r, FeedbackError)]
    assert sum(isinstance(r, int) for r in results) == 1, results
    assert len(refused) == n - 1 and {r.status for r in refused} == {409}, results
    with Session() as s:
        item = s.scalar(select(Item).where(Item.project_id == sv.get_project(s, "race").id))
        assert len(item.assignments) == 1 and len(item.assignments[0].ratings) == 1

    # n annotators drain a queue of 40 items together: still exactly per_item=1 assignment each
    # (without the project lock in next_assignment PostgreSQL hands out about twice as many)
    with Session() as s:
        sv.create_project(s, "drain", per_item=1, gold_rate=0.0)
        sv.import_records(s, "drain", [{"prompt": f"q{i}", "response": "r"} for i in range(40)])

    def drain(i: int) -> int:
        count = 0
        with Session() as s:
            while (a := sv.next_assignment(s, "drain", people[i])) is not None:
                sv.submit_rating(s, people[i], a.id, {a.shown[0]: 1})
                count += 1
        return count

    counts = _threads(drain, n)
    assert not any(isinstance(c, Exception) for c in counts), counts
    assert sum(counts) == 40
    with Session() as s:
        per_item = s.execute(select(Assignment.item_id, func.count(Assignment.id)).join(Item)
                             .where(Item.project_id == sv.get_project(s, "drain").id)
                             .group_by(Assignment.item_id)).all()
        assert len(per_item) == 40 and {n for _item, n in per_item} == {1}


_SUBMIT_THEN_WAIT = """
import sys, time, types
# Skip rlhfkit/__init__.py (it imports torch and transformers, seconds per process): the
# store needs only the feedback subpackage.
sys.modules["rlhfkit"] = types.ModuleType("rlhfkit")
sys.modules["rlhfkit"].__path__ = [sys.argv[3]]
from rlhfkit.feedback import db, service as sv
Session = db.connect(sys.argv[1])
with Session() as s:
    ann = sv.get_annotator(s, "ann")
    a = sv.next_assignment(s, "kill", ann)
    if sys.argv[2] == "submit":
        sv.submit_comparison(s, ann, a.id, "right", 2)
        print("submitted", flush=True)
    else:
        with sv.atomic(s):
            sv.submit_comparison(s, ann, a.id, "right", 2)
            print("inside", flush=True)
            time.sleep(60)
    time.sleep(60)
"""


def _run_and_kill(url: str, mode: str) -> None:
    """Run the script above and SIGKILL it once it says it got to ``mode``'s point."""
    proc = subprocess.Popen([sys.executable, "-c", _SUBMIT_THEN_WAIT, url, mode, str(PACKAGE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line in ("submitted", "inside"), proc.stderr.read() if proc.poll() is not None else line
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def run_kill(url: str) -> None:
    """A process SIGKILLed right after ``submit_*`` returned keeps the judgement; one killed inside
    an uncommitted transaction leaves nothing, and its assignment can be finished later."""
    Session = db.connect(url)
    with Session() as s:
        project = sv.create_project(s, "kill", per_item=1, gold_rate=0.0)
        sv.add_annotator(s, "ann")
        sv.import_records(s, project, [{"prompt": "q", "responses": ["x", "y"]},
                                       {"prompt": "w", "responses": ["u", "v"]}], kinds=("pair",))
    db.engine_of(Session).dispose()
    _run_and_kill(url, "submit")
    _run_and_kill(url, "hold")
    Session = db.connect(url)
    try:
        with Session() as s:
            done = s.scalars(select(Assignment).where(Assignment.status == "done")).all()
            assert len(done) == 1 and done[0].comparison.strength == 2
            assert s.scalar(select(func.count(Comparison.id))) == 1
            ann = sv.get_annotator(s, "ann")
            a = sv.next_assignment(s, "kill", ann)
            assert a is not None and a.status == "open" and a.id != done[0].id
            sv.submit_comparison(s, ann, a.id, "tie")
    finally:
        db.engine_of(Session).dispose()


def run_upgrade_from_0001(url: str) -> None:
    """A database made by the first release keeps its data through migration 0002: projects get the default
    30-minute timeout and ids (and the sequences behind them on PostgreSQL) run past 2^31."""
    engine = db.make_engine(url)
    try:
        assert db.migrate(engine, "0001") == "0001"
        old = db.connect(url, upgrade=False)
        with old() as s, s.begin():
            s.execute(text("INSERT INTO project (name, scale_min, scale_max, per_item, gold_rate, instructions, "
                           "created_at) VALUES ('old', 1, 3, 2, 0.1, '', CURRENT_TIMESTAMP)"))
        db.engine_of(old).dispose()
        assert db.migrate(engine) == "0003" and schema_diff(engine) == []
        Session = db.connect(url)
        with Session() as s:
            assert sv.get_project(s, "old").timeout_minutes == 30
            if engine.dialect.name == "postgresql":
                s.execute(text("SELECT setval('project_id_seq', 5000000000)"))
                s.commit()
            project = sv.create_project(s, "new")
            assert engine.dialect.name != "postgresql" or project.id == 5000000001
            assert sv.get_project(s, project.id).name == "new"
        db.engine_of(Session).dispose()
    finally:
        engine.dispose()


def run_team(Session) -> None:
    """The team store features on one backend: members-only access, an invite, skip and discard, a comment,
    "x of N", the item browser and review, archiving, and a generation job row marked interrupted."""
    from datetime import timedelta

    from rlhfkit.feedback import jobs
    from rlhfkit.feedback.store import GenerationJob

    with Session() as s:
        project = sv.create_project(s, "team", per_item=2, gold_rate=0.0, members_only=True)
        sv.import_records(s, project, [{"prompt": f"q{i}", "responses": [f"a{i}", f"b{i}"]} for i in range(3)],
                          kinds=("pair",))
        ann, bob = sv.add_annotator(s, "ann")[0], sv.add_annotator(s, "bob")[0]
        assert status_of(lambda: sv.next_assignment(s, project, ann)) == 403
        _, code = sv.create_invite(s, project, max_uses=5)
        sv.redeem_invite(s, code, annotator=ann)
        sv.add_member(s, project, bob)
        assert sv.queue_position(s, project, ann) == {"done": 0, "total": 3}
        first = sv.next_assignment(s, project, ann)
        sv.skip_assignment(s, ann, first.id, "discard", "broken")
        for who, winner in ((ann, "a"), (bob, "b")):
            while (a := sv.next_assignment(s, project, who)) is not None:
                sv.submit_comparison(s, who, a.id, winner, comment=f"{who.name} here")
        assert sv.queue_position(s, project, ann) == {"done": 2, "total": 2}
        split = sv.browse_items(s, project, agreement="disagree")
        assert split["total"] == 2 and sv.browse_items(s, project, status="discarded")["total"] == 1
        assert sv.browse_items(s, project, status="partial")["total"] == 1  # the discarded one: bob only
        review = sv.item_review(s, split["rows"][0].item_id)
        assert {j["comment"] for j in review["judgements"]} == {"ann here", "bob here"}
        sv.set_archived(s, project, True)
        assert sv.visible_projects(s, bob) == []
        with sv.atomic(s):
            s.add(GenerationJob(project_id=project.id, policy="p", status="running", done=1, total=4, message="",
                                created_at=jobs.STARTED - timedelta(minutes=1)))
        assert jobs.mark_interrupted(s, project) == 1
        assert jobs.project_jobs(s, project)[0].status == "failed"


def run_invite_race(Session, n: int = 6) -> None:
    """``n`` newcomers use a one-use invite link at the same moment: exactly one gets in."""
    with Session() as s:
        project = sv.create_project(s, "race-invite", members_only=True)
        _, code = sv.create_invite(s, project, max_uses=1)
    barrier, outcomes = threading.Barrier(n), []

    def join(i: int) -> None:
        with Session() as s:
            barrier.wait()
            try:
                sv.redeem_invite(s, code, name=f"new{i}")
                outcomes.append("in")
            except FeedbackError as err:
                outcomes.append(err.status)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes, key=str) == sorted(["in"] + [410] * (n - 1), key=str), outcomes
    with Session() as s:
        assert len(sv.members(s, "race-invite")) == 1 and sv.list_invites(s, "race-invite")[0].uses == 1
