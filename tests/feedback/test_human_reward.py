"""HumanReward: a PPO reward function answered by annotators (threads standing in for people)."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch

from rlhfkit.feedback import service as sv
from rlhfkit.feedback.calibration import calibrate_ratings
from rlhfkit.feedback.human_reward import HumanReward
from rlhfkit.feedback.store import Item

from .live import serving

TRUTH = {"great": 3, "fine": 2, "bad": 1}


class Rater(threading.Thread):
    """An annotator working through the queue: ``rule(text) -> score`` for every response.

    Starts once the project holds ``wait_items`` items (so the test decides what is queued
    first), stops after ``limit`` judgements or when ``stop`` is set. ``served`` lists item ids.
    """

    def __init__(self, Session, project: str, name: str, rule, *, wait_items: int = 1, limit: int | None = None):
        super().__init__(daemon=True)
        self.Session, self.project, self.name, self.rule = Session, project, name, rule
        self.wait_items, self.limit = wait_items, limit
        self.stop, self.served, self.error = threading.Event(), [], None

    def run(self) -> None:
        try:
            with self.Session() as s:
                me = sv.get_annotator(s, self.name)
                while not self.stop.is_set() and sv.progress(s, self.project)["items"] < self.wait_items:
                    s.rollback()  # end the read transaction, or SQLite keeps showing its snapshot
                    time.sleep(0.02)
                while not self.stop.is_set() and (self.limit is None or len(self.served) < self.limit):
                    a = sv.next_assignment(s, self.project, me)
                    if a is None:
                        time.sleep(0.02)
                        continue
                    view = sv.assignment_view(s, me, a)
                    sv.submit_rating(s, me, a.id, {r["id"]: self.rule(r["text"]) for r in view["responses"]})
                    self.served.append(a.item_id)
        except Exception as err:  # surfaced by finish()
            self.error = err

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=10)
        assert self.error is None, self.error


def _setup(Session, name="live", scale=(1, 3), per_item=1, annotators=("ann",)):
    with Session() as s:
        sv.create_project(s, name, scale=scale, per_item=per_item, gold_rate=0.0)
        for who in annotators:
            sv.add_annotator(s, who)


def _priorities(Session, project="live") -> dict[int, float]:
    with Session() as s:
        pid = sv.get_project(s, project).id
        return {i.id: i.priority for i in s.query(Item).filter_by(project_id=pid)}


def test_direct_mode_rewards_follow_the_ratings_and_batches_jump_the_queue(Session):
    _setup(Session)
    with Session() as s:
        sv.import_records(s, "live", [{"prompt": "older work", "response": "fine"}])  # priority 0, queued first
    rater = Rater(Session, "live", "ann", TRUTH.get, wait_items=3)
    rater.start()
    reward = HumanReward(Session, "live", timeout_s=20, poll_s=0.05, progress=False)
    prompts = ["P1", "P1", "P2", "P1"]
    responses = ["great", "bad", "fine", "great"]
    try:
        assert reward(prompts, responses) == [1.0, -1.0, 0.0, 1.0]  # 1..3 -> -1..1; duplicates share a reward
    finally:
        rater.finish()
    assert reward.last["responses"] == 4 and reward.last["distinct"] == 3
    assert reward.last["rated"] == 3 and reward.last["fallback"] == 0
    prios = _priorities(Session)
    older = min(prios)
    assert older not in rater.served[:2]  # the batch's two items were served before the older item
    assert set(prios.values()) == {0.0}  # released after the call
    # the same responses again: their ratings exist already, nobody needs to rate anything
    again = HumanReward(Session, "live", timeout_s=0, progress=False)
    assert again(["P2", "P1"], ["fine", "bad"]) == [0.0, -1.0] and again.last["fallback"] == 0


def test_calibration_removes_a_lenient_annotators_bias(Session):
    _setup(Session, scale=(1, 5), per_item=2, annotators=("lenient", "strict"))
    truth = {"t2": 2, "t3": 3, "t4": 4, "u2": 2, "u3": 3, "u4": 4}
    with Session() as s:  # both annotators rate six responses: the lenient one gives one point more
        sv.import_records(s, "live", [{"prompt": f"seed {t}", "response": t} for t in truth])
        for who, bias in (("lenient", 1), ("strict", 0)):
            me = sv.get_annotator(s, who)
            while (a := sv.next_assignment(s, "live", me)) is not None:
                view = sv.assignment_view(s, me, a)
                sv.submit_rating(s, me, a.id, {r["id"]: truth[r["text"]] + bias for r in view["responses"]})
    rule = {"new3": 3 + 1, "new4": 4 + 1}.get  # only the lenient annotator rates the batch
    rater = Rater(Session, "live", "lenient", rule, wait_items=7)
    rater.start()
    try:
        calibrated = HumanReward(Session, "live", timeout_s=20, poll_s=0.05, progress=False)(["q", "q"],
                                                                                           ["new3", "new4"])
    finally:
        rater.finish()
    raw = HumanReward(Session, "live", timeout_s=0, calibrate=False, progress=False)(["q", "q"], ["new3", "new4"])
    assert raw == [0.5, 1.0]  # (4 - 3) / 2, (5 - 3) / 2
    with Session() as s:
        data = sv.collect(s, "live")
    cal = calibrate_ratings([(o.response_id, o.annotator, o.score) for o in data.ratings])
    ids = {data.responses[rid].text: rid for rid in data.responses}
    assert calibrated == pytest.approx([(cal.scores[ids[t]] - 3) / 2 for t in ("new3", "new4")], abs=1e-9)
    assert cal.offsets["lenient"] > 0.3
    assert raw[0] - calibrated[0] == pytest.approx(cal.offsets["lenient"] / 2, abs=1e-6)


def test_timeout_uses_the_fallback_for_unrated_responses(Session):
    _setup(Session)
    human = {"r1": 1, "r2": 2, "r3": 3, "r4": 3}
    fb = {"r1": 0.0, "r2": 1.0, "r3": 2.0, "r4": 2.5, "s1": 5.0, "s2": -1.0, "x": 0.3, "y": -0.7}
    calls = []

    def fallback(prompts, responses):
        calls.append(list(responses))
        return [fb[r] for r in responses]

    rater = Rater(Session, "live", "ann", human.get, wait_items=2, limit=1)  # rates P1's item, then leaves
    rater.start()
    reward = HumanReward(Session, "live", timeout_s=1.0, poll_s=0.05, fallback=fallback, progress=False)
    try:
        out = reward(["P1"] * 4 + ["P2"] * 2, ["r1", "r2", "r3", "r4", "s1", "s2"])
    finally:
        rater.finish()
    assert out[:4] == [-1.0, 0.0, 1.0, 1.0]
    assert reward.last["rated"] == 4 and reward.last["fallback"] == 2 and reward.last["waited_s"] >= 0.9
    assert sorted(calls[0]) == ["r1", "r2", "r3", "r4", "s1", "s2"]
    # "match": the fallback's scores get the mean and spread the human rewards have on r1..r4
    f, h = np.array([0.0, 1.0, 2.0, 2.5]), np.array([-1.0, 0.0, 1.0, 1.0])
    a = h.std() / f.std()
    assert out[4:] == pytest.approx([h.mean() + a * (5.0 - f.mean()), h.mean() + a * (-1.0 - f.mean())])
    assert out[4] > out[5]  # the reward model's order is kept
    squash = HumanReward(Session, "live", timeout_s=0, fallback=fallback, fallback_map="tanh", progress=False)
    assert squash(["P3", "P3"], ["x", "y"]) == pytest.approx([math.tanh(0.3), math.tanh(-0.7)])
    raw = HumanReward(Session, "live", timeout_s=0, fallback=fallback, fallback_map="none", progress=False)
    assert raw(["P3"], ["x"]) == [0.3]


def test_timeout_without_fallback_raises_and_releases_the_items(Session):
    _setup(Session)
    reward = HumanReward(Session, "live", timeout_s=0.2, poll_s=0.05, progress=False)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"2 of 2 responses got no rating within timeout_s=0.2 s"):
        reward(["P", "P", "P"], ["a", "b", "a"])
    assert 0.15 < time.monotonic() - started < 5
    assert set(_priorities(Session).values()) == {0.0}


def test_bad_arguments(Session, tmp_path):
    _setup(Session, per_item=2)
    with pytest.raises(ValueError, match="per_item=2"):
        HumanReward(Session, "live", min_ratings=3, progress=False)(["p"], ["r"])
    reward = HumanReward(Session, "live", timeout_s=0, progress=False)
    with pytest.raises(ValueError, match="2 prompts and 1 responses"):
        reward(["p", "q"], ["r"])
    with pytest.raises(ValueError, match="batch position 1: the prompt must be non-empty"):
        reward(["p", " "], ["r", "s"])
    assert reward([], []) == []
    with pytest.raises(ValueError, match=r"scale=\(1, 5\) but project 'live' rates on 1..3"):
        HumanReward(Session, "live", scale=(1, 5), progress=False)(["p"], ["r"])
    for kwargs, message in (({"timeout_s": -1}, "timeout_s"), ({"poll_s": 0}, "poll_s"),
                            ({"min_ratings": 0}, "min_ratings"), ({"fallback_map": "linear"}, "fallback_map")):
        with pytest.raises(ValueError, match=message):
            HumanReward(Session, "live", **kwargs)
    with pytest.raises(ValueError, match="needs an admin's token"):
        HumanReward("http://127.0.0.1:9", "live")
    with pytest.raises(ConnectionError, match="cannot reach the feedback app"):
        HumanReward("http://127.0.0.1:9", "live", token="x", http_timeout_s=2)(["p"], ["r"])
    # a path opens (and closes) its own engine
    with HumanReward(tmp_path / "feedback.db", "live", timeout_s=0, fallback=lambda p, r: [0.0] * len(r),
                     progress=False) as own:
        assert own(["p"], ["r"]) == [0.0]


# ---------------------------------------------------------------------------------------- HTTP mode

@pytest.fixture
def server(tmp_path):
    """The app on a free port in a thread; yields (base URL, admin token, annotator token)."""
    from rlhfkit.feedback.app import create_app

    app = create_app(f"sqlite:///{tmp_path / 'app.db'}", secret="human-reward-test-secret-0123")
    with app.state.sessions() as s:
        _, admin = sv.add_annotator(s, "ada", admin=True)
        _, annotator = sv.add_annotator(s, "bob")
        sv.create_project(s, "live", per_item=1, gold_rate=0.0)
    with serving(app) as base:
        yield base, admin, annotator


def _api(base: str, token: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _rate_over_http(base: str, token: str, stop: threading.Event, errors: list) -> None:
    """An annotator using only the JSON API: fetch the next item, score each response by TRUTH."""
    try:
        while not stop.is_set():
            job = _api(base, token, "GET", "/api/projects/live/next")["assignment"]
            if job is None:
                time.sleep(0.05)
                continue
            scores = {str(r["id"]): TRUTH[r["text"]] for r in job["responses"]}
            _api(base, token, "POST", f"/api/assignments/{job['assignment_id']}", {"scores": scores})
    except Exception as err:
        errors.append(err)


def test_http_mode_posts_polls_and_rates_through_the_api(server):
    base, admin, annotator = server
    stop, errors = threading.Event(), []
    thread = threading.Thread(target=_rate_over_http, args=(base, annotator, stop, errors), daemon=True)
    thread.start()
    try:
        reward = HumanReward(base + "/", "live", token=admin, timeout_s=20, poll_s=0.05, progress=False)
        assert reward(["P1", "P2", "P1"], ["great", "bad", "fine"]) == [1.0, -1.0, 0.0]
        assert reward.last["rated"] == 3
        # the same responses again: the items are known, their judgements are read back, nothing new is queued
        assert reward(["P2", "P1", "P1"], ["bad", "fine", "great"]) == [-1.0, 0.0, 1.0]
        assert _api(base, admin, "GET", "/api/projects/live/progress")["items"] == 2
        # a fresh object (a restarted run) does not know the items: it queues each response alone instead
        fresh = HumanReward(base, "live", token=admin, timeout_s=20, poll_s=0.05, progress=False)
        assert fresh(["P1", "P1"], ["great", "fine"]) == [1.0, 0.0] and fresh.last["fallback"] == 0
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not errors, errors
    progress = _api(base, admin, "GET", "/api/projects/live/progress")
    assert progress["items_by_kind"]["rating"] == 4  # {great, fine}, {bad}, then {great} and {fine} alone
    with pytest.raises(PermissionError, match="'bob', who is not an admin"):
        HumanReward(base, "live", token=annotator, progress=False)(["p"], ["r"])


# ---------------------------------------------------------------------------------------- PPO

def test_ppo_trains_a_step_on_human_rewards(Session, tmp_path, tokenizer):
    from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
    from rlhfkit.testing import tiny_causal_lm

    _setup(Session)

    def rule(text: str) -> int:  # the "human": prefers responses of even length
        return 3 if len(text) % 2 == 0 else 1

    rater = Rater(Session, "live", "ann", rule)
    rater.start()
    human = HumanReward(Session, "live", timeout_s=15, poll_s=0.05, progress=False)
    seen = []

    def reward_fn(prompts, responses):
        out = human(prompts, responses)
        seen.append((list(responses), out))
        return out

    policy = AutoModelForCausalLMWithValueHead(tiny_causal_lm("gpt2", tokenizer, hidden_size=32, num_layers=1))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ppo = PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-3, output_dir=str(tmp_path / "ppo")),
                     policy, None, tokenizer)
    try:
        history = ppo.train(reward_fn, ["the band ", "a robot ", "my friend "], steps=1,
                            generation_kwargs={"max_new_tokens": 4}, progress=False)
    finally:
        rater.finish()
    assert len(seen) == 1 and len(seen[0][0]) == 4
    texts, rewards = seen[0]
    assert rewards == [1.0 if len(t) % 2 == 0 else -1.0 for t in texts]
    assert len(history) == 1 and history[0]["reward"] == pytest.approx(sum(rewards) / 4)
    assert human.last["fallback"] == 0 and rater.served
    assert any(not torch.equal(v, policy.state_dict()[k]) for k, v in before.items())  # it learned something
