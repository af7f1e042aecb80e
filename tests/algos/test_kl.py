import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from rlhfkit.algos import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_abs,
    kl_full,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalized_rewards,
    kl_penalty,
)

TIGHT = dict(rtol=1e-6, atol=1e-7)
LN2 = math.log(2)

# token 0: p = 1/2, p_ref = 1/4; token 1: p = 1/4, p_ref = 1/2
LOGP = torch.tensor([[math.log(0.5), math.log(0.25)]], dtype=torch.float64)
REF = torch.tensor([[math.log(0.25), math.log(0.5)]], dtype=torch.float64)


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------- estimators


def test_estimators_hand():
    assert_close(kl_k1(LOGP, REF), t64([[LN2, -LN2]]), **TIGHT)
    assert_close(kl_abs(LOGP, REF), t64([[LN2, LN2]]), **TIGHT)
    assert_close(kl_k2(LOGP, REF), t64([[0.5 * LN2**2, 0.5 * LN2**2]]), **TIGHT)
    # k3 = r - 1 - log r, r = p_ref / p: r = 1/2 -> 0.5 - 1 + ln 2; r = 2 -> 2 - 1 - ln 2
    assert_close(kl_k3(LOGP, REF), t64([[-0.5 + LN2, 1.0 - LN2]]), **TIGHT)


def test_estimators_match_loop():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 4
    ref = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 4
    naive = {
        "kl": lambda a, b: a - b,
        "abs": lambda a, b: abs(a - b),
        "mse": lambda a, b: 0.5 * (a - b) ** 2,
        "k3": lambda a, b: math.exp(b - a) - 1 - (b - a),
    }
    for kind, f in naive.items():
        expected = [[f(a, b) for a, b in zip(ra, rb)] for ra, rb in zip(logp.tolist(), ref.tolist())]
        assert_close(kl_penalty(logp, ref, kind), t64(expected), **TIGHT)
    assert KL_ESTIMATORS["k1"] is kl_k1 and KL_ESTIMATORS["k2"] is kl_k2


def test_kl_penalty_unknown_kind():
    with pytest.raises(ValueError, match="full") as err:
        kl_penalty(LOGP, REF, "nope")
    assert "k3" in str(err.value) and "mse" in str(err.value)


def test_kl_full_hand():
    # p = [1/2, 1/2], p_ref = [1/4, 3/4]: KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    logits = torch.zeros(1, 1, 2)
    ref_logits = torch.log(torch.tensor([[[0.25, 0.75]]]))
    assert_close(kl_full(logits, ref_logits), torch.tensor([[0.5 * math.log(4 / 3)]]), **TIGHT)
    assert_close(kl_full(logits, logits), torch.zeros(1, 1))


def test_kl_full_matches_loop_and_trl_kl_div():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 7, generator=g, dtype=torch.float64) * 2
    ref_logits = torch.randn(2, 3, 7, generator=g, dtype=torch.float64) * 2
    expected = []
    for b in range(2):
        row = []
        for t in range(3):
            z, zr = logits[b, t].tolist(), ref_logits[b, t].tolist()
            lse, lser = math.log(sum(map(math.exp, z))), math.log(sum(map(math.exp, zr)))
            row.append(sum(math.exp(x - lse) * ((x - lse) - (y - lser)) for x, y in zip(z, zr)))
        expected.append(row)
    got = kl_full(logits, ref_logits)
    assert_close(got, t64(expected), **TIGHT)
    trl = F.kl_div(
        F.log_softmax(ref_logits, -1), F.log_softmax(logits, -1), log_target=True, reduction="none"
    ).sum(-1)
    assert_close(got, trl, **TIGHT)


# ---------------------------------------------------------------- KL-penalised rewards


def test_kl_penalized_rewards_hand():
    scores = torch.tensor([1.0, 2.0, -3.0])
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.5, 0.6, 0.7], [9.0, 0.5, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    rewards, non_score = kl_penalized_rewards(scores, kl, mask, 0.5)
    expected_ns = torch.tensor([[-0.05, -0.1, -0.15, -0.2], [-0.2, -0.25, 0.0, 0.0], [0.0, -0.25, -0.25, 0.0]])
    assert_close(non_score, expected_ns, **TIGHT)
    # score on the last valid token only: row 0 at t=3, row 1 at t=1, row 2 at t=2
    expected_r = torch.tensor([[-0.05, -0.1, -0.15, 0.8], [-0.2, 1.75, 0.0, 0.0], [0.0, -0.25, -3.25, 0.0]])
    assert_close(rewards, expected_r, **TIGHT)
    rewards_t, _ = kl_penalized_rewards(scores, kl, mask, torch.tensor(0.5))
    assert torch.equal(rewards_t, rewards)


def test_kl_penalized_rewards_match_trl_loop():
    g = torch.Generator().manual_seed(2)
    B, T = 5, 8
    scores = torch.randn(B, generator=g)
    kl = torch.randn(B, T, generator=g)
    lengths = [8, 1, 5, 3, 6]
    mask = torch.zeros(B, T)
    for i, n in enumerate(lengths):
        start = i % 2  # some rows start with a masked (prompt) position
        mask[i, start : start + n] = 1.0
    rewards, non_score = kl_penalized_rewards(scores, kl, mask, 0.2)
    # TRL 0.11.4 compute_rewards, row by row, then masked before GAE
    for i in range(B):
        ns = -0.2 * kl[i]
        r = ns.clone()
        r[mask[i].nonzero()[-1]] += scores[i]
        assert torch.equal(rewards[i] * mask[i], r * mask[i])
        assert torch.equal(non_score[i] * mask[i], ns * mask[i])
        assert (rewards[i][mask[i] == 0] == 0).all()  # nothing lands on padding


# ---------------------------------------------------------------- controllers


def test_fixed_controller():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 256)
    assert ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


def test_adaptive_controller_hand():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(9.0, 256)  # error 0.5 -> clipped 0.2: x (1 + 0.2 * 256 / 10000) = x 1.00512
    assert math.isclose(ctl.value, 0.2 * 1.00512, rel_tol=1e-12)
    ctl.update(6.6, 256)  # error 0.1: x 1.00256
    assert math.isclose(ctl.value, 0.2 * 1.00512 * 1.00256, rel_tol=1e-12)
    ctl.update(3.0, 256)  # error -0.5 -> clipped -0.2: x 0.99488
    assert math.isclose(ctl.value, 0.2 * 1.00512 * 1.00256 * 0.99488, rel_tol=1e-12)
    ctl.update(6.0, 256)  # on target: unchanged
    assert math.isclose(ctl.value, 0.2 * 1.00512 * 1.00256 * 0.99488, rel_tol=1e-12)
    restored = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_adaptive_controller_matches_loop():
    import random

    rng = random.Random(0)
    ctl = AdaptiveKLController(0.1, target=4.0, horizon=500)
    value = 0.1
    for _ in range(20):
        current, n = rng.uniform(0, 10), rng.randint(1, 64)
        err = current / 4.0 - 1
        err = 0.2 if err > 0.2 else (-0.2 if err < -0.2 else err)
        value = value * (1 + err * n / 500)
        ctl.update(current, n)
        assert math.isclose(ctl.value, value, rel_tol=1e-12)
