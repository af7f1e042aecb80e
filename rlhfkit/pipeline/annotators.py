"""Simulated annotators: a hidden true quality seen through personal bias and noise.

Annotator ``j`` rates a response of hidden quality ``q`` in [0, 1] on the 1-3 scale as

    rating = clip(round(1.5 + 1.5 q + offset_j + noise), 1, 3),   noise ~ N(0, noise_std^2)

A response without any rock song (q = 0, most SFT samples) sits between 1 and 2 for a neutral
annotator, so a personal bias shifts how often it gets a 2; were it at 1, every harsh
annotator's bias would vanish into the floor of the scale.

Offsets are drawn once per annotator (some are harsh, some generous) and workloads are
uneven (a few people rate most items, one rates only a handful), as in real annotation
rounds. The pipeline never reads the offsets back: calibration must estimate them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Annotator:
    name: str
    offset: float   # personal bias, in rating points
    noise: float    # standard deviation of the per-rating noise
    workload: float  # relative share of the items this annotator gets


def make_annotators(n: int = 6, offset_std: float = 0.5, noise_std: float = 0.3, seed: int = 0) -> list[Annotator]:
    """``n`` annotators with offsets ~ N(0, offset_std^2); the last one has a tiny workload."""
    rng = random.Random(seed)
    out = []
    for j in range(n):
        workload = 0.1 if j == n - 1 and n > 2 else rng.uniform(0.5, 1.5)
        out.append(Annotator(f"annotator-{j + 1}", round(rng.gauss(0.0, offset_std), 3), noise_std, workload))
    return out


RATING_BASE, RATING_SLOPE = 1.5, 1.5  # the neutral annotator's mean rating at quality 0 and its rise to quality 1


def rate(quality: float, annotator: Annotator, rng: random.Random) -> int:
    """One 1-3 rating of a response of hidden ``quality`` by ``annotator``."""
    value = RATING_BASE + RATING_SLOPE * quality + annotator.offset + rng.gauss(0.0, annotator.noise)
    return int(min(3, max(1, round(value))))


def simulate_ratings(responses: list[dict], annotators: list[Annotator], per_item: int = 2,
                     seed: int = 0) -> list[dict]:
    """Rows ``{"prompt", "response", "annotator", "score"}``: each response rated by ``per_item``
    distinct annotators drawn by workload. ``responses``: dicts with prompt, response, quality."""
    if not 1 <= per_item <= len(annotators):
        raise ValueError(f"per_item must be in [1, {len(annotators)}], got {per_item}")
    rng = random.Random(seed)
    rows = []
    for item in responses:
        pool = list(annotators)
        chosen = []
        for _ in range(per_item):
            pick = rng.choices(pool, [a.workload for a in pool])[0]
            pool.remove(pick)
            chosen.append(pick)
        for ann in chosen:
            rows.append({"prompt": item["prompt"], "response": item["response"], "annotator": ann.name,
                         "score": rate(item["quality"], ann, rng)})
    return rows
