"""GRPO / Dr. GRPO / RLOO / REINFORCE++ advantages and the GRPO-family loss: hand cases, naive loops, gradients."""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rlhfkit.algos.advantages import (
    LOSS_AGGREGATIONS,
    group_advantages,
    group_stats,
    engine_importance_weights,
    grpo_loss,
    high_entropy_mask,
    reinforce_pp_advantages,
    rloo_advantages,
)

TIGHT = dict(rtol=1e-6, atol=1e-9)
EPS = 1e-4


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def naive_std(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0


# ---------------------------------------------------------------- group advantages (GRPO, Dr. GRPO)

REWARDS = [1.0, 0.0, 1.0, 2.0, 2.0, 2.0]  # two prompts, G = 3; the second group has std 0


def test_group_advantages_hand():
    r = t64(REWARDS)
    std0 = math.sqrt(1 / 3)  # group 0: deviations 1/3, -2/3, 1/3; unbiased var (2/9 + 4/9) / 2
    centred = [1 / 3, -2 / 3, 1 / 3, 0.0, 0.0, 0.0]
    expected_group = [c / (std0 + EPS) for c in centred[:3]] + [0.0, 0.0, 0.0]
    assert_close(group_advantages(r, 3), t64(expected_group), **TIGHT)
    # batch std: mean 4/3, sum of squares (1 + 16 + 1 + 4 + 4 + 4) / 9 = 10/3, unbiased var 10/3 / 5 = 2/3
    assert_close(group_advantages(r, 3, "batch"), t64([c / (math.sqrt(2 / 3) + EPS) for c in centred]), **TIGHT)
    assert_close(group_advantages(r, 3, "none"), t64(centred), **TIGHT)
    # TRL's old booleans
    assert_close(group_advantages(r, 3, True), group_advantages(r, 3, "group"), **TIGHT)
    assert_close(group_advantages(r, 3, False), group_advantages(r, 3, "none"), **TIGHT)


def test_group_stats_hand():
    stats = group_stats(t64(REWARDS), 3)
    assert_close(stats["mean"], t64([2 / 3, 2.0]), **TIGHT)
    assert_close(stats["std"], t64([math.sqrt(1 / 3), 0.0]), **TIGHT)
    assert_close(stats["frac_zero_std"], t64(0.5), **TIGHT)
    one = group_stats(t64([1.0, 2.0]), 1)  # groups of one: std 0, every group "zero std"
    assert_close(one["std"], t64([0.0, 0.0]), **TIGHT)
    assert_close(one["frac_zero_std"], t64(1.0), **TIGHT)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_loop(seed, scale):
    g = torch.Generator().manual_seed(seed)
    G, K = 4, 5
    r = torch.randn(K * G, generator=g, dtype=torch.float64)
    r[:G] = 0.5  # a zero-std group
    r[G + seed] = NAN  # an unscorable row
    values = r.tolist()
    scorable = [x for x in values if not math.isnan(x)]
    expected = []
    for k in range(K):
        group = values[k * G:(k + 1) * G]
        valid = [x for x in group if not math.isnan(x)]
        mean = sum(valid) / len(valid)
        std = {"group": naive_std(valid), "batch": naive_std(scorable), "none": None}[scale]
        expected += [0.0 if math.isnan(x) else (x - mean) / (std + EPS) if std is not None else x - mean
                     for x in group]
    assert_close(group_advantages(r, G, scale), t64(expected), **TIGHT)
    stats = group_stats(r, G)
    groups = [[x for x in values[k * G:(k + 1) * G] if not math.isnan(x)] for k in range(K)]
    assert_close(stats["std"], t64([naive_std(x) for x in groups]), **TIGHT)
    assert_close(stats["mean"], t64([sum(x) / len(x) for x in groups]), **TIGHT)
    assert_close(stats["frac_zero_std"], t64(1 / K), **TIGHT)


NAN = math.nan


def test_unscorable_rows_hand():
    # TRL 1.16: NaN rewards are left out of the group mean / std and get advantage 0
    r = t64([1.0, NAN, 3.0, 5.0, NAN, NAN])  # group 0: scorable 1 and 3; group 1: only 5
    std = math.sqrt(2.0)  # of [1, 3]
    assert_close(group_advantages(r, 3), t64([-1 / (std + EPS), 0.0, 1 / (std + EPS), 0.0, 0.0, 0.0]), **TIGHT)
    assert_close(group_advantages(r, 3, "none"), t64([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]), **TIGHT)
    # batch std of the scorable 1, 3, 5 is 2
    assert_close(group_advantages(r, 3, "batch"), t64([-1 / (2 + EPS), 0.0, 1 / (2 + EPS), 0.0, 0.0, 0.0]), **TIGHT)
    # RLOO: baselines from the scorable others: 3 and 1; group 1 has no other scorable row -> 0
    assert_close(rloo_advantages(r, 3), t64([-2.0, 0.0, 2.0, 0.0, 0.0, 0.0]), **TIGHT)
    stats = group_stats(r, 3)
    assert_close(stats["mean"], t64([2.0, 5.0]), **TIGHT)
    assert_close(stats["std"][0], t64(std), **TIGHT)
    assert math.isnan(stats["std"][1].item())  # one scorable row: no std
    assert_close(stats["frac_zero_std"], t64(0.0), **TIGHT)


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="not a multiple of group_size=4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="scale must be one of"):
        group_advantages(torch.zeros(6), 3, "std")
    with pytest.raises(ValueError, match=r"must be 1-D"):
        group_advantages(torch.zeros(2, 3), 3)


# ---------------------------------------------------------------- RLOO


def test_rloo_hand():
    # group [1, 0, 1]: baselines (0 + 1)/2, (1 + 1)/2, (1 + 0)/2; group [2, 2, 2]: all 0
    assert_close(rloo_advantages(t64(REWARDS), 3), t64([0.5, -1.0, 0.5, 0.0, 0.0, 0.0]), **TIGHT)
    assert_close(rloo_advantages(t64([3.0, 1.0]), 2), t64([2.0, -2.0]), **TIGHT)


@pytest.mark.parametrize("seed", range(3))
def test_rloo_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    G, K = 3, 4
    r = torch.randn(K * G, generator=g, dtype=torch.float64)
    r[seed] = NAN  # an unscorable row
    v = r.tolist()
    expected = []
    for k in range(K):
        group = v[k * G:(k + 1) * G]
        for i, x in enumerate(group):
            others = [y for j, y in enumerate(group) if j != i and not math.isnan(y)]
            expected.append(0.0 if math.isnan(x) else x - sum(others) / len(others))
    assert_close(rloo_advantages(r, G), t64(expected), **TIGHT)


def test_rloo_errors():
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="not a multiple"):
        rloo_advantages(torch.zeros(5), 2)


# ---------------------------------------------------------------- REINFORCE++


def test_reinforce_pp_hand():
    scores = t64([1.0, -1.0])
    kl = t64([[0.2, 0.4, 0.0], [0.2, 9.0, 9.0]])
    mask = t64([[1, 1, 1], [1, 0, 0]])
    adv, ret = reinforce_pp_advantages(scores, kl, mask, kl_coef=0.5)
    # row 0 rewards -0.1, -0.2, -0 + 1 -> returns 0.7, 0.8, 1.0; row 1 reward -0.1 - 1 -> -1.1
    assert_close(ret, t64([[0.7, 0.8, 1.0], [-1.1, 0.0, 0.0]]), **TIGHT)
    # mean 1.4 / 4 = 0.35; biased var (0.35^2 + 0.45^2 + 0.65^2 + 1.45^2) / 4 = 2.85 / 4
    sd = math.sqrt(2.85 / 4)
    assert_close(adv, t64([[0.35 / sd, 0.45 / sd, 0.65 / sd], [-1.45 / sd, 0.0, 0.0]]), **TIGHT)
    # gamma = 0.5: row 0 returns 1.0, -0.2 + 0.5, -0.1 + 0.15
    _, ret = reinforce_pp_advantages(scores, kl, mask, kl_coef=0.5, gamma=0.5)
    assert_close(ret[0], t64([0.05, 0.3, 1.0]), **TIGHT)


def test_reinforce_pp_baseline_hand():
    # group means 2 and -1: centred scores -1, 1, 0, 0; no KL -> returns = centred score everywhere
    scores = t64([1.0, 3.0, -1.0, -1.0])
    mask = t64([[1, 1], [1, 0], [1, 1], [1, 0]])
    _, ret = reinforce_pp_advantages(scores, torch.zeros(4, 2, dtype=torch.float64), mask, 0.1,
                                     baseline="group", group_size=2)
    assert_close(ret, t64([[-1.0, -1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), **TIGHT)


def naive_reinforce_pp(scores, kl, mask, kl_coef, gamma, baseline, G, eps):
    """OpenRLHF's steps in plain Python: reward shaping, compute_reward, cumulative returns, whitening."""
    s, k, m = scores.tolist(), kl.tolist(), mask.tolist()
    B, T = len(m), len(m[0])
    if baseline == "group":
        s = [x - sum(s[i // G * G:(i // G + 1) * G]) / G for i, x in enumerate(s)]
    returns = [[0.0] * T for _ in range(B)]
    for b in range(B):
        last = max(t for t in range(T) if m[b][t])
        running = 0.0
        for t in reversed(range(T)):
            r = (-kl_coef * k[b][t] + (s[b] if t == last else 0.0)) * m[b][t]
            running = r + gamma * running
            returns[b][t] = running
    valid = [returns[b][t] for b in range(B) for t in range(T) if m[b][t]]
    mu = sum(valid) / len(valid)
    var = sum((x - mu) ** 2 for x in valid) / len(valid)
    rstd = 1 / math.sqrt(max(var, eps))
    adv = [[(returns[b][t] - mu) * rstd * m[b][t] for t in range(T)] for b in range(B)]
    return t64(adv), t64([[returns[b][t] * m[b][t] for t in range(T)] for b in range(B)])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("baseline,gamma", [(None, 1.0), (None, 0.9), ("group", 1.0)])
def test_reinforce_pp_matches_loop(seed, baseline, gamma):
    g = torch.Generator().manual_seed(seed)
    B, T, G = 6, 5, 3
    scores = torch.randn(B, generator=g, dtype=torch.float64)
    kl = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    adv, ret = reinforce_pp_advantages(scores, kl, mask, 0.05, gamma=gamma, baseline=baseline,
                                       group_size=G if baseline else None)
    want_adv, want_ret = naive_reinforce_pp(scores, kl, mask, 0.05, gamma, baseline, G, 1e-8)
    assert_close(ret, want_ret, **TIGHT)
    assert_close(adv, want_adv, **TIGHT)
    assert not adv.requires_grad


def test_reinforce_pp_errors():
    kl, mask = torch.zeros(4, 3), torch.ones(4, 3)
    with pytest.raises(ValueError, match="needs group_size"):
        reinforce_pp_advantages(torch.zeros(4), kl, mask, 0.1, baseline="group")
    with pytest.raises(ValueError, match="gamma=1"):
        reinforce_pp_advantages(torch.zeros(4), kl, mask, 0.1, gamma=0.9, baseline="group", group_size=2)
    with pytest.raises(ValueError, match="baseline must be one of"):
        reinforce_pp_advantages(torch.zeros(4), kl, mask, 0.1, baseline="rloo")
    with pytest.raises(ValueError, match=r"scores \(B,\)"):
        reinforce_pp_advantages(torch.zeros(3), kl, mask, 0.1)


# ---------------------------------------------------------------- grpo_loss: hand case

# two rows: A = +1 and A = -1, ratios 1.5, 0.5, 1.1, 0.7 (the last token of row 1 is padding)
RATIOS = [[1.5, 0.5, 1.1, 0.7], [1.5, 0.5, 1.1, 0.7]]
MASK = [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]
CLIP = dict(epsilon_low=0.2, epsilon_high=0.28)  # DAPO's clip-higher: ratios kept in [0.8, 1.28]


def hand_inputs():
    logp = torch.log(t64(RATIOS)).requires_grad_(True)
    return logp, torch.zeros(2, 4, dtype=torch.float64), t64([1.0, -1.0]), t64(MASK)


# per token -min(r A, clip(r) A):
#   row 0 (A = +1): -1.28 (high clip), -0.5 (r < 0.8 but A > 0: not clipped), -1.1, -0.7   sum -3.58
#   row 1 (A = -1): 1.5 (r > 1.28 but A < 0: not clipped), 0.8 (low clip), 1.1, [0.8 padding]  sum 3.4
@pytest.mark.parametrize("loss_type,kwargs,expected", [
    ("grpo", {}, (-3.58 / 4 + 3.4 / 3) / 2),
    ("bnpo", {}, -0.18 / 7),
    ("dr_grpo", {"max_completion_length": 5}, -0.18 / 10),
    ("dapo", {}, -0.18 / 7),
    ("dapo", {"num_items": 9.0}, -0.02),
])
def test_grpo_loss_hand(loss_type, kwargs, expected):
    logp, old, adv, mask = hand_inputs()
    loss, m = grpo_loss(logp, old, adv, mask, loss_type=loss_type, **CLIP, **kwargs)
    assert_close(loss, t64(expected), **TIGHT)
    assert_close(m["clip_ratio/low_mean"], t64(1 / 7), **TIGHT)
    assert_close(m["clip_ratio/high_mean"], t64(1 / 7), **TIGHT)
    assert_close(m["clip_ratio/region_mean"], t64(2 / 7), **TIGHT)
    assert "kl" not in m and not m["clip_ratio/low_mean"].requires_grad


def test_grpo_loss_kl_and_delta_hand():
    logp, old, adv, mask = hand_inputs()
    ref = (logp + math.log(2)).detach()  # k3 = e^{ln 2} - ln 2 - 1 = 1 - ln 2 on every token
    loss, m = grpo_loss(logp, old, adv, mask, loss_type="bnpo", beta=0.1, ref_logprobs=ref, **CLIP)
    assert_close(loss, t64((-0.18 + 0.1 * 7 * (1 - math.log(2))) / 7), **TIGHT)
    assert_close(m["kl"], t64(1 - math.log(2)), **TIGHT)
    # delta = 1.4 caps row 1's unclipped 1.5 (A < 0) at 1.4: sum 3.4 - 0.1
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type="bnpo", delta=1.4, **CLIP)
    assert_close(loss, t64((-3.58 + 3.3) / 7), **TIGHT)


def test_grpo_loss_token_weights_hand():
    """top_entropy_quantile's mask zeroes the surrogate of left-out tokens; the normaliser stays the mask's."""
    logp, old, adv, mask = hand_inputs()
    keep = t64([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    # row 0 keeps -1.28, -1.1, -0.7 (sum -3.08); row 1 keeps 0.8, 1.1 (sum 1.9); bnpo divides by 7 real tokens
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type="bnpo", token_weights=keep, **CLIP)
    assert_close(loss, t64((-3.08 + 1.9) / 7), **TIGHT)
    # the KL term is not masked: with beta, every real token still pays 0.1 * (1 - ln 2)
    ref = (logp + math.log(2)).detach()
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type="bnpo", token_weights=keep, beta=0.1, ref_logprobs=ref, **CLIP)
    assert_close(loss, t64((-3.08 + 1.9 + 0.1 * 7 * (1 - math.log(2))) / 7), **TIGHT)


def test_high_entropy_mask_hand_and_loop():
    entropy = t64([[0.1, 0.9, 0.5, 7.0], [0.3, 0.7, 0.2, 9.0]])
    mask = t64([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])  # 7.0 and 9.0 are padding: never counted
    # real entropies sorted: 0.1 0.2 0.3 0.5 0.7 0.9; the 0.5-quantile (linear) is 0.4: keep 0.5, 0.7, 0.9
    assert high_entropy_mask(entropy, mask, 0.5).tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]
    assert high_entropy_mask(entropy, mask, 1.0).tolist() == mask.tolist()  # every real token
    pool = t64([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 5.0, 6.0])  # another process's tokens raise the bar
    assert high_entropy_mask(entropy, mask, 0.5, pool=pool).tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]
    g = torch.Generator().manual_seed(0)
    for q in (0.1, 0.3, 0.8):
        e, m = torch.rand(5, 7, generator=g), (torch.rand(5, 7, generator=g) > 0.3).double()
        real = sorted(e[i, j].item() for i in range(5) for j in range(7) if m[i, j])
        pos = (1 - q) * (len(real) - 1)  # linear interpolation, as torch.quantile
        lo, hi = math.floor(pos), math.ceil(pos)
        tau = real[lo] + (real[hi] - real[lo]) * (pos - lo)
        loop = [[float(m[i, j] > 0 and e[i, j].item() >= tau) for j in range(7)] for i in range(5)]
        assert high_entropy_mask(e, m, q).tolist() == loop
    with pytest.raises(ValueError, match="quantile"):
        high_entropy_mask(entropy, mask, 0.0)


def test_engine_importance_weights_hand():
    old = t64([[-1.0, -2.0, -1.0], [-0.5, -0.5, -9.0]])
    sampling = t64([[-1.5, -1.0, float("nan")], [-0.5, -1.5, 0.0]])
    mask = t64([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    # d = [[0.5, -1.0, 0 (NaN)], [0, 1.0, 0 (padding)]]
    w = engine_importance_weights(old, sampling, mask, "token_truncate", clip_max=2.0)
    assert_close(w, t64([[math.exp(0.5), math.exp(-1.0), 1.0], [1.0, 2.0, 1.0]]), **TIGHT)
    w = engine_importance_weights(old, sampling, mask, "token_mask", clip_min=0.5, clip_max=2.0)
    assert_close(w, t64([[math.exp(0.5), 0.0, 1.0], [1.0, 0.0, 1.0]]), **TIGHT)
    w = engine_importance_weights(old, sampling, mask, "sequence_truncate", clip_max=2.0)  # sums -0.5 and 1.0
    assert_close(w, t64([[math.exp(-0.5)], [2.0]]), **TIGHT)
    w = engine_importance_weights(old, sampling, mask, "sequence_mask", clip_max=2.0)
    assert_close(w, t64([[math.exp(-0.5)], [0.0]]), **TIGHT)
    with pytest.raises(ValueError, match="mode must be one of"):
        engine_importance_weights(old, sampling, mask, "tis")


def test_grpo_loss_token_gradient_is_analytic():
    # d loss / d logp_t = -A r_t where the unclipped branch is active, 0 where the clip holds it (bnpo: / 7)
    logp, old, adv, mask = hand_inputs()
    loss, _ = grpo_loss(logp, old, adv, mask, loss_type="bnpo", **CLIP)
    loss.backward()
    active = t64([[0, 1, 1, 1], [1, 0, 1, 0]])
    expected = -adv[:, None] * t64(RATIOS) * active * mask / 7
    assert_close(logp.grad, expected, **TIGHT)


def test_grpo_loss_on_policy():
    # old_logprobs=None: ratio 1, loss = -mean(A), gradient -A / (|y_i| B) per token (grpo)
    logp = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = t64([[1, 1, 1], [1, 1, 0]])
    loss, m = grpo_loss(logp, None, t64([2.0, -1.0]), mask, loss_type="grpo", **CLIP)
    assert_close(loss, t64(-0.5), **TIGHT)
    loss.backward()
    assert_close(logp.grad, t64([[-2 / 6, -2 / 6, -2 / 6], [1 / 4, 1 / 4, 0.0]]), **TIGHT)
    assert_close(m["clip_ratio/region_mean"], t64(0.0), **TIGHT)


# ---------------------------------------------------------------- grpo_loss: naive loop


def random_loss_inputs(seed, B=5, T=6, token_adv=False):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)  # ratios well outside the clip
    ref = logp + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn((B, T) if token_adv else (B,), generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    return logp, old, ref, adv, mask


def naive_grpo(logp, old, ref, adv, mask, lo, hi, beta, level, loss_type, max_len):
    lp, o, rf, m = logp.tolist(), old.tolist(), ref.tolist(), mask.tolist()
    a = adv.tolist()
    B, T = len(m), len(m[0])
    losses, low, high, n = [[0.0] * T for _ in range(B)], 0, 0, 0
    for b in range(B):
        seq = sum((lp[b][t] - o[b][t]) * m[b][t] for t in range(T)) / max(1.0, sum(m[b]))
        for t in range(T):
            A = a[b][t] if isinstance(a[b], list) else a[b]
            r = math.exp(seq if level == "sequence" else lp[b][t] - o[b][t])
            c = min(max(r, 1 - lo), 1 + hi)
            x = -min(r * A, c * A)
            d = rf[b][t] - lp[b][t]
            losses[b][t] = x + beta * (math.exp(d) - d - 1)
            if m[b][t]:
                n += 1
                low += r < 1 - lo and A < 0
                high += r > 1 + hi and A > 0
    total = sum(losses[b][t] * m[b][t] for b in range(B) for t in range(T))
    loss = {"grpo": sum(sum(losses[b][t] * m[b][t] for t in range(T)) / max(1.0, sum(m[b])) for b in range(B)) / B,
            "bnpo": total / n, "dr_grpo": total / (B * max_len), "dapo": total / n}[loss_type]
    return loss, low / n, high / n


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("loss_type", sorted(LOSS_AGGREGATIONS))
@pytest.mark.parametrize("level,token_adv", [("token", False), ("token", True), ("sequence", True)])
def test_grpo_loss_matches_loop(seed, loss_type, level, token_adv):
    logp, old, ref, adv, mask = random_loss_inputs(seed, token_adv=token_adv)
    loss, m = grpo_loss(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
                        importance_sampling_level=level, ref_logprobs=ref, beta=0.04, max_completion_length=8)
    want, low, high = naive_grpo(logp, old, ref, adv, mask, 0.2, 0.28, 0.04, level, loss_type, 8)
    assert_close(loss, t64(want), **TIGHT)
    # token means of the clip flags (the (B, T)-advantage case counts per token at either level)
    assert_close(m["clip_ratio/low_mean"], t64(low), **TIGHT)
    assert_close(m["clip_ratio/high_mean"], t64(high), **TIGHT)
    assert_close(m["clip_ratio/region_mean"], t64(low + high), **TIGHT)
    assert 0 < low + high < 1  # the inputs exercise both sides of the clip


# ---------------------------------------------------------------- GSPO (sequence level)


def trl_style_sequence_loss(logp, old, adv, mask, lo, hi, loss_type, max_len):
    """TRL's form: one (B, 1) ratio broadcast over the tokens, no stop-gradient trick."""
    seq = ((logp - old) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)  # (B, 1)
    coef_1 = torch.exp(seq)
    coef_2 = torch.clamp(coef_1, 1 - lo, 1 + hi)
    per_token = -torch.min(coef_1 * adv[:, None], coef_2 * adv[:, None]).expand_as(logp)
    return LOSS_AGGREGATIONS[loss_type](per_token, mask, max_len, None)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("loss_type", sorted(LOSS_AGGREGATIONS))
def test_gspo_matches_trl_broadcast_form(seed, loss_type):
    logp, old, _, adv, mask = random_loss_inputs(seed)
    ours = logp.clone().requires_grad_(True)
    theirs = logp.clone().requires_grad_(True)
    loss, _ = grpo_loss(ours, old, adv, mask, epsilon_low=3e-4, epsilon_high=4e-4, loss_type=loss_type,
                        importance_sampling_level="sequence", max_completion_length=8)
    ref_loss = trl_style_sequence_loss(theirs, old, adv, mask, 3e-4, 4e-4, loss_type, 8)
    assert_close(loss, ref_loss, **TIGHT)
    loss.backward()
    ref_loss.backward()
    assert_close(ours.grad, theirs.grad, **TIGHT)


def test_gspo_gradient_is_analytic():
    # GSPO: grad J = 1/B sum_i s_i A_i (1/|y_i|) sum_t grad logp_it for unclipped sequences, 0 for clipped
    logp, old, _, adv, mask = random_loss_inputs(7)
    old = logp - 0.05 * torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]  # seq ratios e^{-.05} .. e^{.05}
    adv = t64([-1.0, -1.0, 0.5, 1.0, 2.0])
    logp.requires_grad_(True)
    lo = hi = 0.03
    loss, m = grpo_loss(logp, old, adv, mask, epsilon_low=lo, epsilon_high=hi, loss_type="grpo",
                        importance_sampling_level="sequence")
    loss.backward()
    lengths = mask.sum(-1)
    s = torch.exp(((logp - old) * mask).sum(-1) / lengths).detach()  # (B,)
    clipped = ((s > 1 + hi) & (adv > 0)) | ((s < 1 - lo) & (adv < 0))
    # row 0: s = e^{-.05} < .97 with A < 0 -> clipped; row 1: e^{-.025} > .97; row 4: e^{.05} > 1.03, A > 0
    assert clipped.tolist() == [True, False, False, False, True]
    expected = -(adv * s * (~clipped).double() / lengths / 5)[:, None] * mask
    assert_close(logp.grad, expected, **TIGHT)
    # one decision per sequence; metrics average over sequences
    assert_close(m["clip_ratio/region_mean"], t64(clipped.double().mean().item()), **TIGHT)


def test_gspo_token_equals_gspo_for_broadcast_advantages():
    logp, old, _, adv, mask = random_loss_inputs(3)
    a = logp.clone().requires_grad_(True)
    b = logp.clone().requires_grad_(True)
    kw = dict(epsilon_low=0.01, epsilon_high=0.01, loss_type="dapo", importance_sampling_level="sequence")
    la, _ = grpo_loss(a, old, adv, mask, **kw)
    lb, _ = grpo_loss(b, old, adv[:, None].expand_as(logp), mask, **kw)
    la.backward()
    lb.backward()
    assert_close(la, lb, **TIGHT)
    assert_close(a.grad, b.grad, **TIGHT)


def test_gspo_clip_metrics_skip_empty_rows():
    # row 0: seq ratio 1.5, A > 0 -> high; row 1: all padding -> left out; row 2: ratio 0.5, A < 0 -> low
    logp = torch.log(t64([[1.5, 1.5], [9.0, 9.0], [0.5, 0.5]]))
    mask = t64([[1, 1], [0, 0], [1, 1]])
    _, m = grpo_loss(logp, torch.zeros(3, 2, dtype=torch.float64), t64([1.0, 1.0, -1.0]), mask,
                     importance_sampling_level="sequence", **CLIP)
    assert_close(m["clip_ratio/high_mean"], t64(0.5), **TIGHT)
    assert_close(m["clip_ratio/low_mean"], t64(0.5), **TIGHT)
    assert_close(m["clip_ratio/region_mean"], t64(1.0), **TIGHT)


def test_grpo_loss_errors():
    logp, old, adv, mask = hand_inputs()
    with pytest.raises(ValueError, match="loss_type must be one of"):
        grpo_loss(logp, old, adv, mask, loss_type="ppo", **CLIP)
    with pytest.raises(ValueError, match="importance_sampling_level"):
        grpo_loss(logp, old, adv, mask, importance_sampling_level="batch", **CLIP)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        grpo_loss(logp, old, adv, mask, beta=0.1, **CLIP)
    with pytest.raises(ValueError, match="needs max_completion_length"):
        grpo_loss(logp, old, adv, mask, loss_type="dr_grpo", **CLIP)
    with pytest.raises(ValueError, match="delta must be > 1 \\+ epsilon_high"):
        grpo_loss(logp, old, adv, mask, delta=1.2, **CLIP)


# ---------------------------------------------------------------- against TRL 1.16's own _compute_loss

TRL_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trl_1_16" / "grpo_losses.json"
TRL_CASES = json.loads(TRL_FIXTURE.read_text())
METRIC_TOL = dict(rel=1e-6, abs=1e-7)  # TRL counts clip flags in float32


def _trl_case_id(case):
    return f"{case['loss_type']}-{case['importance_sampling_level']}-beta{case['beta']}-delta{case['delta']}"


def test_trl_fixture_covers_the_options():
    # written by tests/fixtures/make_trl116_grpo_reference.py running TRL 1.16.0's GRPOTrainer._compute_loss
    assert TRL_CASES["trl_version"] == "1.16.0"
    cases = TRL_CASES["cases"]
    assert {(c["loss_type"], c["importance_sampling_level"], c["beta"], c["delta"]) for c in cases} == set(
        itertools.product(sorted(LOSS_AGGREGATIONS), ["token", "sequence"], [0.0, 0.04], [None, 1.5]))
    for level in ("token", "sequence"):  # both sides of the clip are exercised at both levels
        assert sum(c["metrics"]["clip_ratio/low_mean"] for c in cases if c["importance_sampling_level"] == level) > 0
        assert sum(c["metrics"]["clip_ratio/high_mean"] for c in cases if c["importance_sampling_level"] == level) > 0


@pytest.mark.parametrize("case", TRL_CASES["cases"], ids=_trl_case_id)
def test_grpo_loss_matches_trl_116(case):
    """Loss, gradient wrt the log-probs and logged clip/KL metrics equal TRL 1.16's on the same tensors."""
    logp = t64(case["logprobs"]).requires_grad_(True)
    mask = torch.tensor(case["mask"], dtype=torch.float64)
    loss, m = grpo_loss(logp, t64(case["old_logprobs"]), t64(case["advantages"]), mask,
                        epsilon_low=case["epsilon_low"], epsilon_high=case["epsilon_high"],
                        loss_type=case["loss_type"], importance_sampling_level=case["importance_sampling_level"],
                        ref_logprobs=t64(case["ref_logprobs"]), beta=case["beta"], delta=case["delta"],
                        max_completion_length=case["max_completion_length"])
    loss.backward()
    assert_close(loss, t64(case["loss"]), **TIGHT)
    assert_close(logp.grad, t64(case["grad"]), **TIGHT)
    keys = ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"] + (["kl"] if case["beta"] else [])
    for key in keys:
        assert m[key].item() == pytest.approx(case["metrics"][key], **METRIC_TOL), key


def test_advantage_estimators_name_a_function_and_a_kl_placement():
    from rlhfkit.algos import ADVANTAGE_ESTIMATORS, KL_PLACEMENTS
    from rlhfkit.algos.advantages import group_advantages, reinforce_pp_advantages, rloo_advantages

    assert all(callable(e["fn"]) and e["kl"] in KL_PLACEMENTS for e in ADVANTAGE_ESTIMATORS.values())
    assert ADVANTAGE_ESTIMATORS["grpo"] == {"fn": group_advantages, "kl": "loss"}
    assert ADVANTAGE_ESTIMATORS["rloo"] == {"fn": rloo_advantages, "kl": "loss"}  # GRPO's loss carries the KL
    assert ADVANTAGE_ESTIMATORS["rloo_kl_in_reward"] == {"fn": rloo_advantages, "kl": "reward"}  # TRL's RLOO
    for name, baseline in (("reinforce++", None), ("reinforce++_baseline", "group")):
        assert ADVANTAGE_ESTIMATORS[name] == {"fn": reinforce_pp_advantages, "kl": "reward", "baseline": baseline}
