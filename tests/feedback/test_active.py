"""Active selection: the pair the reward model is least sure about is served first."""

from __future__ import annotations

import math

import pytest

from rlhfkit.cli import main
from rlhfkit.feedback import active
from rlhfkit.feedback import service as sv
from rlhfkit.feedback.errors import FeedbackError
from rlhfkit.feedback.store import Item

# A fake reward model: a score per response text. Gaps per pair of the first prompt:
# (sure, fair) 4.0, (sure, close) 3.9, (fair, close) 0.1 -> (fair, close) is the coin flip.
SCORES = {"sure": 4.0, "fair": 0.0, "close": 0.1, "yes": 2.5, "no": -2.0, "maybe": 0.2}
ROWS = [{"prompt": "Q1", "responses": ["sure", "fair", "close"]},
        {"prompt": "Q2", "responses": ["yes", "no"]}]


def fake_reward(calls=None):
    def reward_fn(prompts, responses):
        if calls is not None:
            calls.append(len(responses))
        assert all(p in ("Q1", "Q2", "Q3") for p in prompts)
        return [SCORES[r] for r in responses]
    return reward_fn


def _texts(s, item: Item) -> set[str]:
    return {r["text"] for r in sv.item_judgements(s, item.id)["responses"]}


def test_uncertainty_formula():
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for gap in (-30.0, -2.5, -0.1, 0.0, 0.7, 3.0, 800.0):
        assert active.uncertainty(gap) == pytest.approx(1 - abs(2 * sigmoid(gap) - 1), abs=1e-12)
    assert active.uncertainty(0.0) == 1.0 and active.uncertainty(1e6) == 0.0
    assert active.uncertainty(0.5) > active.uncertainty(1.0) > active.uncertainty(-2.0)


def test_most_uncertain_pair_is_served_first(s):
    project = sv.create_project(s, "act", per_item=1, gold_rate=0.0)
    sv.import_records(s, project, ROWS, kinds=("pair", "rating"))
    ann, _ = sv.add_annotator(s, "ann")
    calls = []
    summary = active.prioritise_uncertain(s, project, fake_reward(calls), batch_size=2)
    assert summary["pairs"] == 4 and summary["ratings"] == 0 and summary["items_updated"] == 4
    assert summary["responses_scored"] == 5 and calls == [2, 2, 1]  # each response once, in batches of 2
    top = summary["most_uncertain"][0]
    assert top["uncertainty"] == pytest.approx(active.uncertainty(0.1))
    assert {top["reward_a"], top["reward_b"]} == {0.0, 0.1}
    # then by uncertainty: (sure, close) gap 3.9, (sure, fair) 4.0, (yes, no) 4.5
    served = []
    while (a := sv.next_assignment(s, project, ann)) is not None:
        served.append(a.item)
        if a.item.kind == "pair":
            sv.submit_comparison(s, ann, a.id, "left")
        else:
            sv.submit_rating(s, ann, a.id, {rid: 2 for rid in a.item.response_ids})
    pairs = [item for item in served if item.kind == "pair"]
    assert [_texts(s, item) for item in pairs] == [{"fair", "close"}, {"sure", "close"}, {"sure", "fair"},
                                                   {"yes", "no"}]
    assert [item.kind for item in served[:4]] == ["pair"] * 4  # rating items (priority 0) come after
    assert pairs[0].priority == pytest.approx(active.uncertainty(0.1))
    # fully judged items are no longer open: a second run has nothing left to do
    again = active.prioritise_uncertain(s, project, fake_reward())
    assert again["items_updated"] == 0 and again["mean_uncertainty"] is None


def test_only_open_non_gold_items_change_and_ratings_by_threshold(s):
    project = sv.create_project(s, "act2", per_item=2, gold_rate=0.0)
    sv.import_records(s, project, ROWS + [{"prompt": "Q3", "chosen": "maybe", "rejected": "no",
                                           "gold_winner": "chosen"}], kinds=("pair", "rating"))
    ann, _ = sv.add_annotator(s, "a1")
    ann2, _ = sv.add_annotator(s, "a2")
    # one pair fully judged by both annotators (per_item=2): it keeps its priority
    first = sv.next_assignment(s, project, ann)
    sv.submit_comparison(s, ann, first.id, "tie")
    sv.set_priorities(s, project, {first.item_id: 5.0})  # so that a2 is served the same item
    second = sv.next_assignment(s, project, ann2)
    assert second.item_id == first.item_id
    sv.submit_comparison(s, ann2, second.id, "tie")
    summary = active.prioritise_uncertain(s, project, fake_reward(), rating_threshold=0.05)
    items = {item.id: item for item in s.query(Item).filter_by(project_id=project.id)}
    for item in items.values():
        s.refresh(item)
    assert items[first.item_id].priority == 5.0
    gold = [item for item in items.values() if item.is_gold]
    assert len(gold) == 1 and gold[0].priority == 0.0
    assert summary["pairs"] == 3 and summary["ratings"] == 3  # Q1, Q2 and Q3's rating items are open
    ratings = {frozenset(_texts(s, item)): item.priority for item in items.values() if item.kind == "rating"}
    # a rating item takes its least certain response: "fair" (0.0) and "close" (0.1) are 0.05 from 0.05
    assert ratings[frozenset({"sure", "fair", "close"})] == pytest.approx(active.uncertainty(0.05))
    assert ratings[frozenset({"yes", "no"})] == pytest.approx(active.uncertainty(2.05))
    assert ratings[frozenset({"maybe", "no"})] == pytest.approx(active.uncertainty(0.15))


def test_bad_arguments_and_reward_outputs(s, tmp_path):
    project = sv.create_project(s, "act3", gold_rate=0.0)
    assert active.prioritise_uncertain(s, project, fake_reward())["items_updated"] == 0  # empty project: no work
    sv.import_records(s, project, ROWS, kinds=("pair",))
    with pytest.raises(FeedbackError, match="batch_size"):
        active.prioritise_uncertain(s, project, fake_reward(), batch_size=0)
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        active.prioritise_uncertain(s, project, lambda p, r: [0.0], batch_size=2)
    with pytest.raises(ValueError, match="non-finite"):
        active.prioritise_uncertain(s, project, lambda p, r: [float("nan")] * len(r))
    with pytest.raises(FeedbackError, match="reward model: no such folder .*nothing-here"):
        active.prioritise_uncertain(s, project, tmp_path / "nothing-here")
    with pytest.raises(FeedbackError, match="reward model: folder .* is not a model folder"):
        active.prioritise_uncertain(s, project, tmp_path)  # a folder, but no model in it
    with pytest.raises(FeedbackError, match="not found"):
        active.prioritise_uncertain(s, "no-such-project", fake_reward())


def test_tiny_real_reward_model_end_to_end_via_the_command(Session, tmp_path, capsys):
    from rlhfkit import RewardModel
    from rlhfkit.testing import save_tiny

    path = save_tiny(tmp_path / "rm", kind="reward", hidden_size=32, num_layers=1)
    with Session() as s:
        project = sv.create_project(s, "real", per_item=1, gold_rate=0.0)
        sv.import_records(s, project, [{"prompt": "Sing a line.", "responses": ["the band sings like a rock song.",
                                                                                "they sleep.", "a dog waits."]},
                                       {"prompt": "Describe the sea.", "responses": ["the river shines.",
                                                                                     "we wait."]}], kinds=("pair",))
    assert main(["feedback", "prioritise", "--db", str(tmp_path / "feedback.db"), "--project", "real",
                 "--reward-model", str(path), "--batch-size", "2"]) == 0
    assert "4 pair and 0 rating item(s) prioritised from 5 scored response(s)" in capsys.readouterr().out
    rm = RewardModel(str(path))
    with Session() as s:
        items = list(s.query(Item).filter_by(kind="pair").order_by(Item.id))
        for item in items:
            view = sv.item_judgements(s, item.id)
            (ra, rb) = rm([view["prompt"]] * 2, [r["text"] for r in view["responses"]])
            assert item.priority == pytest.approx(active.uncertainty(ra - rb), abs=1e-5)
            assert 0.0 < item.priority <= 1.0
        ann, _ = sv.add_annotator(s, "ann")
        assert sv.next_assignment(s, "real", ann).item.priority == max(item.priority for item in items)
