"""Annotator calibration: hand-computed cases, the exact ridge solution, a naive loop, recovery of
simulated biases, shrinkage, scales, and pairs from calibrated scores."""

import numpy as np
import pytest

from rlhfkit.feedback import calibrate_ratings, calibrated_pairs, pairs_from_scores


def simulate(n_items=300, n_ann=6, per_item=3, offset_std=0.5, noise=0.2, scales=None, seed=0):
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n_items)
    offsets = rng.normal(0, offset_std, n_ann)
    scales = np.ones(n_ann) if scales is None else np.asarray(scales)
    rows = []
    for i in range(n_items):
        for j in rng.choice(n_ann, per_item, replace=False):
            rows.append({"item": i, "annotator": f"a{j}", "score": scales[j] * quality[i] + offsets[j]
                         + rng.normal(0, noise)})
    return rows, quality, offsets


def test_hand_computed_two_by_two():
    # annotator x rates 1 point above y on both items: offsets +-0.5, scores the midpoints
    rows = [("i", "x", 3.0), ("i", "y", 2.0), ("j", "x", 2.0), ("j", "y", 1.0)]
    cal = calibrate_ratings(rows, shrinkage=0.0)
    assert cal.offsets == pytest.approx({"x": 0.5, "y": -0.5}, abs=1e-6)
    assert cal.scores == pytest.approx({"i": 2.5, "j": 1.5}, abs=1e-6)
    assert cal.raw_means == {"i": 2.5, "j": 1.5}
    assert cal.converged and cal.residual_std == pytest.approx(0.0, abs=1e-6)
    assert cal.calibrate(3.0, "x") == pytest.approx(2.5, abs=1e-6)


def test_hand_computed_shrinkage():
    # One annotator (x) gives 3 where two others give 2 on one shared item. With shrinkage lam the
    # ridge optimum is offsets (2b, -b, -b) with b = 1 / (3 * (1 + lam) * 1.5 ...): solve it directly.
    rows = [("i", "x", 3.0), ("i", "y", 2.0), ("i", "z", 2.0)]
    lam = 1.0
    cal = calibrate_ratings(rows, shrinkage=lam, tol=1e-12, max_iter=10_000)
    # residuals from s: e_j = r_j - s; offsets b_j = e_j / (1 + lam); s solves sum_j (r_j - s - b_j) = 0
    # -> sum_j e_j * lam / (1 + lam) = 0 -> s = mean(r) = 7/3, b = (2/3, -1/3, -1/3) / 2
    assert cal.scores["i"] == pytest.approx(7 / 3, abs=1e-6)
    assert [cal.offsets[a] for a in "xyz"] == pytest.approx([1 / 3, -1 / 6, -1 / 6], abs=1e-6)


def exact_ridge(rows, lam):
    """Minimise sum (r - s_i - b_j)^2 + lam * sum b_j^2 subject to sum b_j = 0 by one linear solve."""
    items = sorted({r["item"] for r in rows})
    anns = sorted({r["annotator"] for r in rows})
    S, A = len(items), len(anns)
    X = np.zeros((len(rows), S + A))
    y = np.zeros(len(rows))
    for k, r in enumerate(rows):
        X[k, items.index(r["item"])] = 1
        X[k, S + anns.index(r["annotator"])] = 1
        y[k] = r["score"]
    # KKT system of the constrained least squares
    H = X.T @ X + np.diag([0.0] * S + [lam] * A)
    c = np.array([0.0] * S + [1.0] * A)
    K = np.block([[H, c[:, None]], [c[None, :], np.zeros((1, 1))]])
    sol = np.linalg.solve(K, np.concatenate([X.T @ y, [0.0]]))
    return dict(zip(items, sol[:S])), dict(zip(anns, sol[S:S + A]))


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
def test_matches_exact_ridge_solution(lam):
    rows, _, _ = simulate(n_items=40, n_ann=5, per_item=2, seed=1)
    cal = calibrate_ratings(rows, shrinkage=lam, tol=1e-12, max_iter=20_000)
    scores, offsets = exact_ridge(rows, lam)
    assert cal.converged
    for a, b in offsets.items():
        assert cal.offsets[a] == pytest.approx(b, rel=1e-5, abs=1e-6)
    for i, s in scores.items():
        assert cal.scores[i] == pytest.approx(s, rel=1e-5, abs=1e-6)
    assert abs(sum(cal.offsets.values())) < 1e-6


def naive_als(rows, lam, sweeps):
    """The additive model's alternating least squares written as plain loops."""
    items = list(dict.fromkeys(r["item"] for r in rows))
    anns = list(dict.fromkeys(r["annotator"] for r in rows))
    s = {i: np.mean([r["score"] for r in rows if r["item"] == i]) for i in items}
    b = {a: 0.0 for a in anns}
    for _ in range(sweeps):
        for i in items:
            mine = [r for r in rows if r["item"] == i]
            s[i] = sum(r["score"] - b[r["annotator"]] for r in mine) / len(mine)
        for a in anns:
            mine = [r for r in rows if r["annotator"] == a]
            b[a] = sum(r["score"] - s[r["item"]] for r in mine) / (len(mine) + lam)
        mean_b = sum(b.values()) / len(b)
        b = {a: v - mean_b for a, v in b.items()}
        s = {i: v + mean_b for i, v in s.items()}
    return s, b


def test_equals_naive_loop_sweep_by_sweep():
    rows, _, _ = simulate(n_items=30, n_ann=4, per_item=2, seed=2)
    for sweeps in (1, 3, 7):
        cal = calibrate_ratings(rows, shrinkage=1.5, max_iter=sweeps, tol=0.0)
        s, b = naive_als(rows, 1.5, sweeps)
        assert cal.iterations == sweeps
        assert cal.offsets == pytest.approx(b, rel=1e-9, abs=1e-12)
        assert cal.scores == pytest.approx(s, rel=1e-9, abs=1e-12)


def test_recovers_simulated_offsets():
    rows, quality, offsets = simulate(n_items=400, n_ann=6, per_item=3, offset_std=0.5, noise=0.2, seed=3)
    cal = calibrate_ratings(rows)
    truth = offsets - offsets.mean()  # identifiable up to a constant: compare centred offsets
    est = np.array([cal.offsets[f"a{j}"] for j in range(6)])
    assert np.abs(est - truth).max() < 0.05
    scores = np.array([cal.scores[i] for i in range(400)])
    assert np.corrcoef(scores, quality)[0, 1] > 0.99
    # calibrated scores are closer to the truth (shifted by the mean offset) than raw means
    raw = np.array([cal.raw_means[i] for i in range(400)])
    target = quality + offsets.mean()
    assert np.abs(scores - target).mean() < 0.6 * np.abs(raw - target).mean()


def test_shrinkage_pulls_sparse_annotators_towards_zero():
    rows, _, _ = simulate(n_items=100, n_ann=4, per_item=2, offset_std=0.8, seed=4)
    rows.append({"item": 0, "annotator": "newbie", "score": rows[0]["score"] + 2.0})  # one rating, far off
    loose = calibrate_ratings(rows, shrinkage=0.0)
    tight = calibrate_ratings(rows, shrinkage=5.0)
    assert loose.counts["newbie"] == 1
    assert abs(tight.offsets["newbie"]) < 0.5 * abs(loose.offsets["newbie"])
    # annotators with ~50 ratings keep most of their differences (5 pseudo-ratings against 50 real ones;
    # the level moves with the mean-0 convention: an unshrunk newbie at +2 pulls everyone else down by 2/5)
    for a in ("a1", "a2", "a3"):
        assert tight.offsets[a] - tight.offsets["a0"] == pytest.approx(loose.offsets[a] - loose.offsets["a0"],
                                                                        abs=0.2)


def test_scale_option_recovers_scales():
    scales = [0.6, 0.8, 1.0, 1.25, 1.6]
    rows, _, offsets = simulate(n_items=400, n_ann=5, per_item=3, noise=0.1, scales=scales, seed=5)
    cal = calibrate_ratings(rows, scale=True, shrinkage=0.5)
    est = np.array([cal.scales[f"a{j}"] for j in range(5)])
    # identifiable up to a common factor: compare after normalising both to geometric mean 1
    truth = np.array(scales) / np.exp(np.mean(np.log(scales)))
    assert np.abs(est - truth).max() < 0.06
    assert np.exp(np.mean(np.log(est))) == pytest.approx(1.0, abs=1e-6)
    additive = calibrate_ratings(rows)
    assert set(additive.scales.values()) == {1.0}


def test_bad_input():
    with pytest.raises(ValueError, match="no ratings"):
        calibrate_ratings([])
    with pytest.raises(ValueError, match="no \\['annotator'\\]"):
        calibrate_ratings([{"item": 1, "score": 2}])
    with pytest.raises(ValueError, match="non-finite"):
        calibrate_ratings([(1, "a", float("nan"))])
    with pytest.raises(ValueError, match="shrinkage"):
        calibrate_ratings([(1, "a", 1.0)], shrinkage=-1)


def test_pairs_from_scores_gap_margin_and_cap():
    rows = [{"prompt": "p", "response": r, "score": s} for r, s in (("a", 3.0), ("b", 2.9), ("c", 1.0))]
    rows.append({"prompt": "q", "response": "d", "score": 2.0})  # a prompt with one response makes no pair
    pairs = pairs_from_scores(rows, min_gap=0.25)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "c"), ("b", "c")]  # a~b is a near-tie
    assert [p["margin"] for p in pairs] == pytest.approx([2.0, 1.9])
    assert len(pairs_from_scores(rows, min_gap=0.0)) == 3
    capped = pairs_from_scores(rows, min_gap=0.0, max_pairs_per_prompt=2, seed=1)
    assert len(capped) == 2 and capped == pairs_from_scores(rows, min_gap=0.0, max_pairs_per_prompt=2, seed=1)
    with pytest.raises(ValueError):
        pairs_from_scores(rows, min_gap=-1)


def test_calibration_fixes_an_order_that_raw_means_get_wrong():
    # harsh annotator h (-0.5) and generous g (+0.5) both rate two anchor items; x (true 2.0) is rated by h
    # only, y (true 1.8) by g only, so raw means put y above x.
    ratings = [("z1", "h", 1.5), ("z1", "g", 2.5), ("z2", "h", 2.0), ("z2", "g", 3.0), ("x", "h", 1.5),
               ("y", "g", 2.3)]
    rows = [{"prompt": "p", "response": item, "annotator": a, "score": s} for item, a, s in ratings]
    pairs, cal = calibrated_pairs(rows, shrinkage=0.0, min_gap=0.1)
    assert cal.raw_means[("p", "y")] > cal.raw_means[("p", "x")]
    assert cal.scores[("p", "x")] == pytest.approx(2.0, abs=1e-6)
    assert cal.scores[("p", "y")] == pytest.approx(1.8, abs=1e-6)
    assert {"prompt": "p", "chosen": "x", "rejected": "y", "margin": pytest.approx(0.2)} in pairs
