"""The feedback service on SQLite: routing, validation, ownership, transactions, import, generation."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import func, select, text

from rlhfkit.feedback import service as sv
from rlhfkit.feedback.errors import FeedbackError
from rlhfkit.feedback.store import Assignment, Comparison, Item, Prompt, Response

from .scenario import run_failed_writes_leave_nothing, run_kill, run_races, run_scenario, status_of


def test_scenario_on_sqlite(Session):
    run_scenario(Session)


def test_failed_writes_leave_no_partial_rows(Session):
    run_failed_writes_leave_nothing(Session)


def test_concurrent_assignment_and_double_submission(Session):
    run_races(Session)


def test_tokens_are_stored_hashed_and_checked(s):
    ada, token = sv.add_annotator(s, "ada")
    row = s.execute(text("SELECT * FROM annotator")).mappings().one()
    assert token not in json.dumps({k: str(v) for k, v in row.items()})  # nowhere in plain text
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert len(token) >= 32
    for wrong in ("", "   ", None, token[:-1], token + "x", "x" * 5000):
        assert sv.authenticate(s, wrong) is None
    assert sv.authenticate(s, f" {token} ").id == ada.id
    new = sv.reset_token(s, "ada")
    assert sv.authenticate(s, token) is None and sv.authenticate(s, new).id == ada.id
    sv.set_annotator_active(s, "ada", False)
    assert sv.authenticate(s, new) is None
    assert status_of(lambda: sv.add_annotator(s, "ada")) == 409
    assert status_of(lambda: sv.add_annotator(s, " ")) == 422


def test_project_validation(s):
    sv.create_project(s, "ok-1", scale=(1, 5))
    assert status_of(lambda: sv.create_project(s, "ok-1")) == 409
    for kwargs in ({"name": "a/b"}, {"name": "123"}, {"name": ""}, {"name": "x", "scale": (3, 1)},
                   {"name": "x", "per_item": 0}, {"name": "x", "gold_rate": 1.0}, {"name": "x", "scale": (1, 2, 3)}):
        assert status_of(lambda: sv.create_project(s, **kwargs)) == 422, kwargs
    assert sv.get_project(s, "ok-1").id == sv.get_project(s, 1).id == 1
    assert status_of(lambda: sv.get_project(s, "nope")) == 404


def _project_with(s, rows, kinds=("rating",), **kwargs):
    project = sv.create_project(s, "p", **{"gold_rate": 0.0, "per_item": 1, **kwargs})
    sv.import_records(s, project, rows, kinds=kinds)
    return project


def test_validation_codes_for_judgements(s):
    project = _project_with(s, [{"prompt": "q", "responses": ["x", "y", "z"]}], kinds=("rating", "pair", "ranking"))
    ann, _ = sv.add_annotator(s, "ann")
    by_kind = {}
    while (a := sv.next_assignment(s, project, ann)) is not None:
        by_kind.setdefault(a.item.kind, a)
        if a.item.kind == "pair" and a.item.response_ids == [1, 2]:
            break
        sv.submit_ranking(s, ann, a.id, a.shown) if a.item.kind == "ranking" else \
            sv.submit_judgement(s, ann, a.id, {"scores": {i: 1 for i in a.shown}} if a.item.kind == "rating"
                                else {"winner": "tie"})
    rating = by_kind["rating"]
    assert rating.status == "done"
    pair = sv.next_assignment(s, project, ann)
    assert pair.item.kind == "pair" and pair.status == "open"
    for winner, strength in (("up", None), ("left", 4), ("left", "much"), (99, None), (True, None)):
        assert status_of(lambda: sv.submit_comparison(s, ann, pair.id, winner, strength)) == 422, (winner, strength)
    assert status_of(lambda: sv.submit_judgement(s, ann, pair.id, {"verdict": "a"})) == 422
    assert status_of(lambda: sv.submit_judgement(s, ann, pair.id, ["a"])) == 422
    assert status_of(lambda: sv.submit_ranking(s, ann, pair.id, [1, 2])) == 400
    assert status_of(lambda: sv.submit_comparison(s, ann, "abc", "left")) == 422
    assert s.scalar(select(func.count(Comparison.id)).where(Comparison.assignment_id == pair.id)) == 0
    sv.submit_comparison(s, ann, pair.id, "right", 3)
    stored = s.scalar(select(Comparison).where(Comparison.assignment_id == pair.id))
    right = pair.shown[1]
    assert stored.winner == ("a" if right == 1 else "b") and stored.left_response_id == pair.shown[0]
    assert stored.strength == 3
    # a tie drops the strength; the winner may also be named by id
    sv.update_judgement(s, ann, pair.id, {"winner": "tie", "strength": 2})
    assert s.get(Comparison, stored.id).strength is None
    sv.update_judgement(s, ann, pair.id, {"winner": 2})
    assert s.get(Comparison, stored.id).winner == "b"

    ids = rating.item.response_ids
    cases = [{ids[0]: 4, ids[1]: 1, ids[2]: 1}, {ids[0]: 0, ids[1]: 1, ids[2]: 1}, {ids[0]: 2.5, ids[1]: 1, ids[2]: 1},
             {ids[0]: True, ids[1]: 1, ids[2]: 1}, {ids[0]: "2", ids[1]: 1}, {**dict.fromkeys(ids, 1), 99: 1},
             {ids[0]: "two", ids[1]: 1, ids[2]: 1}, [1, 2, 3]]
    for scores in cases:
        assert status_of(lambda: sv.update_judgement(s, ann, rating.id, {"scores": scores})) == 422, scores
    sv.update_judgement(s, ann, rating.id, {"scores": {str(ids[0]): "3", ids[1]: 1.0, ids[2]: 2}})
    assert sv.assignment_view(s, ann, rating.id)["judgement"]["scores"] == {ids[0]: 3, ids[1]: 1, ids[2]: 2}


def test_ranking_must_be_a_permutation(s):
    project = _project_with(s, [{"prompt": "q", "responses": ["x", "y", "z"]}], kinds=("ranking",))
    ann, _ = sv.add_annotator(s, "ann")
    a = sv.next_assignment(s, project, ann)
    for order in ([1, 2], [1, 2, 2], [1, 2, 3, 4], [1, 2, 9], "123", 5):
        assert status_of(lambda: sv.submit_ranking(s, ann, a.id, order)) == 422, order
    sv.submit_ranking(s, ann, a.id, ["3", 1, 2])
    assert status_of(lambda: sv.submit_ranking(s, ann, a.id, [1, 2, 3])) == 409
    assert sv.collect(s, project).rankings[0].order == (3, 1, 2)


def test_routing_priority_fewest_and_never_twice(s):
    project = sv.create_project(s, "route", per_item=2, gold_rate=0.0)
    sv.import_records(s, project, [{"prompt": f"q{i}", "response": f"r{i}"} for i in range(4)])
    items = s.scalars(select(Item).order_by(Item.id)).all()
    assert sv.set_priorities(s, project, {items[2].id: 5.0}) == 1
    assert status_of(lambda: sv.set_priorities(s, project, {999: 1.0})) == 404
    people = [sv.add_annotator(s, f"a{i}")[0] for i in range(3)]
    first = sv.next_assignment(s, project, people[0])
    assert first.item_id == items[2].id  # highest priority first
    second = sv.next_assignment(s, project, people[1])
    assert second.item_id == items[2].id  # still under per_item=2
    third = sv.next_assignment(s, project, people[2])
    assert third.item_id == items[0].id  # item 2 is full; then the oldest
    sv.submit_rating(s, people[0], first.id, {first.shown[0]: 1})
    nxt = sv.next_assignment(s, project, people[0])
    assert nxt.item_id == items[1].id  # fewest assignments (item 0 already has one), then oldest
    seen = {first.item_id, nxt.item_id}
    sv.submit_rating(s, people[0], nxt.id, {nxt.shown[0]: 1})
    while (a := sv.next_assignment(s, project, people[0])) is not None:
        assert a.item_id not in seen
        seen.add(a.item_id)
        sv.submit_rating(s, people[0], a.id, {a.shown[0]: 1})
    assert len(seen) == 4
    # a deactivated annotator's open assignment is released for others
    sv.set_annotator_active(s, people[2], False)
    assert status_of(lambda: sv.next_assignment(s, project, people[2])) == 403
    assert s.get(Assignment, third.id) is None


def test_gold_items_are_mixed_in_unseen_and_display_order_is_shuffled(s):
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(30)]
    rows += [{"prompt": f"g{i}", "chosen": f"gold good {i}", "rejected": f"gold bad {i}", "gold_winner": "chosen"}
             for i in range(10)]
    project = sv.create_project(s, "gold", per_item=1, gold_rate=0.25)
    sv.import_records(s, project, rows, kinds=("pair",))
    ann, _ = sv.add_annotator(s, "ann")
    kinds, lefts = [], []
    while (a := sv.next_assignment(s, project, ann)) is not None:
        view = sv.assignment_view(s, ann, a.id)
        assert set(view) == {"assignment_id", "item_id", "project", "kind", "status", "prompt", "prompt_meta",
                             "responses", "scale", "instructions", "judgement", "comment", "assigned_at", "done_at"}
        assert all(set(r) == {"id", "text", "position"} for r in view["responses"])
        kinds.append(a.item.is_gold)
        lefts.append(a.shown[0] == a.item.response_ids[0])
        sv.submit_comparison(s, ann, a.id, "left")
    n_gold = sum(kinds)
    assert len(kinds) == 30 + n_gold and 3 <= n_gold <= 10  # ~25% of what was served
    assert not kinds[-1]  # gold is never served once the real work is done
    assert 0.2 < sum(lefts) / len(lefts) < 0.8  # positions are shuffled, not canonical
    # the shuffle is reproducible: seeded by item and annotator
    import random
    a = s.scalar(select(Assignment).order_by(Assignment.id))
    expected = list(a.item.response_ids)
    random.Random(f"shown:{a.item_id}:{ann.id}").shuffle(expected)
    assert a.shown == expected


def test_import_groups_dedupes_and_reads_gold(s):
    project = sv.create_project(s, "imp", scale=(1, 5))
    rows = [
        {"prompt": "a", "response": "x", "gold_score": 5, "policy": "m1"},
        {"prompt": "a", "response": "y", "gold_score": 2, "policy": "m2"},
        {"prompt": "a", "response": "x"},  # duplicate text: the same response
        {"prompt": [{"role": "user", "content": "hi"}], "responses": ["r1", "r2", "r3"], "gold_order": ["r2", 0, 2]},
        {"prompt": "c", "chosen": "c1", "rejected": "c2", "gold_winner": "tie"},
    ]
    summary = sv.import_records(s, project, rows, kinds=("rating", "pair", "ranking"))
    assert summary["prompts_created"] == 3 and summary["responses_created"] == 7
    assert summary["items_created"] == {"rating": 3, "pair": 5, "ranking": 3}
    resp = {r.text: r for r in s.scalars(select(Response))}
    assert resp["x"].policy == "m1" and resp["y"].policy == "m2"
    chat = s.scalar(select(Prompt).where(Prompt.text == "user: hi"))
    assert chat.meta == {"messages": [{"role": "user", "content": "hi"}]}
    gold = {(i.kind, tuple(i.response_ids)): i.gold_answer for i in s.scalars(select(Item)) if i.is_gold}
    x, y = resp["x"].id, resp["y"].id
    r1, r2, r3 = resp["r1"].id, resp["r2"].id, resp["r3"].id
    assert gold[("rating", (x, y))] == {str(x): 5, str(y): 2}
    assert gold[("pair", (x, y))] == "a"  # x scored higher and has the smaller id
    assert gold[("ranking", (r1, r2, r3))] == [r2, r1, r3]
    assert gold[("pair", (r1, r2))] == "b" and gold[("pair", (r1, r3))] == "a"
    assert gold[("pair", (resp["c1"].id, resp["c2"].id))] == "tie"
    assert ("rating", (r1, r2, r3)) not in gold
    again = sv.import_records(s, project, rows, kinds=("rating", "pair", "ranking"))
    assert again["prompts_created"] == again["responses_created"] == 0 and again["items_existing"] == 11


@pytest.mark.parametrize("row, message", [
    ({"response": "x"}, "row 2: field 'prompt'"),
    ({"prompt": "p"}, "row 2: needs 'response'"),
    ({"prompt": "p", "response": 3}, "row 2: field 'response' must hold text"),
    ({"prompt": "p", "responses": ["a", "a"]}, "row 2: field 'responses' repeats"),
    ({"prompt": "p", "response": "x", "gold_score": 9}, "row 2: gold_score 9 is outside"),
    ({"prompt": "p", "response": "x", "gold_winner": "chosen"}, "row 2: 'gold_winner' needs exactly two"),
    ({"prompt": "p", "responses": ["a", "b"], "gold_order": ["a"]}, "row 2: 'gold_order' must list all 2"),
    ({"prompt": "p", "responses": ["a", "b"], "gold_winner": "c"}, "row 2: gold_winner 'c' is neither"),
    ({"prompt": "p", "response": "x", "policy": 1}, "row 2: field 'policy'"),
    ({"prompt": "ok", "response": "z", "gold_score": 1}, "row 2: gold_score is given for 1 of the 3 responses"),
    ({"prompt": "ok", "chosen": "b", "rejected": "a", "gold_winner": "chosen"}, "row 2: its gold answer contradicts"),
])
def test_import_errors_name_row_and_field(s, row, message):
    project = sv.create_project(s, "bad")
    first = {"prompt": "ok", "responses": ["a", "b"], "gold_order": ["a", "b"]}
    with pytest.raises(FeedbackError, match=message.replace("(", r"\(")) as info:
        sv.import_records(s, project, [first, row], kinds=("rating", "pair"))
    assert info.value.status == 422
    assert s.scalar(select(func.count(Prompt.id))) == 0


def test_import_file_jsonl_and_csv(s, tmp_path):
    project = sv.create_project(s, "files")
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "responses": ["c", "d", "e"]}]))
    (tmp_path / "rows.csv").write_text('prompt,responses\nr,"[""f"", ""g""]"\n')
    assert sv.import_file(s, project, tmp_path / "rows.jsonl", kinds=("pair",))["items_created"] == {"pair": 4}
    assert sv.import_file(s, project, tmp_path / "rows.csv", kinds=("ranking",))["items_created"] == {"ranking": 1}
    with pytest.raises(FeedbackError, match="no such file"):
        sv.import_file(s, project, tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "response": "a"}\n\n{"prompt": "p"}\n')
    with pytest.raises(FeedbackError, match=r"bad.jsonl line 3: needs 'response'"):  # the file's line, blank included
        sv.import_file(s, project, tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text('prompt,response\nr,fine\nr,"  "\n')
    with pytest.raises(FeedbackError, match=r"bad.csv line 3: field 'response' holds an empty response"):
        sv.import_file(s, project, tmp_path / "bad.csv")


def test_add_item_validation(s):
    project = sv.create_project(s, "items", scale=(1, 3))
    other = sv.create_project(s, "other")
    p1, p2 = sv.add_prompt(s, project, "one"), sv.add_prompt(s, project, "two")
    r = [sv.add_response(s, p1, t) for t in ("a", "b", "c")] + [sv.add_response(s, p2, "d")]
    ids = [x.id for x in r]
    assert status_of(lambda: sv.add_item(s, project, "pair", ids[:3])) == 422
    assert status_of(lambda: sv.add_item(s, project, "ranking", ids[:1])) == 422
    assert status_of(lambda: sv.add_item(s, project, "rating", [])) == 422
    assert status_of(lambda: sv.add_item(s, project, "vote", ids[:1])) == 422
    assert status_of(lambda: sv.add_item(s, project, "pair", [ids[0], ids[3]])) == 422  # two prompts
    assert status_of(lambda: sv.add_item(s, other, "pair", ids[:2])) == 422  # another project's prompt
    assert status_of(lambda: sv.add_item(s, project, "pair", [ids[0], 999])) == 422
    assert status_of(lambda: sv.add_item(s, project, "pair", [ids[0], ids[0]])) == 422
    assert status_of(lambda: sv.add_item(s, project, "pair", ids[:2], gold_answer="left")) == 422
    assert status_of(lambda: sv.add_item(s, project, "rating", ids[:2], gold_answer={ids[0]: 3})) == 422
    item = sv.add_item(s, project, "pair", [ids[1], ids[0]], gold_answer=ids[1], priority=2)
    assert item.response_ids == ids[:2] and item.gold_answer == "b" and item.is_gold and item.priority == 2
    assert status_of(lambda: sv.add_item(s, project, "pair", ids[:2])) == 409
    assert sv.add_item(s, project, "ranking", ids[:3], gold_answer=[ids[2], ids[0], ids[1]]).gold_answer == \
        [ids[2], ids[0], ids[1]]
    assert status_of(lambda: sv.add_prompt(s, project, "  ")) == 422
    assert status_of(lambda: sv.add_response(s, 999, "x")) == 404


def test_atomic_block_groups_writes(s):
    project = sv.create_project(s, "grouped")
    with pytest.raises(RuntimeError):
        with sv.atomic(s):
            prompt = sv.add_prompt(s, project, "kept only if all succeed")
            sv.add_response(s, prompt, "r")
            raise RuntimeError("boom")
    assert s.scalar(select(func.count(Prompt.id))) == 0
    with sv.atomic(s):
        prompt = sv.add_prompt(s, project, "both")
        sv.add_item(s, project, "rating", [sv.add_response(s, prompt, "r").id])
    assert s.scalar(select(func.count(Item.id))) == 1


def test_admin_views_and_require_admin(s):
    project = _project_with(s, [{"prompt": "q", "responses": ["x", "y"]}], kinds=("pair",))
    ann, _ = sv.add_annotator(s, "ann")
    boss, _ = sv.add_annotator(s, "boss", admin=True)
    assert status_of(lambda: sv.require_admin(ann)) == 403
    assert status_of(lambda: sv.require_admin(None)) == 401
    assert sv.require_admin(boss) is boss
    a = sv.next_assignment(s, project, ann)
    sv.submit_comparison(s, ann, a.id, "left", 1)
    info = sv.item_judgements(s, a.item_id)
    assert info["judgements"][0]["annotator"] == "ann" and info["judgements"][0]["judgement"]["side"] == "left"
    assert [r["text"] for r in info["responses"]] == ["x", "y"]
    assert status_of(lambda: sv.item_judgements(s, 999)) == 404


def test_a_killed_process_keeps_committed_and_drops_uncommitted_judgements(tmp_path):
    run_kill(f"sqlite:///{tmp_path / 'kill.db'}")


def test_generate_responses_with_a_tiny_policy(s, tmp_path):
    from rlhfkit.testing import save_tiny

    policy = save_tiny(tmp_path / "policy")
    project = sv.create_project(s, "gen")
    prompts = ["the band 1 ", [{"role": "user", "content": "sing"}]]
    responses = sv.generate_responses(s, project, policy, prompts, n=3, max_new_tokens=6, seed=1,
                                      kinds=("rating", "pair"), policy="tiny")
    assert 2 <= len(responses) <= 6 and all(r.policy == "tiny" for r in responses)
    again = [r.text for r in sv.generate_responses(s, sv.create_project(s, "gen2"), policy, prompts, n=3,
                                                   max_new_tokens=6, seed=1)]
    assert again == [r.text for r in responses]  # seeded: the same samples
    assert s.scalar(select(func.count(Item.id)).where(Item.project_id == project.id, Item.kind == "rating")) == 2
    assert status_of(lambda: sv.generate_responses(s, project, tmp_path / "nope", prompts)) == 422
    assert status_of(lambda: sv.generate_responses(s, project, policy, prompts, n=0)) == 422
