"""Team features, the store side: membership and invite links, archiving and editing a project, skip /
discard / comment, the "x of N" count, no runs of one prompt, and the admin's item review."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rlhfkit.feedback import service as sv
from rlhfkit.feedback import team
from rlhfkit.feedback.errors import FeedbackError
from rlhfkit.feedback.review import item_agreement, letter

from .scenario import run_invite_race, run_team, status_of

ROWS = [{"prompt": f"prompt {i}", "responses": [f"answer {i}a", f"answer {i}b", f"answer {i}c"]} for i in range(4)]


@pytest.fixture
def team_env(s):
    project = sv.create_project(s, "team", per_item=2, gold_rate=0.0)
    sv.import_records(s, project, ROWS, kinds=("rating", "pair"))
    people = {name: sv.add_annotator(s, name, admin=name == "ada")[0] for name in ("ada", "bob", "cy")}
    return project, people


def _answer(s, who, a, first_wins: bool = True):
    view = sv.assignment_view(s, who, a)
    ids = [r["id"] for r in view["responses"]]
    if view["kind"] == "rating":
        low, high = view["scale"]
        return sv.submit_rating(s, who, a.id, {rid: (high if (i == 0) == first_wins else low)
                                               for i, rid in enumerate(ids)})
    return sv.submit_comparison(s, who, a.id, "left" if first_wins else "right", 2)


# ------------------------------------------------------------------------------------------ membership

def test_members_only_projects_are_hidden_and_refused_for_non_members(s, team_env):
    project, p = team_env
    assert [x.name for x in sv.visible_projects(s, p["bob"])] == ["team"]  # open to all by default
    sv.update_project(s, project, members_only=True)
    assert sv.visible_projects(s, p["bob"]) == []
    assert status_of(lambda: sv.next_assignment(s, project, p["bob"])) == 403
    assert [x.name for x in sv.visible_projects(s, p["ada"])] == ["team"]  # admins see every project
    assert sv.add_member(s, project, "bob") is True and sv.add_member(s, project, "bob") is False
    assert [m.name for m in sv.members(s, project)] == ["bob"]
    a = sv.next_assignment(s, project, p["bob"])
    assert a is not None
    assert sv.remove_member(s, project, "bob") is True
    assert status_of(lambda: _answer(s, p["bob"], a)) in (403, 404)  # the open item was released
    assert sv.progress(s, project)["assignments"]["open"] == 0


def test_an_invite_link_adds_a_newcomer_or_a_signed_in_annotator_and_honours_its_limits(s, team_env, monkeypatch):
    project, p = team_env
    sv.update_project(s, project, members_only=True)
    invite, code = sv.create_invite(s, project, note="for the interns", max_uses=2, days=7)
    assert invite.code_hash != code and len(code) >= 20  # only the hash is kept
    newcomer, token, joined = sv.redeem_invite(s, code, name="dee")
    assert joined.id == project.id and token and sv.authenticate(s, token).id == newcomer.id
    assert [x.name for x in sv.visible_projects(s, newcomer)] == ["team"]
    sv.redeem_invite(s, code, annotator=p["bob"])
    assert sv.redeem_invite(s, code, annotator=p["bob"])[2].id == project.id  # a member again: no use counted
    assert status_of(lambda: sv.redeem_invite(s, code, annotator=p["cy"])) == 410  # used up (2 of 2)
    assert sv.invite_state(sv.list_invites(s, project)[0]) == "used up"
    other, code2 = sv.create_invite(s, project, days=1)
    assert status_of(lambda: sv.redeem_invite(s, code2, name="bob")) == 409  # the name is taken
    monkeypatch.setattr(team, "utcnow", lambda: other.expires_at + timedelta(seconds=1))
    assert status_of(lambda: sv.find_invite(s, code2)) == 410  # expired
    monkeypatch.undo()
    sv.revoke_invite(s, project, other.id)
    assert "revoked" in str(pytest.raises(FeedbackError, sv.find_invite, s, code2).value)
    assert status_of(lambda: sv.find_invite(s, "not-a-real-code-at-all")) == 404
    assert status_of(lambda: sv.create_invite(s, project, days=0)) == 422
    assert status_of(lambda: sv.create_invite(s, project, max_uses=0)) == 422


def test_archiving_hides_a_project_releases_open_items_and_restoring_brings_it_back(s, team_env):
    project, p = team_env
    sv.next_assignment(s, project, p["bob"])
    sv.set_archived(s, project, True)
    assert sv.visible_projects(s, p["bob"]) == [] and sv.visible_projects(s, p["ada"]) == []
    assert sv.progress(s, project)["assignments"]["open"] == 0
    assert "archived" in str(pytest.raises(FeedbackError, sv.next_assignment, s, project, p["bob"]).value)
    assert status_of(lambda: sv.redeem_invite(s, sv.create_invite(s, project)[1], annotator=p["cy"])) == 409
    sv.set_archived(s, project, False)
    assert sv.next_assignment(s, project, p["bob"]) is not None


def test_editing_a_project_checks_every_setting_like_creating_one(s, team_env):
    project, _ = team_env
    sv.update_project(s, project, name="team two", per_item=3, gold_rate=0.2, instructions="Be kind.",
                      timeout_minutes=45)
    again = sv.get_project(s, "team two")
    assert (again.per_item, again.gold_rate, again.instructions, again.timeout_minutes) == (3, 0.2, "Be kind.", 45)
    sv.create_project(s, "other")
    assert status_of(lambda: sv.update_project(s, project, name="other")) == 409
    assert status_of(lambda: sv.update_project(s, project, per_item=0)) == 422
    assert status_of(lambda: sv.update_project(s, project, gold_rate=1.0)) == 422
    assert status_of(lambda: sv.update_project(s, project, name="12")) == 422
    assert sv.get_project(s, project.id).per_item == 3  # refused edits changed nothing


# ------------------------------------------------------------------------------------------ annotator side

def test_skip_and_discard_hand_the_item_to_someone_else_and_never_back(s, team_env):
    project, p = team_env
    first = sv.next_assignment(s, project, p["bob"])
    item = first.item_id
    sv.skip_assignment(s, p["bob"], first.id)
    second = sv.next_assignment(s, project, p["bob"])
    assert second.item_id != item
    assert status_of(lambda: sv.skip_assignment(s, p["bob"], second.id, "discard", "  ")) == 422  # reason needed
    sv.skip_assignment(s, p["bob"], second.id, "discard", "the answers are cut off")
    served = []
    while (a := sv.next_assignment(s, project, p["bob"])) is not None:
        served.append(a.item_id)
        _answer(s, p["bob"], a)
    assert item not in served and second.item_id not in served
    assert sv.next_assignment(s, project, p["cy"]).item_id == item  # still needs two others
    done = sv.next_assignment(s, project, p["cy"])
    _answer(s, p["cy"], done)
    assert status_of(lambda: sv.skip_assignment(s, p["cy"], done.id)) == 409  # submitted: edit, not skip
    assert status_of(lambda: sv.skip_assignment(s, p["bob"], done.id)) == 403  # not his
    review = sv.item_review(s, second.item_id)
    assert review["skips"] == [{"annotator": "bob", "kind": "discard", "reason": "the answers are cut off"}]
    assert [r.item_id for r in sv.browse_items(s, project, status="discarded")["rows"]] == [second.item_id]


def test_a_comment_is_kept_with_the_judgement_changed_on_resubmit_and_cleared_by_empty_text(s, team_env):
    project, p = team_env
    a = sv.next_assignment(s, project, p["bob"])
    ids = a.item.response_ids
    payload = {"scores": {rid: 2 for rid in ids}} if a.item.kind == "rating" else {"winner": "tie"}
    sv.submit_judgement(s, p["bob"], a.id, {**payload, "comment": "  both fine  "})
    assert sv.assignment_view(s, p["bob"], a.id)["comment"] == "both fine"
    sv.submit_judgement(s, p["bob"], a.id, payload, resubmit=True)  # no comment key: kept
    assert sv.assignment_view(s, p["bob"], a.id)["comment"] == "both fine"
    sv.submit_judgement(s, p["bob"], a.id, {**payload, "comment": ""}, resubmit=True)
    assert sv.assignment_view(s, p["bob"], a.id)["comment"] == ""
    assert status_of(lambda: sv.submit_judgement(s, p["bob"], a.id, {**payload, "comment": 5}, resubmit=True)) == 422
    assert sv.item_review(s, a.item_id)["judgements"][0]["comment"] == ""


def test_x_of_n_counts_done_open_and_waiting_items_and_ends_equal(s, team_env):
    project, p = team_env
    n_items = 4 * (1 + 3)  # per prompt: one rating item and three pairs
    assert sv.queue_position(s, project, p["bob"]) == {"done": 0, "total": n_items}
    for k in range(1, n_items + 1):
        _answer(s, p["bob"], sv.next_assignment(s, project, p["bob"]))
        assert sv.queue_position(s, project, p["bob"]) == {"done": k, "total": n_items}
    sv.skip_assignment(s, p["cy"], sv.next_assignment(s, project, p["cy"]).id)
    assert sv.queue_position(s, project, p["cy"]) == {"done": 0, "total": n_items - 1}


def test_the_queue_does_not_serve_one_prompt_many_times_in_a_row(s, team_env):
    project, p = team_env
    prompts = []
    while (a := sv.next_assignment(s, project, p["bob"])) is not None:
        prompts.append(a.item.prompt_id)
        _answer(s, p["bob"], a)
    assert len(prompts) == 16
    longest = max(len(run) for run in _runs(prompts))
    # Naive order (by item id) would be 4 in a row; with 4 prompts x 4 items, rotation keeps runs at 1
    # until the end of the queue.
    assert longest == 1, prompts
    assert sorted(prompts) == sorted(sorted(set(prompts)) * 4)


def _runs(values: list) -> list[list]:
    runs: list[list] = []
    for v in values:
        if runs and runs[-1][-1] == v:
            runs[-1].append(v)
        else:
            runs.append([v])
    return runs


# ------------------------------------------------------------------------------------------ review

def test_item_agreement_hand_cases():
    def pair(w):
        return {"winner": w}

    assert item_agreement("pair", [pair("a")], (1, 3)) == "single"
    assert item_agreement("pair", [pair("a"), pair("a")], (1, 3)) == "agree"
    assert item_agreement("pair", [pair("a"), pair("tie")], (1, 3)) == "disagree"
    assert item_agreement("ranking", [{"order": [2, 1, 3]}, {"order": [2, 3, 1]}], (1, 3)) == "agree"
    assert item_agreement("ranking", [{"order": [2, 1, 3]}, {"order": [1, 2, 3]}], (1, 3)) == "disagree"
    r = lambda *scores: {"scores": {10 + i: v for i, v in enumerate(scores)}}  # noqa: E731
    assert item_agreement("rating", [r(1, 2), r(2, 3)], (1, 3)) == "agree"     # spans of 1 <= half of 2
    assert item_agreement("rating", [r(1, 2), r(3, 2)], (1, 3)) == "disagree"  # 1 vs 3
    assert item_agreement("rating", [r(1), r(5)], (1, 10)) == "agree"          # 4 <= 4.5
    assert item_agreement("rating", [r(1), r(6)], (1, 10)) == "disagree"
    assert [letter(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]


def test_browse_filters_and_the_review_names_responses_by_letter_for_everyone(s, team_env):
    project, p = team_env
    while (a := sv.next_assignment(s, project, p["bob"])) is not None:
        _answer(s, p["bob"], a, first_wins=True)
    while (a := sv.next_assignment(s, project, p["cy"])) is not None:
        _answer(s, p["cy"], a, first_wins=False)  # the opposite of bob wherever both saw the same order
    everything = sv.browse_items(s, project, per_page=200)
    assert everything["total"] == 16 and {r.status(2) for r in everything["rows"]} == {"complete"}
    pairs = sv.browse_items(s, project, kind="pair")["rows"]
    assert len(pairs) == 12 and all(r.kind == "pair" for r in pairs)
    split = sv.browse_items(s, project, agreement="disagree")
    agree = sv.browse_items(s, project, agreement="agree")
    assert split["total"] + agree["total"] == 16 and split["total"] > 0
    for row in split["rows"]:
        assert item_agreement(row.kind, row.judgements, (1, 3)) == "disagree"
    assert sv.browse_items(s, project, annotator="cy")["total"] == 16
    assert sv.browse_items(s, project, annotator="nobody")["total"] == 0
    assert sv.browse_items(s, project, gold=True)["total"] == 0
    paged = sv.browse_items(s, project, per_page=5, page=4)
    assert (paged["pages"], len(paged["rows"])) == (4, 1)
    assert status_of(lambda: sv.browse_items(s, project, status="nope")) == 422
    review = sv.item_review(s, split["rows"][0].item_id)
    labels = [r["label"] for r in review["responses"]]
    assert labels == sorted(labels) and review["agreement"] == "disagree"
    assert {j["annotator"] for j in review["judgements"]} == {"bob", "cy"}
    for j in review["judgements"]:
        assert sorted(j["shown"].split()) == labels  # the order each one saw, in the same letters
    assert status_of(lambda: sv.item_review(s, split["rows"][0].item_id, sv.create_project(s, "x"))) == 404


def test_the_team_scenario_on_sqlite(Session):
    run_team(Session)  # test_postgres.py runs it on PostgreSQL


def test_a_one_use_invite_link_admits_one_of_many_at_once(Session):
    run_invite_race(Session)
