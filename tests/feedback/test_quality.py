"""Annotation quality: kappa/agreement/alpha/tau by hand and against naive loops, Dawid–Skene (hand
E-step, naive-loop M/E steps, simulated reliable/spammer/adversarial annotators), gold accuracy,
position bias, and the reports."""

import itertools

import numpy as np
import pytest

from rlhfkit.feedback import quality
from rlhfkit.feedback.dawid_skene import dawid_skene, e_step, m_step, pair_dawid_skene
from rlhfkit.feedback.records import FeedbackData, PairObs, RankingObs, RatingObs, ResponseRec


# ----------------------------------------------------------------------------- agreement statistics

def test_cohen_kappa_hand_computed():
    # 50 units: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o = 0.7,
    # p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = (0.7 - 0.5) / 0.5 = 0.4
    x = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    y = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert quality.cohen_kappa(x, y) == pytest.approx(0.4, rel=1e-9)
    assert quality.cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined
    assert quality.cohen_kappa([], []) is None
    assert quality.cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal length"):
        quality.cohen_kappa(["a"], ["a", "b"])


def _naive_kappa(x, y):
    labels = sorted(set(x) | set(y))
    n = len(x)
    p_o = sum(1 for i in range(n) if x[i] == y[i]) / n
    p_e = 0.0
    for k in labels:
        p_e += (sum(1 for v in x if v == k) / n) * (sum(1 for v in y if v == k) / n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def test_agreement_matches_naive_loops():
    rng = np.random.default_rng(3)
    names = ["ann", "bob", "cy", "dee"]
    table = {}
    for unit in range(60):
        who = rng.choice(names, size=rng.integers(1, 5), replace=False)
        table[unit] = {str(a): str(rng.choice(["a", "b", "tie"], p=[0.5, 0.35, 0.15])) for a in who}
    result = quality.agreement(table)
    total_equal = total_n = 0
    weighted = weight = 0.0
    for a1, a2 in itertools.combinations(names, 2):
        x = [table[u][a1] for u in table if a1 in table[u] and a2 in table[u]]
        y = [table[u][a2] for u in table if a1 in table[u] and a2 in table[u]]
        row = next(r for r in result.pairs if (r["a1"], r["a2"]) == (a1, a2))
        assert row["n"] == len(x)
        assert row["agreement"] == pytest.approx(sum(u == v for u, v in zip(x, y)) / len(x), rel=1e-12)
        assert row["kappa"] == pytest.approx(_naive_kappa(x, y), rel=1e-9)
        total_equal += sum(u == v for u, v in zip(x, y))
        total_n += len(x)
        weighted += _naive_kappa(x, y) * len(x)
        weight += len(x)
    assert result.agreement == pytest.approx(total_equal / total_n, rel=1e-12)
    assert result.kappa == pytest.approx(weighted / weight, rel=1e-9)
    # per annotator: own labels vs every other label on shared units, pooled
    own, other = [], []
    for labels in table.values():
        if "bob" in labels:
            for a, v in labels.items():
                if a != "bob":
                    own.append(labels["bob"])
                    other.append(v)
    assert result.by_annotator["bob"]["n"] == len(own)
    assert result.by_annotator["bob"]["kappa"] == pytest.approx(_naive_kappa(own, other), rel=1e-9)


def test_krippendorff_alpha_hand_computed():
    # coders A = (1, 2, 3), B = (1, 2, 2) on three units; pooled values 1,1,2,2,3,2 (n = 6).
    # interval: D_o = (2 * 1^2 / 1) / 6 = 1/3; D_e = 34 / 30 (ordered pairs of all values); alpha = 12/17.
    # ordinal (frequencies n1=2, n2=3, n3=1): d(1,2)=(5-2.5)^2, d(2,3)=(4-2)^2, d(1,3)=(6-1.5)^2,
    #   D_o = 2 * 4 / 6, D_e = (2*6*6.25 + 2*2*20.25 + 2*3*4) / 30 = 6; alpha = 1 - (8/6)/6 = 7/9.
    # nominal: D_o = 2/6, D_e = 22/30 (ordered pairs of different values); alpha = 6/11.
    table = {1: {"A": 1, "B": 1}, 2: {"A": 2, "B": 2}, 3: {"A": 3, "B": 2}}
    assert quality.krippendorff_alpha(table, "interval") == pytest.approx(12 / 17, rel=1e-9)
    assert quality.krippendorff_alpha(table, "ordinal") == pytest.approx(7 / 9, rel=1e-9)
    labels = {u: {a: "xyz"[v - 1] for a, v in by.items()} for u, by in table.items()}
    assert quality.krippendorff_alpha(labels, "nominal") == pytest.approx(6 / 11, rel=1e-9)
    assert quality.krippendorff_alpha({1: {"A": 1}, 2: {"B": 2}}) is None  # nothing pairable
    assert quality.krippendorff_alpha({1: {"A": 2, "B": 2}}) is None  # one value: no variation


def test_kendall_tau_hand_computed():
    assert quality.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert quality.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    with pytest.raises(ValueError, match="same"):
        quality.kendall_tau([1, 2], [1, 3])


# ----------------------------------------------------------------------------- Dawid–Skene

def test_e_step_hand_computed():
    # one unit, annotator 0 says class 0, annotator 1 says class 1; pi uniform:
    # T ∝ (0.5 * 0.9 * 0.4, 0.5 * 0.2 * 0.7) = (0.18, 0.07) -> (0.72, 0.28)
    C = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.3, 0.7]]])
    T, log_joint = e_step(np.array([0.5, 0.5]), C, np.array([0, 0]), np.array([0, 1]), np.array([0, 1]), 1)
    assert T[0] == pytest.approx([0.72, 0.28], rel=1e-9)
    assert log_joint[0] == pytest.approx(np.log([0.18, 0.07]), rel=1e-9)


def test_m_and_e_steps_match_naive_loops():
    rng = np.random.default_rng(0)
    U, A, K, N = 7, 3, 3, 25
    I, J, L = rng.integers(0, U, N), rng.integers(0, A, N), rng.integers(0, K, N)
    I[:U] = np.arange(U)  # every unit judged at least once
    T = rng.dirichlet(np.ones(K), U)
    alpha = np.full((K, K), 1.0) + np.eye(K)
    pi, C = m_step(T, I, J, L, A, alpha)
    for j in range(A):
        for k in range(K):
            row = [alpha[k, l] + sum(T[I[n], k] for n in range(N) if J[n] == j and L[n] == l) for l in range(K)]
            assert C[j, k] == pytest.approx(np.array(row) / sum(row), rel=1e-12)
    assert pi == pytest.approx([(T[:, k].sum() + 1) / (U + K) for k in range(K)], rel=1e-12)
    T2, _ = e_step(pi, C, I, J, L, U)
    for i in range(U):
        joint = [pi[k] * np.prod([C[J[n], k, L[n]] for n in range(N) if I[n] == i]) for k in range(K)]
        assert T2[i] == pytest.approx(np.array(joint) / sum(joint), rel=1e-9)


def simulate_pairs(n_pairs=400, seed=0, extra=()):
    """Each pair judged by 3 of: reliable (90/85/80 %), a random spammer, an adversary (always flipped)."""
    rng = np.random.default_rng(seed)
    accuracy = {"r1": 0.9, "r2": 0.85, "r3": 0.8, "spammer": 0.5, "adversary": 0.0}
    obs, truth = [], {}
    for i in range(n_pairs):
        a, b = 2 * i, 2 * i + 1
        z = "a" if rng.random() < 0.5 else "b"
        truth[a, b] = z
        for name in rng.choice(list(accuracy), 3, replace=False):
            right = rng.random() < accuracy[name]
            winner = z if right else ("b" if z == "a" else "a")
            left = a if rng.random() < 0.5 else b
            obs.append(PairObs(i, a, b, str(name), winner, left, strength=int(rng.integers(1, 4))))
    obs += list(extra)
    return FeedbackData("sim", pairs=obs), truth


def test_dawid_skene_recovers_reliable_spammer_and_adversary_and_beats_majority_vote():
    data, truth = simulate_pairs()
    ds = pair_dawid_skene(data)
    assert ds.converged and ds.classes == ("a", "b")
    assert np.all(np.diff(ds.history) >= -1e-8), "EM must not lower the log posterior"
    for name in ("r1", "r2", "r3"):
        assert ds.reliability[name] > 0.75 and ds.skill[name] > 0.5, (name, ds.skill)
    assert abs(ds.skill["spammer"]) < 0.3 and 0.35 < ds.reliability["spammer"] < 0.65
    assert ds.skill["adversary"] < -0.7 and ds.reliability["adversary"] < 0.15
    assert ds.reliability["r1"] > ds.reliability["r3"]
    table = quality.pair_table(data)
    majority = np.mean([max("ab", key=lambda c: sum(v == c for v in table[u].values())) == z
                        for u, z in truth.items()])
    posterior = np.mean([ds.label(u) == z for u, z in truth.items()])
    assert posterior > majority + 0.1, (posterior, majority)
    assert posterior > 0.9
    # the adversary's lone confusion matrix is anti-diagonal
    assert ds.confusion["adversary"][0, 1] > 0.8 and ds.confusion["adversary"][1, 0] > 0.8


def test_prior_keeps_a_one_judgement_annotator_below_certainty():
    data, truth = simulate_pairs(200, seed=1)
    unit = next(iter(truth))
    once = PairObs(999, *unit, annotator="once", winner=truth[unit], left=unit[0])
    ds = pair_dawid_skene(FeedbackData("x", pairs=data.pairs + [once]))
    assert 0.5 < ds.reliability["once"] < 0.8
    assert ds.counts["once"] == 1


def test_gold_fixes_the_posterior_and_ties_add_a_class():
    gold = [PairObs(1, 1, 2, "x", "b", 1, is_gold=True, gold_winner="a"),
            PairObs(1, 1, 2, "y", "b", 2, is_gold=True, gold_winner="a")]
    plain = [PairObs(2, 3, 4, "x", "tie", 3), PairObs(2, 3, 4, "y", "a", 3)]
    ds = pair_dawid_skene(gold + plain)
    assert ds.classes == ("a", "b", "tie")
    assert ds.posteriors[(1, 2)] == {"a": 1.0, "b": 0.0, "tie": 0.0}
    assert pair_dawid_skene(gold + plain, use_gold=False).label((1, 2)) == "b"
    assert pair_dawid_skene([]) is None
    with pytest.raises(ValueError, match="not in classes"):
        dawid_skene([(1, "x", "c")], classes=("a", "b"))


# ----------------------------------------------------------------------------- gold, position bias

def test_gold_accuracy_hand_computed():
    data = FeedbackData("g", ratings=[RatingObs(1, 10, "x", 3, is_gold=True, gold_score=3),
                                      RatingObs(2, 11, "x", 1, is_gold=True, gold_score=2),
                                      RatingObs(3, 12, "x", 1)],  # not gold: ignored
                        pairs=[PairObs(4, 1, 2, "x", "a", 1, is_gold=True, gold_winner="a"),
                               PairObs(4, 1, 2, "y", "tie", 1, is_gold=True, gold_winner="a")],
                        rankings=[RankingObs(5, (1, 3, 2), (1, 2, 3), "x", is_gold=True, gold_order=(1, 2, 3))])
    gold = quality.gold_accuracy(data)
    # x: rating 1 + rating 0 + pair 1 + ranking (tau 1/3 -> credit 2/3) = 2.667 over 4
    assert gold["x"] == {"n": 4, "accuracy": pytest.approx((1 + 0 + 1 + 2 / 3) / 4)}
    assert gold["y"] == {"n": 1, "accuracy": 0.0}


def test_position_bias_binomial_p_hand_computed():
    # 9 of 10 non-tie choices on the left: P(X >= 9) = 11/1024, two-sided p = 22/1024
    pairs = [PairObs(i, 2 * i, 2 * i + 1, "lefty", "a" if i % 2 else "b", 2 * i + (0 if i % 2 else 1))
             for i in range(9)]
    pairs += [PairObs(9, 18, 19, "lefty", "a", 19), PairObs(10, 20, 21, "lefty", "tie", 20)]
    bias = quality.position_bias(FeedbackData("p", pairs=pairs))["lefty"]
    assert bias["n"] == 10 and bias["left"] == 9 and bias["left_share"] == 0.9
    assert bias["p"] == pytest.approx(22 / 1024, rel=1e-9)


# ----------------------------------------------------------------------------- reports

def mixed_data():
    """Simulated comparisons plus ratings (one annotator rates 1 point high) and two rankings."""
    rng = np.random.default_rng(5)
    lefty = [PairObs(1000 + i, 2 * i, 2 * i + 1, "lefty", "a", 2 * i) for i in range(30)]
    data, _ = simulate_pairs(300, seed=2, extra=lefty)
    responses = {i: ResponseRec(i, i // 4, f"prompt {i // 4}", f"response {i}") for i in range(40)}
    quality_of = rng.integers(1, 4, 40)
    ratings = []
    for rid in range(40):
        for name, shift in (("r1", 0), ("r2", 0), ("harsh", -1)):
            ratings.append(RatingObs(rid, rid, name, float(np.clip(quality_of[rid] + shift, 1, 3))))
    rankings = [RankingObs(1, (0, 1, 2), (2, 1, 0), "r1"), RankingObs(1, (0, 2, 1), (0, 1, 2), "r2")]
    return FeedbackData("mixed", (1, 3), responses, ratings, data.pairs, rankings)


def test_annotator_and_project_report():
    data = mixed_data()
    report = quality.build_report(data)
    rows = {r["annotator"]: r for r in report.annotators}
    assert list(rows) == data.annotators
    assert rows["harsh"]["offset"] < -0.3 < 0 < rows["r1"]["offset"]
    assert rows["harsh"]["scale"] < 0.9 < 1.1 < rows["r1"]["scale"]  # clipping at 1 squeezes harsh's scale
    assert rows["harsh"]["n_ratings"] == 40 and rows["harsh"]["n_pairs"] == 0 and rows["harsh"]["reliability"] is None
    assert rows["r1"]["n_rankings"] == 1
    assert "flipped" in rows["adversary"]["flags"] and "near random" in rows["spammer"]["flags"]
    assert "position bias" in rows["lefty"]["flags"] and rows["lefty"]["left_share"] > 0.9
    assert rows["r1"]["flags"] == []
    assert rows["adversary"]["pair_kappa"] < 0 < rows["r1"]["pair_kappa"]
    project = quality.project_report(data)
    ratings = quality.rating_table(data)
    assert project["rating_alpha_interval"] == pytest.approx(quality.krippendorff_alpha(ratings, "interval"))
    assert project["rating_alpha_ordinal"] == pytest.approx(quality.krippendorff_alpha(ratings, "ordinal"))
    assert project["ranking_tau"] == pytest.approx(1 / 3) and project["ranking_tau_n"] == 1
    assert project["pairs"] == len(data.pairs) and project["annotators"] == len(rows)
    assert quality.annotator_report(data) == report.annotators


def test_report_markdown_and_rows():
    data = mixed_data()
    table = quality.report_rows(data)
    assert all(len(row) == len(table["header"]) for row in table["rows"])
    text = quality.report_markdown(data)
    assert text.startswith("# Feedback quality: mixed")
    assert "| " + " | ".join(table["header"]) + " |" in text
    for name in data.annotators:
        assert f"| {name} |" in text
    lefty = next(line for line in text.splitlines() if line.startswith("| lefty |"))
    assert "position bias" in lefty and "<0.001" in lefty
    assert "rating alpha (interval / ordinal)" in text
    empty = quality.report_markdown(FeedbackData("empty"))
    assert "0 ratings, 0 comparisons, 0 rankings" in empty


def test_binomial_p_half_against_naive_sum():
    from math import comb

    assert quality.binomial_p_half(5, 10) == 1.0 and quality.binomial_p_half(0, 0) == 1.0
    for n in range(1, 25):
        for k in range(n + 1):
            pk = comb(n, k) / 2 ** n
            naive = sum(comb(n, i) / 2 ** n for i in range(n + 1) if comb(n, i) / 2 ** n <= pk * (1 + 1e-12))
            assert quality.binomial_p_half(k, n) == pytest.approx(min(1.0, naive), rel=1e-12)
    with pytest.raises(ValueError):
        quality.binomial_p_half(3, 2)
