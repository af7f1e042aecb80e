import math

import pytest
import torch
from torch.testing import assert_close

from rlhfkit.algos import entropy_bonus, gae, policy_loss, value_loss

TIGHT = dict(rtol=1e-6, atol=1e-7)


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def random_masked(seed, B=4, T=6):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(B, T, generator=g, dtype=torch.float64) for _ in range(4)]
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()  # right-padded rows
    return tensors, mask


# ---------------------------------------------------------------- GAE


def test_gae_hand():
    rewards = t64([[1.0, 0.0, 2.0], [1.0, 0.0, 5.0]])
    values = t64([[0.5, 1.0, 1.5], [0.5, 1.0, 99.0]])
    mask = t64([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: d2 = 2 - 1.5 = 0.5; d1 = 0.9*1.5 - 1 = 0.35; d0 = 1 + 0.9 - 0.5 = 1.4
    #        A2 = 0.5, A1 = 0.35 + 0.72*0.5 = 0.71, A0 = 1.4 + 0.72*0.71 = 1.9112
    # row 1 (last token padding, masked to 0): d2 = 0, d1 = -1, d0 = 1.4; A = 0.68, -1, 0
    assert_close(adv, t64([[1.9112, 0.71, 0.5], [0.68, -1.0, 0.0]]), **TIGHT)
    assert_close(ret, t64([[2.4112, 1.71, 2.0], [1.18, 0.0, 0.0]]), **TIGHT)


@pytest.mark.parametrize("seed", range(4))
def test_gae_matches_discounted_sum_loop(seed):
    (rewards, values, _, _), mask = random_masked(seed)
    gamma, lam = 0.95, 0.9
    adv, ret = gae(rewards, values, mask, gamma, lam)
    B, T = rewards.shape
    r = (rewards * mask).tolist()
    v = (values * mask).tolist()
    for b in range(B):
        delta = [r[b][t] + gamma * (v[b][t + 1] if t + 1 < T else 0.0) - v[b][t] for t in range(T)]
        for t in range(T):
            # A_t = sum_l (gamma * lam)^l delta_{t+l}: the closed form, not the recursion
            a = sum((gamma * lam) ** k * delta[t + k] for k in range(T - t))
            assert math.isclose(adv[b, t].item(), a, rel_tol=1e-9, abs_tol=1e-12)
            assert math.isclose(ret[b, t].item(), a + v[b][t], rel_tol=1e-9, abs_tol=1e-12)


def test_gae_outputs_detached():
    values = torch.randn(2, 3, requires_grad=True)
    adv, ret = gae(torch.randn(2, 3), values, torch.ones(2, 3), 1.0, 0.95)
    assert not adv.requires_grad and not ret.requires_grad
    assert adv.shape == ret.shape == (2, 3)


# ---------------------------------------------------------------- policy loss

RATIO = [1.5, 0.5, 1.1, 0.7]
ADV = [1.0, -1.0, -2.0, 2.0]


def test_policy_loss_hand():
    logprobs = torch.log(t64([RATIO]))
    old = torch.zeros(1, 4, dtype=torch.float64)
    adv = t64([ADV])
    # per token max(-A r, -A clip(r, 0.8, 1.2)): max(-1.5, -1.2) = -1.2 (clipped),
    # max(0.5, 0.8) = 0.8 (clipped), max(2.2, 2.2) = 2.2, max(-1.4, -1.6) = -1.4
    loss, m = policy_loss(logprobs, old, adv, torch.ones(1, 4, dtype=torch.float64), cliprange=0.2)
    assert_close(loss, t64(0.4 / 4), **TIGHT)
    assert_close(m["clipfrac"], t64(0.5), **TIGHT)
    assert_close(m["ratio_mean"], t64(sum(RATIO) / 4), **TIGHT)
    assert_close(m["approxkl"], t64(0.5 * sum(math.log(r) ** 2 for r in RATIO) / 4), **TIGHT)
    assert_close(m["policykl"], t64(-sum(math.log(r) for r in RATIO) / 4), **TIGHT)
    assert_close(m["dual_clipfrac"], t64(0.0))
    assert_close(m["ratio"], t64([RATIO]), **TIGHT)

    mask = t64([[1.0, 1.0, 1.0, 0.0]])
    loss, m = policy_loss(logprobs, old, adv, mask, cliprange=0.2)
    assert_close(loss, t64((-1.2 + 0.8 + 2.2) / 3), **TIGHT)
    assert_close(m["clipfrac"], t64(2 / 3), **TIGHT)


def test_policy_loss_dual_clip():
    logprobs = torch.log(t64([[5.0, 2.0, 5.0]])).requires_grad_(True)
    old = torch.zeros(1, 3, dtype=torch.float64)
    adv = t64([[-1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3, dtype=torch.float64)
    # without: max(5, 1.2) = 5, max(2, 1.2) = 2, max(-5, -1.2) = -1.2
    loss, m = policy_loss(logprobs, old, adv, mask, 0.2)
    assert_close(loss, t64(5.8 / 3), **TIGHT)
    # dual clip c = 3 bounds negative-advantage tokens at -A * c = 3: min(5, 3) = 3, min(2, 3) = 2
    loss, m = policy_loss(logprobs, old, adv, mask, 0.2, dual_clip=3.0)
    assert_close(loss, t64(3.8 / 3), **TIGHT)
    assert_close(m["dual_clipfrac"], t64(1 / 3), **TIGHT)
    loss.backward()
    # the dual-clipped token (constant 3) and the PPO-clipped token get no gradient
    assert logprobs.grad[0, 0] == 0 and logprobs.grad[0, 2] == 0
    assert_close(logprobs.grad[0, 1], t64(2.0 / 3), **TIGHT)  # d/dlogp (-A e^logp)/3 = 2/3
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError):
            policy_loss(logprobs, old, adv, mask, 0.2, dual_clip=bad)


@pytest.mark.parametrize("dual_clip", [None, 2.0])
@pytest.mark.parametrize("seed", range(3))
def test_policy_loss_matches_loop(seed, dual_clip):
    (lp, old, adv, _), mask = random_masked(seed)
    lp = old + 0.5 * lp  # ratios around 1, some beyond the clip range
    eps = 0.2
    loss, m = policy_loss(lp, old, adv, mask, eps, dual_clip=dual_clip)
    per, clipped, dual, ratios, kl2, pkl = [], [], [], [], [], []
    for a_row, l_row, o_row, m_row in zip(adv.tolist(), lp.tolist(), old.tolist(), mask.tolist()):
        for a, l, o, keep in zip(a_row, l_row, o_row, m_row):
            if not keep:
                continue
            r = math.exp(l - o)
            p1, p2 = -a * r, -a * min(max(r, 1 - eps), 1 + eps)
            x = max(p1, p2)
            hit = dual_clip is not None and a < 0 and x > -a * dual_clip
            per.append(-a * dual_clip if hit else x)
            clipped.append(float(p2 > p1))
            dual.append(float(hit))
            ratios.append(r)
            kl2.append((l - o) ** 2)
            pkl.append(o - l)
    n = len(per)
    assert_close(loss, t64(sum(per) / n), **TIGHT)
    assert_close(m["clipfrac"], t64(sum(clipped) / n), **TIGHT)
    assert_close(m["dual_clipfrac"], t64(sum(dual) / n), **TIGHT)
    assert_close(m["ratio_mean"], t64(sum(ratios) / n), **TIGHT)
    assert_close(m["approxkl"], t64(0.5 * sum(kl2) / n), **TIGHT)
    assert_close(m["policykl"], t64(sum(pkl) / n), **TIGHT)


def test_policy_loss_metrics_detached():
    lp = torch.randn(2, 3, requires_grad=True)
    loss, m = policy_loss(lp, torch.randn(2, 3), torch.randn(2, 3), torch.ones(2, 3), 0.2)
    assert loss.requires_grad
    assert all(not v.requires_grad for v in m.values())
    assert m["ratio"].shape == (2, 3)


# ---------------------------------------------------------------- value loss, entropy


def test_value_loss_hand():
    values = t64([[1.0, 2.0, 0.0, 7.0]])
    old = t64([[0.5, 2.1, 0.0, 0.0]])
    returns = t64([[3.0, 2.0, -1.0, 0.0]])
    mask = t64([[1.0, 1.0, 1.0, 0.0]])
    # clip(V, old -+ 0.2): 0.7, 2.0, 0.0; errors (V-R)^2: 4, 0, 1; clipped: 5.29, 0, 1
    loss, m = value_loss(values, old, returns, mask, 0.2)
    assert_close(loss, t64(0.5 * (5.29 + 0 + 1) / 3), **TIGHT)
    assert_close(m["clipfrac"], t64(1 / 3), **TIGHT)
    assert_close(m["error"], t64(5 / 3), **TIGHT)
    assert_close(m["vpred"], t64(1.0), **TIGHT)


@pytest.mark.parametrize("seed", range(3))
def test_value_loss_matches_loop(seed):
    (v, old, ret, _), mask = random_masked(seed)
    c = 0.3
    loss, m = value_loss(v, old, ret, mask, c)
    losses, clipped, errors, vs = [], [], [], []
    for row in zip(v.tolist(), old.tolist(), ret.tolist(), mask.tolist()):
        for x, o, r, keep in zip(*row):
            if keep:
                xc = min(max(x, o - c), o + c)
                l1, l2 = (x - r) ** 2, (xc - r) ** 2
                losses.append(max(l1, l2))
                clipped.append(float(l2 > l1))
                errors.append(l1)
                vs.append(x)
    n = len(losses)
    assert_close(loss, t64(0.5 * sum(losses) / n), **TIGHT)
    assert_close(m["clipfrac"], t64(sum(clipped) / n), **TIGHT)
    assert_close(m["error"], t64(sum(errors) / n), **TIGHT)
    assert_close(m["vpred"], t64(sum(vs) / n), **TIGHT)


def test_entropy_bonus():
    ent = t64([[1.0, 2.0, 3.0]])
    mask = t64([[1.0, 1.0, 0.0]])
    assert_close(entropy_bonus(ent, mask, 0.01), t64(-0.015), **TIGHT)
    g = torch.Generator().manual_seed(0)
    ent = torch.rand(3, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(3, 5, generator=g) < 0.5).double()
    mask[0, 0] = 1.0
    vals = [e for e, k in zip(ent.flatten().tolist(), mask.flatten().tolist()) if k]
    assert_close(entropy_bonus(ent, mask, 0.1), t64(-0.1 * sum(vals) / len(vals)), **TIGHT)
