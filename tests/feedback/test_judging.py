"""Assignment expiry: an item taken and never submitted goes to someone else after the
project's ``timeout_minutes``; a late answer is saved while the item still needs it, else refused
with a message. Time is a fake clock (``judging.utcnow``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rlhfkit.feedback import judging
from rlhfkit.feedback import service as sv
from rlhfkit.feedback.errors import FeedbackError
from rlhfkit.feedback.store import Assignment

ROWS = [{"prompt": f"prompt {i}", "response": f"response {i}"} for i in range(3)]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(judging, "utcnow", fake)
    return fake


def _project(s, per_item: int, timeout: int = 30):
    project = sv.create_project(s, f"p{per_item}", per_item=per_item, gold_rate=0.0, timeout_minutes=timeout)
    sv.import_records(s, project, ROWS, kinds=("rating",))
    ann, bob = sv.add_annotator(s, f"ann{per_item}")[0], sv.add_annotator(s, f"bob{per_item}")[0]
    return project, ann, bob


def _rate(s, who, a):
    return sv.submit_rating(s, who, a.id, {rid: 2 for rid in a.item.response_ids})


def test_an_untouched_assignment_holds_its_item_until_it_expires(s, clock):
    project, ann, bob = _project(s, per_item=1)
    first = sv.next_assignment(s, project, ann)
    clock.advance(29)
    assert sv.next_assignment(s, project, bob).item_id != first.item_id  # still ann's
    _rate(s, bob, sv.next_assignment(s, project, bob))
    clock.advance(2)  # 31 minutes: expired
    taken = sv.next_assignment(s, project, bob)
    assert taken.item_id == first.item_id
    assert sv.progress(s, project)["assignments"] == {"open": 2, "done": 1}


def test_a_late_answer_is_refused_when_the_item_went_to_someone_else(s, clock):
    project, ann, bob = _project(s, per_item=1)
    late = sv.next_assignment(s, project, ann)
    clock.advance(45)
    assert sv.next_assignment(s, project, bob).item_id == late.item_id
    with pytest.raises(FeedbackError, match=r"expired: it was not submitted within 30 minutes.*not saved") as err:
        _rate(s, ann, late)
    assert err.value.status == 409
    assert s.get(Assignment, late.id).status == "open" and not s.get(Assignment, late.id).ratings
    again = sv.next_assignment(s, project, ann)  # the stale assignment is dropped; ann gets other work
    assert again.item_id != late.item_id and s.get(Assignment, late.id) is None


def test_a_late_answer_is_saved_while_the_item_still_needs_it(s, clock):
    project, ann, bob = _project(s, per_item=2)
    late = sv.next_assignment(s, project, ann)
    clock.advance(60)
    assert sv.next_assignment(s, project, bob).item_id == late.item_id  # bob takes the second place
    done = _rate(s, ann, late)
    assert done.status == "done" and done.done_at == clock.now
    assert [r.score for r in done.ratings] == [2]


def test_coming_back_to_an_expired_item_that_is_still_free_renews_it(s, clock):
    project, ann, _bob = _project(s, per_item=1, timeout=5)
    first = sv.next_assignment(s, project, ann)
    clock.advance(10)
    again = sv.next_assignment(s, project, ann)
    assert again.id == first.id and again.assigned_at == clock.now  # the same item, a fresh 5 minutes
    assert _rate(s, ann, again).status == "done"


def test_the_timeout_is_a_validated_project_setting(s):
    assert sv.create_project(s, "default").timeout_minutes == 30
    for bad in (0, -5, 10 ** 9, "soon"):
        with pytest.raises(FeedbackError, match="timeout_minutes"):
            sv.create_project(s, f"bad{bad}", timeout_minutes=bad)
