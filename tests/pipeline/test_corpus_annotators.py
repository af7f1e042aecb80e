"""The demo's corpus, hidden quality rule and simulated annotators."""

import random

import numpy as np
import pytest

from rlhfkit.feedback import calibrated_pairs
from rlhfkit.pipeline import corpus
from rlhfkit.pipeline.annotators import Annotator, make_annotators, rate, simulate_ratings


@pytest.mark.parametrize("text, quality", [
    (" hearts on fire, wild and electric", 1.0),             # hearts fire wild electric: 4 distinct
    (" hearts on fire", 0.5),                                # 2 distinct
    (" hearts on fire, hearts on fire", 0.25),               # 2 distinct, 2 repeats: (2 - 1) / 4
    (" fire fire fire fire", 0.0),                           # 1 distinct, 3 repeats: clipped at 0
    (" add two cups of flour", 0.0),
    (" hearts on fire, zzkx qq", 0.5 * 3 / 5),                # 2 of 5 words are not in the corpus
    ("", 0.0),
])
def test_hidden_quality_rule(text, quality):
    assert corpus.rock_quality(text) == pytest.approx(quality)


def test_corpus_is_generated_with_the_asked_style_mix():
    rows = corpus.sft_rows(2000, 0.3, corpus.TRAIN_PROMPTS, seed=0)
    assert {"prompt", "completion"} == set(rows[0]) and all(r["completion"].startswith(" ") for r in rows)
    rock = np.mean([corpus.rock_quality(r["completion"]) >= 0.5 for r in rows])
    assert 0.25 < rock < 0.4
    texts = corpus.pretrain_texts(500, 0.1, corpus.TRAIN_PROMPTS, seed=0)
    assert rows == corpus.sft_rows(2000, 0.3, corpus.TRAIN_PROMPTS, seed=0)  # seeded
    assert all(any(t.startswith(p) for p in corpus.TRAIN_PROMPTS) for t in texts)
    assert not set(corpus.TRAIN_PROMPTS) & set(corpus.EVAL_PROMPTS)


def test_rating_model():
    rng = random.Random(0)
    fair, harsh = Annotator("f", 0.0, 0.0, 1.0), Annotator("h", -0.8, 0.0, 1.0)
    # 1.5 + 1.5 q + offset, rounded half to even and clipped to 1-3
    assert [rate(q, fair, rng) for q in (0.0, 0.5, 1.0)] == [2, 2, 3]
    assert [rate(q, harsh, rng) for q in (0.0, 0.5, 1.0)] == [1, 1, 2]
    annotators = make_annotators(6, seed=0)
    assert annotators[-1].workload == 0.1 and len({a.name for a in annotators}) == 6
    with pytest.raises(ValueError):
        simulate_ratings([], annotators, per_item=7)


def test_simulated_annotators_are_calibrated():
    rng = random.Random(0)
    items = [{"prompt": f"p{i % 8}", "response": f"r{i}", "quality": rng.choice([0, 0.25, 0.5, 0.75, 1.0])}
             for i in range(400)]
    annotators = make_annotators(5, offset_std=0.3, noise_std=0.3, seed=1)
    ratings = simulate_ratings(items, annotators, per_item=3, seed=1)
    assert {r["score"] for r in ratings} <= {1, 2, 3} and len(ratings) == 1200
    for item in items[:20]:  # distinct annotators per item
        assert len({r["annotator"] for r in ratings if r["response"] == item["response"]}) == 3
    _, cal = calibrated_pairs(ratings)
    mean = np.mean([a.offset for a in annotators])
    errors = [abs(cal.offsets[a.name] - (a.offset - mean)) for a in annotators]
    # integer ratings clipped to 1-3 hide part of each bias; the estimates still land close
    assert max(errors) < 0.2


def test_torch_threads_are_restored(monkeypatch):
    import os

    import torch

    from rlhfkit.pipeline.config import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # another job is running: one thread
    with torch_threads(0) as n:
        assert n == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # idle: PyTorch's default
    with torch_threads(0) as n:
        assert n == before
    assert torch.get_num_threads() == before
