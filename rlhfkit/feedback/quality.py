"""Annotation quality: agreement, annotator reliability, gold accuracy, position bias, reports.

Everything here is a pure function of :class:`~rlhfkit.feedback.records.FeedbackData` (or
plain lists), so the same numbers come out of the CLI (``rlhfkit feedback report``), the
admin page and a notebook. The unit of agreement is the thing judged, not the item that
carried it: a response for ratings, the unordered response pair ``(a, b)`` for comparisons,
the set of responses for rankings. When one annotator judged a unit twice, ratings are
averaged and for labels the later judgement counts.

- Krippendorff's alpha (interval and ordinal ratings, nominal pair labels) via the
  ``krippendorff`` package: it handles any number of annotators and missing judgements.
- Raw agreement and Cohen's kappa, per annotator pair and overall (kappa is the
  unit-weighted mean of the pair kappas), own code: ten lines do not justify scikit-learn.
- Dawid–Skene (1979) EM over comparison labels (a / b / tie), in ``dawid_skene.py``: a
  confusion matrix and a reliability per annotator, a posterior per pair.
- Gold accuracy; position bias (share of non-tie comparisons won by the left response,
  two-sided exact binomial test against 1/2, :func:`binomial_p_half`).
- Rating offsets and scales from ``calibration.calibrate_ratings`` (shrunk towards the
  neutral annotator).

``build_report(data)`` computes all of it once; ``annotator_report``, ``project_report``,
``report_markdown`` and ``report_rows`` (pre-formatted cells for a template) read from it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Hashable, Iterable, Mapping, Optional, Sequence

import krippendorff
import numpy as np

from .calibration import Calibration, calibrate_ratings
from .dawid_skene import DawidSkene, pair_dawid_skene
from .records import FeedbackData

def binomial_p_half(k: int, n: int) -> float:
    """Two-sided exact binomial test of ``k`` successes in ``n`` against p = 1/2.

    The distribution is symmetric, so the outcomes at most as likely as ``k`` are the two tails
    beyond ``min(k, n - k)``: p = min(1, 2 * P(X >= max(k, n - k))), in exact integer arithmetic
    (what ``scipy.stats.binomtest(k, n, 0.5).pvalue`` gives, without importing SciPy).
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    m = max(k, n - k)
    tail = sum(math.comb(n, i) for i in range(m, n + 1))
    return min(1.0, 2 * tail / 2 ** n)


# Flag thresholds of the report (documented in docs/feedback.md).
MIN_PAIRS_FOR_FLAGS = 10     # judgements before an annotator's reliability or bias is flagged
LOW_SKILL = 0.2              # Dawid–Skene skill below this: little better than random
FLIPPED_SKILL = -0.2         # below this: systematically the opposite of the consensus
BIAS_P = 0.01                # position-bias p-value below this is flagged
LOW_GOLD = 0.6               # gold accuracy below this (with >= 5 gold judgements) is flagged


# ---------------------------------------------------------------------------------------------
# Agreement statistics on plain label tables
# ---------------------------------------------------------------------------------------------

def cohen_kappa(x: Sequence[Hashable], y: Sequence[Hashable]) -> Optional[float]:
    """Cohen's kappa of two annotators' labels on the same units: ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the share of units with equal labels, ``p_e = sum_k p_x(k) p_y(k)`` the
    agreement expected from each annotator's own label frequencies. ``None`` when it is
    undefined: no units, or ``p_e = 1`` (both always gave the same single label).
    """
    if len(x) != len(y):
        raise ValueError(f"cohen_kappa needs two label lists of equal length, got {len(x)} and {len(y)}")
    n = len(x)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(x, y)) / n
    count_x, count_y = _counts(x), _counts(y)
    p_e = sum(count_x[k] * count_y.get(k, 0) for k in count_x) / n ** 2
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def _counts(labels: Iterable[Hashable]) -> dict:
    counts: dict = defaultdict(int)
    for label in labels:
        counts[label] += 1
    return counts


@dataclass
class Agreement:
    """Agreement of annotators who judged the same units."""
    pairs: list[dict]            # per annotator pair: a1, a2, n (shared units), agreement, kappa
    by_annotator: dict[str, dict]  # per annotator vs everyone else pooled: n, agreement, kappa
    agreement: Optional[float]   # share of equal labels over all annotator pairs on shared units
    kappa: Optional[float]       # unit-weighted mean of the pair kappas (pairs with a defined kappa)
    n: int                       # annotator-pair comparisons behind ``agreement``


def agreement(table: Mapping[Hashable, Mapping[str, Hashable]]) -> Agreement:
    """Raw agreement and Cohen's kappa from ``{unit: {annotator: label}}``.

    Per pair of annotators: over the units both labelled. Per annotator: every (own label,
    other annotator's label) on shared units pooled into one table. Overall agreement pools
    all pairs; overall kappa averages the pair kappas weighted by their shared units.
    """
    shared: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
    for labels in table.values():
        for a1, a2 in combinations(sorted(labels), 2):
            shared[a1, a2][0].append(labels[a1])
            shared[a1, a2][1].append(labels[a2])
    rows, own, other = [], defaultdict(list), defaultdict(list)
    for (a1, a2), (x, y) in sorted(shared.items()):
        equal = sum(u == v for u, v in zip(x, y))
        rows.append({"a1": a1, "a2": a2, "n": len(x), "agreement": equal / len(x), "kappa": cohen_kappa(x, y)})
        own[a1] += x
        other[a1] += y
        own[a2] += y
        other[a2] += x
    by_annotator = {a: {"n": len(own[a]), "agreement": sum(u == v for u, v in zip(own[a], other[a])) / len(own[a]),
                        "kappa": cohen_kappa(own[a], other[a])} for a in own}
    n = sum(r["n"] for r in rows)
    with_kappa = [r for r in rows if r["kappa"] is not None]
    weight = sum(r["n"] for r in with_kappa)
    return Agreement(
        pairs=rows, by_annotator=by_annotator,
        agreement=sum(r["agreement"] * r["n"] for r in rows) / n if n else None,
        kappa=sum(r["kappa"] * r["n"] for r in with_kappa) / weight if weight else None, n=n)


def krippendorff_alpha(table: Mapping[Hashable, Mapping[str, float]], level: str = "interval") -> Optional[float]:
    """Krippendorff's alpha of ``{unit: {annotator: value}}`` at ``level`` (interval, ordinal, nominal).

    ``None`` when undefined: no unit with two or more values, or fewer than two distinct values.
    """
    annotators = sorted({a for labels in table.values() for a in labels})
    if not any(len(labels) >= 2 for labels in table.values()):
        return None
    if level == "nominal":  # nominal labels may be strings: code them as integers
        codes = {v: k for k, v in enumerate(sorted({str(v) for labels in table.values() for v in labels.values()}))}
        table = {u: {a: codes[str(v)] for a, v in labels.items()} for u, labels in table.items()}
    matrix = np.full((len(annotators), len(table)), np.nan)  # (annotators, units)
    col = {a: j for j, a in enumerate(annotators)}
    for i, labels in enumerate(table.values()):
        for a, value in labels.items():
            matrix[col[a], i] = float(value)
    if len(np.unique(matrix[~np.isnan(matrix)])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def kendall_tau(order1: Sequence[Hashable], order2: Sequence[Hashable]) -> float:
    """Kendall's tau between two rankings of the same items: (concordant - discordant) / pairs."""
    if set(order1) != set(order2) or len(order1) < 2:
        raise ValueError(f"kendall_tau needs two rankings of the same >= 2 items, got {order1} and {order2}")
    pos = {item: k for k, item in enumerate(order2)}
    signs = [1 if pos[x] < pos[y] else -1 for x, y in combinations(order1, 2)]
    return sum(signs) / len(signs)


# ---------------------------------------------------------------------------------------------
# Tables from records
# ---------------------------------------------------------------------------------------------

def rating_table(data: FeedbackData) -> dict[int, dict[str, float]]:
    """``{response_id: {annotator: mean score}}`` (an annotator's repeated ratings averaged)."""
    sums: dict = defaultdict(lambda: defaultdict(list))
    for obs in data.ratings:
        sums[obs.response_id][obs.annotator].append(obs.score)
    return {r: {a: sum(s) / len(s) for a, s in by.items()} for r, by in sums.items()}


def pair_table(data: FeedbackData) -> dict[tuple[int, int], dict[str, str]]:
    """``{(a, b): {annotator: winner}}`` (an annotator's later judgement of a pair wins)."""
    table: dict = defaultdict(dict)
    for obs in data.pairs:
        table[obs.a, obs.b][obs.annotator] = obs.winner
    return dict(table)


def ranking_agreement(data: FeedbackData) -> tuple[Optional[float], int]:
    """Mean Kendall's tau over pairs of annotators who ranked the same set of responses, and their count."""
    by_set: dict = defaultdict(dict)
    for obs in data.rankings:
        by_set[frozenset(obs.order)][obs.annotator] = obs.order
    taus = [kendall_tau(o1, o2) for orders in by_set.values() for o1, o2 in combinations(orders.values(), 2)]
    return (sum(taus) / len(taus) if taus else None), len(taus)


def gold_accuracy(data: FeedbackData) -> dict[str, dict]:
    """Per annotator ``{"n", "accuracy"}`` over judgements of gold items that have a gold answer.

    Credit per judgement: a rating scores 1 when it rounds to the gold score; a comparison
    when its winner equals the gold winner; a ranking gets the share of its response pairs
    ordered as in the gold order (1 = identical, 0 = reversed).
    """
    credit: dict = defaultdict(list)
    for obs in data.ratings:
        if obs.is_gold and obs.gold_score is not None:
            credit[obs.annotator].append(float(round(obs.score) == round(obs.gold_score)))
    for obs in data.pairs:
        if obs.is_gold and obs.gold_winner is not None:
            credit[obs.annotator].append(float(obs.winner == obs.gold_winner))
    for obs in data.rankings:
        if obs.is_gold and obs.gold_order is not None:
            credit[obs.annotator].append((kendall_tau(obs.order, obs.gold_order) + 1) / 2)
    return {a: {"n": len(c), "accuracy": sum(c) / len(c)} for a, c in credit.items()}


def position_bias(data: FeedbackData) -> dict[str, dict]:
    """Per annotator ``{"n", "left", "left_share", "p"}`` over non-tie comparisons.

    ``p`` is the two-sided exact binomial test of "the left response wins half the time";
    display order is shuffled per assignment, so an unbiased annotator's left share is 1/2
    whatever the responses' quality.
    """
    counts: dict = defaultdict(lambda: [0, 0])
    for obs in data.pairs:
        if obs.winner == "tie":
            continue
        winner = obs.a if obs.winner == "a" else obs.b
        counts[obs.annotator][0] += winner == obs.left
        counts[obs.annotator][1] += 1
    return {a: {"n": n, "left": left, "left_share": left / n, "p": binomial_p_half(left, n)}
            for a, (left, n) in counts.items()}


def rating_calibration(data: FeedbackData, *, shrinkage: float = 2.0, scale: bool = False) -> Optional[Calibration]:
    """``calibrate_ratings`` with the response as the item; ``None`` without ratings."""
    if not data.ratings:
        return None
    return calibrate_ratings([(o.response_id, o.annotator, o.score) for o in data.ratings],
                             shrinkage=shrinkage, scale=scale)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

@dataclass
class QualityReport:
    """All quality numbers of one project; ``annotators`` and ``project`` are plain dicts (JSON-ready)."""
    annotators: list[dict]
    project: dict
    calibration: Optional[Calibration]
    dawid_skene: Optional[DawidSkene]


def build_report(data: FeedbackData, *, shrinkage: float = 2.0) -> QualityReport:
    """Compute every metric once (the app polls this, so nothing is computed twice).

    ``offset`` comes from the additive calibration model (``rating = score + offset``: the
    annotator's bias in scale points, what ``export`` removes by default); ``scale`` from a
    second fit with a per-annotator scale (below 1: uses a narrower part of the scale than
    the average annotator). Both shrunk with ``shrinkage`` pseudo-ratings.

    Per annotator (keys): ``annotator, n_ratings, n_pairs, n_rankings, offset, scale,
    reliability, skill, gold_n, gold_accuracy, left_share, left_p, pair_agreement,
    pair_kappa, rating_agreement, rating_kappa, flags``; ``None`` where not applicable.
    """
    cal = rating_calibration(data, shrinkage=shrinkage, scale=False)
    cal_scale = rating_calibration(data, shrinkage=shrinkage, scale=True)
    ds = pair_dawid_skene(data) if data.pairs else None
    ratings = rating_table(data)
    rating_agree = agreement({u: {a: round(s) for a, s in by.items()} for u, by in ratings.items()})
    pairs = pair_table(data)
    pair_agree = agreement(pairs)
    gold, bias = gold_accuracy(data), position_bias(data)
    n_kind = {kind: _counts(o.annotator for o in getattr(data, kind)) for kind in ("ratings", "pairs", "rankings")}
    rows = []
    for name in data.annotators:
        row = {"annotator": name, "n_ratings": n_kind["ratings"].get(name, 0), "n_pairs": n_kind["pairs"].get(name, 0),
               "n_rankings": n_kind["rankings"].get(name, 0),
               "offset": cal.offsets.get(name) if cal else None, "scale": cal_scale.scales.get(name) if cal_scale else None,
               "reliability": ds.reliability.get(name) if ds else None, "skill": ds.skill.get(name) if ds else None,
               "gold_n": gold.get(name, {}).get("n", 0), "gold_accuracy": gold.get(name, {}).get("accuracy"),
               "left_share": bias.get(name, {}).get("left_share"), "left_p": bias.get(name, {}).get("p"),
               "pair_agreement": pair_agree.by_annotator.get(name, {}).get("agreement"),
               "pair_kappa": pair_agree.by_annotator.get(name, {}).get("kappa"),
               "rating_agreement": rating_agree.by_annotator.get(name, {}).get("agreement"),
               "rating_kappa": rating_agree.by_annotator.get(name, {}).get("kappa")}
        row["flags"] = _flags(row, bias.get(name, {}).get("n", 0))
        rows.append(row)
    tau, tau_n = ranking_agreement(data)
    project = {
        "project": data.project, "scale": list(data.scale), "annotators": len(rows), "responses": len(data.responses),
        "ratings": len(data.ratings), "pairs": len(data.pairs), "rankings": len(data.rankings),
        "rating_alpha_interval": krippendorff_alpha(ratings, "interval"),
        "rating_alpha_ordinal": krippendorff_alpha(ratings, "ordinal"),
        "rating_agreement": rating_agree.agreement, "rating_kappa": rating_agree.kappa,
        "pair_alpha_nominal": krippendorff_alpha(pairs, "nominal"),
        "pair_agreement": pair_agree.agreement, "pair_kappa": pair_agree.kappa,
        "ranking_tau": tau, "ranking_tau_n": tau_n,
        "calibration_residual_std": cal.residual_std if cal else None,
        "class_prior": dict(ds.prior) if ds else None,
        "annotator_pairs": {"ratings": rating_agree.pairs, "pairs": pair_agree.pairs},
    }
    return QualityReport(rows, project, cal, ds)


def _flags(row: dict, n_bias: int) -> list[str]:
    """Short warnings for the admin: what to look at first."""
    flags = []
    if row["n_pairs"] >= MIN_PAIRS_FOR_FLAGS and row["skill"] is not None:
        if row["skill"] < FLIPPED_SKILL:
            flags.append("flipped")
        elif row["skill"] < LOW_SKILL:
            flags.append("near random")
    if n_bias >= MIN_PAIRS_FOR_FLAGS and row["left_p"] is not None and row["left_p"] < BIAS_P:
        flags.append("position bias")
    if row["gold_n"] >= 5 and row["gold_accuracy"] is not None and row["gold_accuracy"] < LOW_GOLD:
        flags.append("low gold accuracy")
    return flags


def annotator_report(data: FeedbackData, **kw) -> list[dict]:
    """One dict per annotator (keys listed in ``build_report``)."""
    return build_report(data, **kw).annotators


def project_report(data: FeedbackData, **kw) -> dict:
    """Project-level counts and agreement (alpha, agreement, kappa, Kendall's tau, class prior)."""
    return build_report(data, **kw).project


# (column key, header) of the annotator table; formatting in _cell
# One name per metric, the same on the admin page, in `rlhfkit feedback report` and in docs/feedback.md:
# a judged pair is a "comparison" everywhere, agreement is "agreement (κ)".
COLUMNS = [("annotator", "annotator"), ("n_ratings", "ratings"), ("n_pairs", "comparisons"),
           ("n_rankings", "rankings"), ("offset", "offset"), ("scale", "scale"), ("reliability", "reliability"),
           ("skill", "skill"), ("gold", "gold accuracy (n)"), ("left", "left share (p)"),
           ("pair_agree", "comparison agreement (κ)"), ("rating_agree", "rating agreement (κ)"), ("flags", "flags")]


def _num(x: Optional[float], digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(p: Optional[float]) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _cell(row: dict, key: str) -> str:
    if key == "gold":
        return "–" if not row["gold_n"] else f"{_num(row['gold_accuracy'])} ({row['gold_n']})"
    if key == "left":
        return "–" if row["left_share"] is None else f"{_num(row['left_share'])} ({_p(row['left_p'])})"
    if key in ("pair_agree", "rating_agree"):
        kind = key.split("_")[0]
        agree, kappa = row[f"{kind}_agreement"], row[f"{kind}_kappa"]
        return "–" if agree is None else f"{_num(agree)} ({_num(kappa)})"
    if key == "flags":
        return ", ".join(row["flags"])
    if key == "offset":
        return _num(row["offset"], signed=True)
    value = row[key]
    return str(value) if isinstance(value, (int, str)) else _num(value)


def report_rows(report: QualityReport | FeedbackData) -> dict:
    """Pre-formatted cells for a template: ``{"header", "rows", "project"}``.

    ``header`` lists column titles, ``rows`` one list of strings per annotator (same order),
    ``project`` (label, value) pairs of the project-level numbers.
    """
    if isinstance(report, FeedbackData):
        report = build_report(report)
    p = report.project
    project = [
        ("judgements", f"{p['ratings']} ratings, {p['pairs']} comparisons, {p['rankings']} rankings"),
        ("annotators", str(p["annotators"])),
        ("rating alpha (interval / ordinal)", f"{_num(p['rating_alpha_interval'], 3)} / "
                                              f"{_num(p['rating_alpha_ordinal'], 3)}"),
        ("rating agreement (κ)", f"{_num(p['rating_agreement'])} ({_num(p['rating_kappa'])})"),
        ("comparison alpha (nominal)", _num(p["pair_alpha_nominal"], 3)),
        ("comparison agreement (κ)", f"{_num(p['pair_agreement'])} ({_num(p['pair_kappa'])})"),
        ("ranking Kendall τ (pairs)", f"{_num(p['ranking_tau'])} ({p['ranking_tau_n']})"),
    ]
    return {"header": [title for _, title in COLUMNS],
            "rows": [[_cell(row, key) for key, _ in COLUMNS] for row in report.annotators], "project": project}


def report_markdown(data: FeedbackData | QualityReport) -> str:
    """A markdown page: project-level agreement, then one table row per annotator."""
    table = report_rows(data)
    name = data.project["project"] if isinstance(data, QualityReport) else data.project
    lines = [f"# Feedback quality: {name}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in table["project"]]
    lines += ["", "| " + " | ".join(table["header"]) + " |", "|" + "---|" * len(table["header"])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table["rows"]]
    lines += ["", "offset/scale: rating bias from calibration (shrunk); reliability: expected accuracy on "
                  "comparisons (Dawid–Skene); skill: kappa against the estimated truth (0 = random, < 0 = flipped); "
                  "left share: non-tie comparisons won by the left response (p: binomial test vs 1/2)."]
    return "\n".join(lines) + "\n"
