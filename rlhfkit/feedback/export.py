"""Collected judgements -> training files in the data layer's formats, with margins and weights.

``export(data, out_dir)`` writes up to three JSONL files (a file only when it has rows):

- ``pairs.jsonl`` (preference: ``prompt, chosen, rejected, margin, weight`` plus ``source``
  and ``n``), for ``rlhfkit reward`` / ``rlhfkit dpo``. Pairs come from three sources, each
  row tagged with its ``source``; the same two responses may appear once per source.
- ``ratings.jsonl`` (ratings: ``prompt, response, score`` with the calibrated score, plus
  ``raw_mean`` and ``n``), one row per rated response.
- ``rankings.jsonl`` (rankings: ``prompt, responses`` best first, plus ``n``), one row per
  ranked set of responses: the consensus order by mean position (Borda count).

Every weight is "P(the pair's order is right) - P(it is reversed)", in [0, 1], so the three
sources are on one scale; a pair that is as likely reversed as right gets weight 0 and is
dropped, since it carries no preference. With ``weight="none"`` every kept pair has weight 1.
Why this quantity: the soft-label Bradley–Terry loss ``-p_w log σ(Δ) - p_l log σ(-Δ)`` has
gradient ``-(p_w - p_l) / 2`` at ``Δ = 0``, the same as the hard-label loss weighted by
``p_w - p_l``, so the weight makes uncertain pairs pull as little as they should.

- Comparisons (``source="comparison"``): all judgements of one response pair are pooled by
  Dawid–Skene (``dawid_skene.py``; gold pairs fixed to their answer). The winner is the
  more probable of a/b; the pair is dropped when "tie" is at least as probable as the
  winner. ``weight = P(winner) - P(loser)`` from the posterior. ``margin = strength_margin
  * mean strength`` of the judgements that picked the winner (those with a strength; 0 if
  none): with the default 1/3, strengths 1/2/3 ("slightly / clearly / much better") give
  margins 1/3, 2/3, 1, Llama 2's "margin small" (Touvron et al. 2023, table 28).
- Ratings (``source="rating"``): ``calibration.calibrate_ratings`` (response = item) gives
  calibrated scores; ``pairs.pairs_from_scores`` pairs responses of one prompt whose scores
  differ by ``min_gap`` or more, ``margin`` = the calibrated gap. The weight is
  ``2 Φ(gap / sqrt(v_w + v_l)) - 1``: the probability under Gaussian rating noise that the
  true order agrees, minus that it does not. A response's variance is
  ``v = 1 / sum over its ratings of scale_j^2 / σ_j^2`` (more, and better, annotators make
  it smaller); annotator ``j``'s noise ``σ_j^2`` comes from its residuals on responses
  rated more than once (each squared residual times ``n / (n - 1)`` to undo the fitted
  mean), shrunk with ``shrinkage`` pseudo-ratings towards the project's noise, which is
  itself shrunk towards ``rating_noise^2`` (prior: ratings scatter by half a scale point).
- Rankings (``source="ranking"``): every pair of every ranking is one vote; votes on the
  same two responses are pooled, the majority wins (even splits dropped), ``weight =
  (votes for - votes against) / votes``, margin 0.

Files are written to a temporary file in ``out_dir`` and moved into place with
``os.replace``, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .calibration import Calibration
from .dawid_skene import pair_dawid_skene
from .pairs import pairs_from_scores
from .quality import rating_calibration
from .records import FeedbackData, ResponseRec

SOURCES = ("comparison", "rating", "ranking")
WEIGHTS = ("reliability", "none")


SIGNIFICANT = 6  # significant digits of the floats written to the files (``rounded``)


def export(data: FeedbackData, out_dir: str | os.PathLike, *, weight: str = "reliability", min_gap: float = 0.25,
           min_weight: float = 0.0, strength_margin: float = 1 / 3, shrinkage: float = 2.0, scale: bool = False,
           rating_noise: float = 0.5, sources: Iterable[str] = SOURCES, use_gold: bool = True) -> dict[str, Path]:
    """Write ``pairs.jsonl``, ``ratings.jsonl`` and ``rankings.jsonl`` to ``out_dir``; returns ``{name: path}``.

    Options as in ``export_rows``; floats are written to ``SIGNIFICANT`` digits (``rounded``). Only files
    with rows are written (and returned); raises ``ValueError`` when there is nothing to export.
    """
    rows = export_rows(data, weight=weight, min_gap=min_gap, min_weight=min_weight, strength_margin=strength_margin,
                       shrinkage=shrinkage, scale=scale, rating_noise=rating_noise, sources=sources,
                       use_gold=use_gold)
    if not any(rows.values()):
        raise ValueError(f"nothing to export from project {data.project!r}: no pairs, ratings or rankings "
                         "(pairs need a clear winner, rating pairs a calibrated gap >= min_gap)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, table in rows.items():
        if table:
            written[name] = write_jsonl(out / f"{name}.jsonl", [rounded(row) for row in table])
    return written


def rounded(row: dict, digits: int = SIGNIFICANT) -> dict:
    """``row`` with every float to ``digits`` significant digits (0.7310585786300049 -> 0.731059): what a
    person reads in the file, still far finer than any judgement; a small positive weight never becomes 0."""
    return {k: float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v for k, v in row.items()}


def export_rows(data: FeedbackData, *, weight: str = "reliability", min_gap: float = 0.25, min_weight: float = 0.0,
                strength_margin: float = 1 / 3, shrinkage: float = 2.0, scale: bool = False,
                rating_noise: float = 0.5, sources: Iterable[str] = SOURCES,
                use_gold: bool = True) -> dict[str, list[dict]]:
    """The rows of the three files, without writing: ``{"pairs", "ratings", "rankings"}``.

    ``weight``: "reliability" (see the module docstring) or "none" (1.0). ``min_gap``: the
    smallest calibrated rating gap that makes a pair. ``min_weight``: pairs keep only when
    their reliability weight is above it (also with ``weight="none"``; weight-0 pairs are
    always dropped). ``strength_margin``:
    margin per strength point. ``shrinkage``, ``scale``: rating calibration (and the noise
    estimate's prior weight). ``rating_noise``: prior std of one rating, in scale points.
    ``sources``: which judgements become pairs. ``use_gold``: fix gold comparisons to
    their answer.
    """
    sources = tuple(sources)
    unknown = set(sources) - set(SOURCES)
    if unknown or weight not in WEIGHTS:
        raise ValueError(f"export: sources must be among {SOURCES} (got {sources}) and weight one of {WEIGHTS} "
                         f"(got {weight!r})")
    if not min_gap >= 0:  # a negative gap would turn ties and reversed ratings into preferences
        raise ValueError(f"min_gap must be >= 0 (the smallest calibrated rating gap that makes a pair), got {min_gap}")
    if min_weight < 0 or strength_margin < 0 or rating_noise <= 0:
        raise ValueError(f"export: need min_weight >= 0, strength_margin >= 0 and rating_noise > 0, got "
                         f"{min_weight}, {strength_margin}, {rating_noise}")
    texts = _Texts(data)
    pairs: list[dict] = []
    if "comparison" in sources:
        pairs += comparison_pairs(data, texts, strength_margin, use_gold)
    cal = rating_calibration(data, shrinkage=shrinkage, scale=scale)
    ratings = rating_rows(data, cal, texts)
    if "rating" in sources and cal is not None:
        pairs += rating_pairs(data, cal, texts, min_gap, shrinkage, rating_noise)
    if "ranking" in sources:
        pairs += ranking_pairs(data, texts)
    kept = []
    for row in pairs:
        if row["weight"] > min_weight and row["weight"] > 0 and row["chosen"] != row["rejected"]:
            kept.append({**row, "weight": row["weight"] if weight == "reliability" else 1.0})
    return {"pairs": kept, "ratings": ratings, "rankings": ranking_rows(data, texts)}


class _Texts:
    """Response id -> its record, with an error that names the id when the data lacks it."""

    def __init__(self, data: FeedbackData):
        self.responses = data.responses

    def __getitem__(self, response_id: int) -> ResponseRec:
        try:
            return self.responses[response_id]
        except KeyError:
            raise ValueError(f"response {response_id!r} is judged but missing from FeedbackData.responses; "
                             "collect the project again so every judged response has its text") from None

    def pair(self, chosen: int, rejected: int, margin: float, weight: float, source: str, n: int) -> dict:
        c, r = self[chosen], self[rejected]
        return {"prompt": c.prompt, "chosen": c.text, "rejected": r.text, "margin": float(margin),
                "weight": float(weight), "source": source, "n": int(n)}


def comparison_pairs(data: FeedbackData, texts: _Texts, strength_margin: float, use_gold: bool) -> list[dict]:
    """One row per compared response pair: Dawid–Skene winner, weight P(w) - P(l), margin from strength."""
    ds = pair_dawid_skene(data, use_gold=use_gold)
    if ds is None:
        return []
    judged: dict = defaultdict(list)
    for obs in data.pairs:
        judged[obs.a, obs.b].append(obs)
    rows = []
    for (a, b), post in sorted(ds.posteriors.items()):
        p_a, p_b, p_tie = post["a"], post["b"], post.get("tie", 0.0)
        winner = "a" if p_a >= p_b else "b"
        if p_tie >= max(p_a, p_b):
            continue  # most probably a tie: no preference to learn
        strengths = [o.strength for o in judged[a, b] if o.winner == winner and o.strength is not None]
        margin = strength_margin * sum(strengths) / len(strengths) if strengths else 0.0
        chosen, rejected = (a, b) if winner == "a" else (b, a)
        rows.append(texts.pair(chosen, rejected, margin, abs(p_a - p_b), "comparison", len(judged[a, b])))
    return rows


def rating_rows(data: FeedbackData, cal: Optional[Calibration], texts: _Texts) -> list[dict]:
    """One row per rated response: calibrated ``score``, ``raw_mean`` and ``n`` ratings."""
    if cal is None:
        return []
    counts = defaultdict(int)
    for obs in data.ratings:
        counts[obs.response_id] += 1
    rows = []
    for rid in sorted(cal.scores, key=lambda r: (texts[r].prompt_id, r)):
        rec = texts[rid]
        rows.append({"prompt": rec.prompt, "response": rec.text, "score": cal.scores[rid],
                     "raw_mean": cal.raw_means[rid], "n": counts[rid]})
    return rows


def rating_noise_variances(data: FeedbackData, cal: Calibration, shrinkage: float,
                           rating_noise: float) -> dict[str, float]:
    """Per annotator the variance of one rating around ``scale * score + offset`` (shrunk; module docstring)."""
    n_item = defaultdict(int)
    for obs in data.ratings:
        n_item[obs.response_id] += 1
    ss, m = defaultdict(float), defaultdict(int)
    for obs in data.ratings:
        n = n_item[obs.response_id]
        if n < 2:
            continue  # a lone rating fits its own score exactly: no evidence about noise
        pred = cal.scales[obs.annotator] * cal.scores[obs.response_id] + cal.offsets[obs.annotator]
        ss[obs.annotator] += (obs.score - pred) ** 2 * n / (n - 1)
        m[obs.annotator] += 1
    total_m = sum(m.values())
    project = (sum(ss.values()) + shrinkage * rating_noise ** 2) / (total_m + shrinkage) \
        if total_m + shrinkage > 0 else rating_noise ** 2
    return {a: max((ss[a] + shrinkage * project) / (m[a] + shrinkage) if m[a] + shrinkage > 0 else project, 1e-12)
            for a in cal.offsets}


def rating_pairs(data: FeedbackData, cal: Calibration, texts: _Texts, min_gap: float, shrinkage: float,
                 rating_noise: float) -> list[dict]:
    """Pairs of calibrated scores within a prompt (``pairs_from_scores``), weight 2Φ(z) - 1."""
    noise = rating_noise_variances(data, cal, shrinkage, rating_noise)
    precision, counts = defaultdict(float), defaultdict(int)
    for obs in data.ratings:  # calibrated rating (r - b) / a has variance σ^2 / a^2
        precision[obs.response_id] += cal.scales[obs.annotator] ** 2 / noise[obs.annotator]
        counts[obs.response_id] += 1
    scored = [{"prompt": texts[rid].prompt_id, "response": rid, "score": s}
              for rid, s in sorted(cal.scores.items(), key=lambda kv: (texts[kv[0]].prompt_id, kv[0]))]
    rows = []
    for pair in pairs_from_scores(scored, min_gap=min_gap):
        chosen, rejected = pair["chosen"], pair["rejected"]
        sd = math.sqrt(1 / precision[chosen] + 1 / precision[rejected])
        weight = math.erf(pair["margin"] / (sd * math.sqrt(2))) if sd > 0 else 1.0  # 2Φ(gap/sd) - 1
        rows.append(texts.pair(chosen, rejected, pair["margin"], weight, "rating",
                               counts[chosen] + counts[rejected]))
    return rows


def ranking_pairs(data: FeedbackData, texts: _Texts) -> list[dict]:
    """Every pair of every ranking as a vote; majority per response pair, weight (for - against) / votes."""
    votes: dict = defaultdict(lambda: defaultdict(int))
    for obs in data.rankings:
        for better, worse in combinations(obs.order, 2):
            votes[min(better, worse), max(better, worse)][better] += 1
    rows = []
    for (x, y), count in sorted(votes.items()):
        if count[x] == count[y]:
            continue  # an even split says nothing
        chosen, rejected = (x, y) if count[x] > count[y] else (y, x)
        total = count[x] + count[y]
        rows.append(texts.pair(chosen, rejected, 0.0, (count[chosen] - count[rejected]) / total, "ranking", total))
    return rows


def ranking_rows(data: FeedbackData, texts: _Texts) -> list[dict]:
    """One consensus ranking per ranked set of responses: by mean position (Borda), then response id."""
    positions: dict = defaultdict(lambda: defaultdict(list))
    for obs in data.rankings:
        for k, rid in enumerate(obs.order):
            positions[tuple(sorted(obs.order))][rid].append(k)
    rows = []
    for key in sorted(positions, key=lambda ids: (texts[ids[0]].prompt_id, ids)):
        by_id = positions[key]
        order = sorted(by_id, key=lambda rid: (float(np.mean(by_id[rid])), rid))
        rows.append({"prompt": texts[order[0]].prompt, "responses": [texts[rid].text for rid in order],
                     "n": len(by_id[order[0]])})
    return [row for row in rows if len(set(row["responses"])) == len(row["responses"])]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` as JSON lines atomically (temporary file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; an export is meant to be read by the training job
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
