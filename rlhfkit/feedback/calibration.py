"""Annotator calibration: estimate each annotator's bias from overlapping ratings.

People rate on their own scale: one gives a 3 where another gives a 2. With several
annotators per item, the additive model

    rating[i, j] = score[i] + offset[j] + noise        (item i, annotator j)

separates the item's calibrated ``score`` from the annotator's ``offset``. With
``scale=True`` the model is ``rating = scale[j] * score[i] + offset[j] + noise`` (some
annotators use a wider or narrower part of the scale).

The fit minimises the squared error plus a ridge penalty that shrinks each annotator
towards the neutral annotator (``offset = 0``, ``scale = 1``) with the strength of
``shrinkage`` pseudo-judgements, so an annotator with two ratings keeps an offset near 0
while one with hundreds gets the offset the data says:

    sum_(i,j) (rating - scale_j * score_i - offset_j)^2
        + shrinkage * sum_j (offset_j^2 + (scale_j - 1)^2)

by alternating least squares (each block has a closed form). Identifiability: a constant
can move between all scores and all offsets, so offsets are re-centred to mean 0 over
annotators after each sweep (the ridge optimum already has sum offset_j = 0); with
``scale=True`` the scales are also normalised to geometric mean 1. Items need no overlap
with everyone: the annotators must only be connected through shared items.

    cal = calibrate_ratings(rows)     # rows: dicts with item, annotator, score
    cal.offsets["ann-3"]             # -0.41: rates 0.41 below the average annotator
    cal.scores[item]                 # calibrated score on the raters' average scale
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping

import numpy as np


@dataclass
class Calibration:
    """The fitted annotator model. Dict keys are the item and annotator ids of the input."""

    scores: dict[Hashable, float]                 # calibrated score per item
    offsets: dict[Hashable, float]                # additive bias per annotator (mean 0)
    scales: dict[Hashable, float]                 # multiplicative scale per annotator (1.0 unless scale=True)
    counts: dict[Hashable, int]                   # ratings per annotator
    raw_means: dict[Hashable, float]              # uncalibrated mean rating per item
    residual_std: float                           # std of rating - prediction
    iterations: int
    converged: bool
    history: list[float] = field(default_factory=list)  # objective after each sweep

    def calibrate(self, score: float, annotator: Hashable) -> float:
        """One rating put on the common scale: ``(score - offset) / scale`` (unknown annotators unchanged)."""
        return (score - self.offsets.get(annotator, 0.0)) / self.scales.get(annotator, 1.0)


def _as_triples(ratings: Iterable) -> list[tuple[Hashable, Hashable, float]]:
    triples = []
    for k, row in enumerate(ratings):
        if isinstance(row, Mapping):
            missing = [key for key in ("item", "annotator", "score") if key not in row]
            if missing:
                raise ValueError(f"rating {k} has no {missing}: expected keys item, annotator, score")
            item, annotator, score = row["item"], row["annotator"], row["score"]
        else:
            item, annotator, score = row
        score = float(score)
        if not np.isfinite(score):
            raise ValueError(f"rating {k} has a non-finite score {score}")
        triples.append((item, annotator, score))
    if not triples:
        raise ValueError("no ratings to calibrate")
    return triples


def calibrate_ratings(ratings: Iterable, *, shrinkage: float = 2.0, scale: bool = False, max_iter: int = 500,
                      tol: float = 1e-7) -> Calibration:
    """Fit the annotator model (see the module docstring) to ``ratings``.

    ``ratings``: dicts ``{"item", "annotator", "score"}`` or ``(item, annotator, score)``
    tuples; ids are any hashable values (a ``(prompt, response)`` tuple is a fine item id).
    ``shrinkage`` >= 0 is the prior's weight in pseudo-judgements. Stops when no score,
    offset or scale moves by ``tol`` or more in a sweep, or after ``max_iter`` sweeps.
    """
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    triples = _as_triples(ratings)
    items = list(dict.fromkeys(t[0] for t in triples))
    annotators = list(dict.fromkeys(t[1] for t in triples))
    item_idx = {x: i for i, x in enumerate(items)}
    ann_idx = {x: j for j, x in enumerate(annotators)}
    I = np.array([item_idx[t[0]] for t in triples])  # (N,)
    J = np.array([ann_idx[t[1]] for t in triples])  # (N,)
    r = np.array([t[2] for t in triples])  # (N,)
    n_items, n_ann = len(items), len(annotators)
    per_ann = np.bincount(J, minlength=n_ann).astype(float)  # (A,)
    per_item = np.bincount(I, minlength=n_items).astype(float)  # (S,)
    raw = np.bincount(I, weights=r, minlength=n_items) / per_item  # (S,)

    s, b, a = raw.copy(), np.zeros(n_ann), np.ones(n_ann)
    history, converged, it = [], False, 0
    prev = (s, b, a)
    for it in range(1, max_iter + 1):
        # scores: least squares given the annotators, s_i = sum_j a_j (r_ij - b_j) / sum_j a_j^2
        s = np.bincount(I, weights=a[J] * (r - b[J]), minlength=n_items) / np.bincount(
            I, weights=a[J] ** 2, minlength=n_items)
        if scale:
            a, b = _fit_scale_offset(s[I], r, J, n_ann, shrinkage)
            c = np.exp(np.mean(np.log(np.clip(a, 1e-6, None))))  # a s = (a / c)(c s)
            a, s = a / c, s * c
        else:
            # offsets given scores: ridge mean of the residuals, shrunk towards 0
            b = np.bincount(J, weights=r - s[I], minlength=n_ann) / (per_ann + shrinkage)
        # re-centre: a_j s_i + b_j = a_j (s_i + d) + (b_j - a_j d) with d = mean(b) / mean(a)
        d = b.mean() / a.mean()
        s, b = s + d, b - a * d
        history.append(float(np.sum((r - a[J] * s[I] - b[J]) ** 2) + shrinkage * np.sum(b ** 2 + (a - 1) ** 2)))
        change = max(np.abs(s - prev[0]).max(), np.abs(b - prev[1]).max(), np.abs(a - prev[2]).max())
        prev = (s, b, a)
        if change < tol:
            converged = True
            break
    resid = r - a[J] * s[I] - b[J]
    return Calibration(
        scores={x: float(s[i]) for x, i in item_idx.items()},
        offsets={x: float(b[j]) for x, j in ann_idx.items()},
        scales={x: float(a[j]) for x, j in ann_idx.items()},
        counts={x: int(per_ann[j]) for x, j in ann_idx.items()},
        raw_means={x: float(raw[i]) for x, i in item_idx.items()},
        residual_std=float(resid.std()), iterations=it, converged=converged, history=history)


def _fit_scale_offset(x: np.ndarray, r: np.ndarray, J: np.ndarray, n_ann: int, lam: float):
    """Per annotator: ridge regression r = a x + b, prior a = 1, b = 0 with weight ``lam``.

    Normal equations [[Sxx + lam, Sx], [Sx, n + lam]] [a, b] = [Sxr + lam, Sr].
    """
    n = np.bincount(J, minlength=n_ann).astype(float)
    sx, sr = np.bincount(J, x, n_ann), np.bincount(J, r, n_ann)
    sxx, sxr = np.bincount(J, x * x, n_ann), np.bincount(J, x * r, n_ann)
    m11, m12, m22 = sxx + lam, sx, n + lam
    v1, v2 = sxr + lam, sr
    det = m11 * m22 - m12 ** 2
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    return (m22 * v1 - m12 * v2) / det, (m11 * v2 - m12 * v1) / det
