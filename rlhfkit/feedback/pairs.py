"""Calibrated ratings -> preference pairs for reward models and DPO.

Within each prompt, every two responses whose calibrated scores differ by at least
``min_gap`` make a pair: the higher one is ``chosen`` and ``margin`` is the gap. Ties and
near-ties are dropped: after calibration a gap smaller than the noise says nothing
reliable about which response is better.
"""

from __future__ import annotations

import random
from itertools import combinations
from typing import Iterable, Mapping

from .calibration import Calibration, calibrate_ratings


def pairs_from_scores(rows: Iterable[Mapping], *, min_gap: float = 0.25, max_pairs_per_prompt: int | None = None,
                      seed: int = 0) -> list[dict]:
    """Rows ``{"prompt", "response", "score"}`` (one per response) -> ``{"prompt", "chosen", "rejected", "margin"}``.

    Pairs come in prompt order (first appearance), then response order. With
    ``max_pairs_per_prompt`` a seeded random subset of each prompt's pairs is kept.
    """
    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap}")
    by_prompt: dict[str, dict[str, float]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], {})[row["response"]] = float(row["score"])
    rng = random.Random(seed)
    pairs = []
    for prompt, scored in by_prompt.items():
        found = []
        for (a, sa), (b, sb) in combinations(scored.items(), 2):
            if abs(sa - sb) < min_gap or sa == sb:
                continue
            chosen, rejected = (a, b) if sa > sb else (b, a)
            found.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "margin": abs(sa - sb)})
        if max_pairs_per_prompt is not None and len(found) > max_pairs_per_prompt:
            keep = sorted(rng.sample(range(len(found)), max_pairs_per_prompt))
            found = [found[k] for k in keep]
        pairs.extend(found)
    return pairs


def calibrated_pairs(ratings: Iterable[Mapping], *, shrinkage: float = 2.0, scale: bool = False,
                     min_gap: float = 0.25, max_pairs_per_prompt: int | None = None,
                     seed: int = 0) -> tuple[list[dict], Calibration]:
    """Rating rows ``{"prompt", "response", "annotator", "score"}`` -> (pairs, calibration).

    The item is the ``(prompt, response)`` pair, so a response rated by several annotators
    (or sampled twice) gets one calibrated score.
    """
    ratings = list(ratings)
    calibration = calibrate_ratings(
        [{"item": (r["prompt"], r["response"]), "annotator": r["annotator"], "score": r["score"]} for r in ratings],
        shrinkage=shrinkage, scale=scale)
    rows = [{"prompt": p, "response": resp, "score": s} for (p, resp), s in calibration.scores.items()]
    return pairs_from_scores(rows, min_gap=min_gap, max_pairs_per_prompt=max_pairs_per_prompt, seed=seed), calibration
