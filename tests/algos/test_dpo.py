import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rlhfkit.algos import (
    DPO_LOSSES,
    LENGTH_NORMALISED,
    REFERENCE_FREE,
    dpo_sigmoid_loss,
    hinge_loss,
    ipo_loss,
    orpo_log_odds,
    orpo_odds_ratio_loss,
    robust_dpo_loss,
    simpo_loss,
)

TIGHT = dict(rtol=1e-6, atol=1e-7)
TRL_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trl_1_16" / "dpo_losses.json"
A = math.log1p(math.exp(-1))  # -log sigmoid(1) = 0.3132616875182228; -log sigmoid(-1) = 1 + A
LN2 = math.log(2)


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


# Pairs (chosen, rejected, ref_chosen, ref_rejected) with log-ratio margin
# z = (c - ref_c) - (r - ref_r) equal to 2, 0, -2, 1 respectively.
PAIRS = t64([[-1.0, -3.0, -2.0, -2.0], [-2.0, -2.0, -2.0, -2.0], [-4.0, -1.0, -3.0, -2.0], [-1.0, -2.5, -1.5, -2.0]])
Z = [2.0, 0.0, -2.0, 1.0]


def pairs():
    return PAIRS.unbind(-1)


def random_logps(seed, n=4, B=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [-torch.rand(B, generator=g, dtype=dtype) * 6 - 0.05 for _ in range(n)]  # (B,) in (-6.05, -0.05)


# naive scalar references (math module, one pair at a time)
def logsigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def margin(c, r, rc, rr):
    return (c - r) - (rc - rr)


# ---------------------------------------------------------------- hand-computed


def test_dpo_sigmoid_hand():
    # beta * z = 1, 0, -1, 0.5: -log sigmoid(1) = A, -log sigmoid(0) = ln 2, -log sigmoid(-1) = 1 + A
    losses, cr, rr = dpo_sigmoid_loss(*pairs(), beta=0.5)
    assert_close(losses[:3], t64([A, LN2, 1 + A]), **TIGHT)
    assert_close(losses[3], t64(math.log1p(math.exp(-0.5))), **TIGHT)
    # rewards = beta * (logps - ref_logps)
    assert_close(cr, t64([0.5, 0.0, -0.5, 0.25]), **TIGHT)
    assert_close(rr, t64([-0.5, 0.0, 0.5, -0.25]), **TIGHT)


def test_cdpo_hand():
    # eps = 0.1, beta * z = 1: 0.9 * A + 0.1 * (1 + A) = A + 0.1; beta * z = 0: ln 2 whatever eps
    losses, _, _ = dpo_sigmoid_loss(*pairs(), beta=0.5, label_smoothing=0.1)
    assert_close(losses[:3], t64([A + 0.1, LN2, 1 + A - 0.1]), **TIGHT)


def test_ipo_hand():
    # beta = 0.5: target 1 / (2 beta) = 1; (2-1)^2, (0-1)^2, (-2-1)^2, (1-1)^2
    losses, cr, rr = ipo_loss(*pairs(), beta=0.5)
    assert_close(losses, t64([1.0, 1.0, 9.0, 0.0]), **TIGHT)
    assert_close(cr, t64([0.5, 0.0, -0.5, 0.25]), **TIGHT)
    # beta = 0.25: target 2; (0, 4, 16, 1)
    assert_close(ipo_loss(*pairs(), beta=0.25)[0], t64([0.0, 4.0, 16.0, 1.0]), **TIGHT)


def test_hinge_hand():
    # beta = 0.5: relu(1 - z/2) = relu(0), relu(1), relu(2), relu(0.5)
    losses, cr, rr = hinge_loss(*pairs(), beta=0.5)
    assert_close(losses, t64([0.0, 1.0, 2.0, 0.5]), **TIGHT)
    assert_close(rr, t64([-0.5, 0.0, 0.5, -0.25]), **TIGHT)


def test_robust_hand():
    # eps = 0.1, beta * z = 1: (0.9 A - 0.1 (1 + A)) / 0.8 = A - 0.125
    # beta * z = 0: (0.9 - 0.1) ln 2 / 0.8 = ln 2; beta * z = -1: (0.9 (1 + A) - 0.1 A) / 0.8 = A + 1.125
    losses, cr, _ = robust_dpo_loss(*pairs(), beta=0.5, label_smoothing=0.1)
    assert_close(losses[:3], t64([A - 0.125, LN2, A + 1.125]), **TIGHT)
    assert_close(cr, t64([0.5, 0.0, -0.5, 0.25]), **TIGHT)
    # eps = 0.25, beta * z = 1: (0.75 A - 0.25 (1 + A)) / 0.5 = A - 0.5
    assert_close(robust_dpo_loss(*pairs(), beta=0.5, label_smoothing=0.25)[0][0], t64(A - 0.5), **TIGHT)


def test_simpo_hand():
    c, r = t64([-0.5, -1.0]), t64([-1.5, -1.0])
    # beta = 2, gamma/beta = 0.5: beta * ((c - r) - 0.5) = 2 * 0.5 = 1 and 2 * -0.5 = -1
    losses, cr, rr = simpo_loss(c, r, beta=2.0, gamma_beta_ratio=0.5)
    assert_close(losses, t64([A, 1 + A]), **TIGHT)
    assert_close(cr, t64([-1.0, -2.0]), **TIGHT)
    assert_close(rr, t64([-3.0, -2.0]), **TIGHT)
    assert_close(simpo_loss(c, r, 2.0, 0.5, label_smoothing=0.1)[0], t64([A + 0.1, 1 + A - 0.1]), **TIGHT)


def test_orpo_hand():
    # P = 1/2, 3/4 (odds 1, 3) against P = 1/4 (odds 1/3): log odds ratios ln 3 and ln 9
    c, r = torch.log(t64([0.5, 0.75])), torch.log(t64([0.25, 0.25]))
    assert_close(orpo_log_odds(c, r), t64([math.log(3), math.log(9)]), **TIGHT)
    losses, cr, rr = orpo_odds_ratio_loss(c, r, beta=0.1)
    # -beta * log sigmoid(ln k) = beta * log(1 + 1/k): 0.1 ln(4/3), 0.1 ln(10/9)
    assert_close(losses, t64([0.1 * math.log(4 / 3), 0.1 * math.log(10 / 9)]), **TIGHT)
    assert_close(cr, t64([-0.1 * LN2, 0.1 * math.log(0.75)]), **TIGHT)
    assert_close(rr, t64([-0.2 * LN2, -0.2 * LN2]), **TIGHT)


# ---------------------------------------------------------------- naive loops


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_reference_based_match_naive_loop(seed, beta):
    c, r, rc, rr = random_logps(seed)
    got = {
        "sigmoid": dpo_sigmoid_loss(c, r, rc, rr, beta)[0],
        "cdpo": dpo_sigmoid_loss(c, r, rc, rr, beta, label_smoothing=0.2)[0],
        "ipo": ipo_loss(c, r, rc, rr, beta)[0],
        "hinge": hinge_loss(c, r, rc, rr, beta)[0],
        "robust": robust_dpo_loss(c, r, rc, rr, beta, label_smoothing=0.2)[0],
    }
    rewards = dpo_sigmoid_loss(c, r, rc, rr, beta)[1:]
    for i, args in enumerate(zip(c.tolist(), r.tolist(), rc.tolist(), rr.tolist())):
        z = beta * margin(*args)
        want = {
            "sigmoid": -logsigmoid(z),
            "cdpo": -0.8 * logsigmoid(z) - 0.2 * logsigmoid(-z),
            "ipo": (margin(*args) - 1 / (2 * beta)) ** 2,
            "hinge": max(0.0, 1 - z),
            "robust": (-0.8 * logsigmoid(z) + 0.2 * logsigmoid(-z)) / 0.6,
        }
        for name, value in want.items():
            assert math.isclose(got[name][i].item(), value, rel_tol=1e-9, abs_tol=1e-12), name
        assert math.isclose(rewards[0][i].item(), beta * (args[0] - args[2]), rel_tol=1e-12)
        assert math.isclose(rewards[1][i].item(), beta * (args[1] - args[3]), rel_tol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_reference_free_match_naive_loop(seed):
    c, r = random_logps(seed, n=2)
    beta, ratio, eps = 2.5, 0.3, 0.15
    simpo, s_cr, s_rr = simpo_loss(c, r, beta, gamma_beta_ratio=ratio, label_smoothing=eps)
    orpo, o_cr, o_rr = orpo_odds_ratio_loss(c, r, beta=0.2)
    log_odds = orpo_log_odds(c, r)
    for i, (ci, ri) in enumerate(zip(c.tolist(), r.tolist())):
        z = beta * ((ci - ri) - ratio)
        assert math.isclose(simpo[i].item(), -(1 - eps) * logsigmoid(z) - eps * logsigmoid(-z), rel_tol=1e-9)
        assert math.isclose(s_cr[i].item(), beta * ci, rel_tol=1e-12)
        assert math.isclose(s_rr[i].item(), beta * ri, rel_tol=1e-12)
        # odds = P / (1 - P) straight from the definition (fine in float64 away from P = 1)
        pc, pr = math.exp(ci), math.exp(ri)
        lo = math.log((pc / (1 - pc)) / (pr / (1 - pr)))
        assert math.isclose(log_odds[i].item(), lo, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(orpo[i].item(), -0.2 * logsigmoid(lo), rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(o_cr[i].item(), 0.2 * ci, rel_tol=1e-12)
        assert math.isclose(o_rr[i].item(), 0.2 * ri, rel_tol=1e-12)


# ---------------------------------------------------------------- properties


def _grads(fn, *rest, **kw):
    c = t64([-2.0]).requires_grad_()
    r = t64([-2.5]).requires_grad_()
    fn(c, r, *rest, **kw)[0].sum().backward()
    return c.grad.item(), r.grad.item()


@pytest.mark.parametrize("name", sorted(DPO_LOSSES))
def test_gradient_raises_chosen_lowers_rejected(name):
    fn = DPO_LOSSES[name]
    refs = () if name in REFERENCE_FREE else (t64([-2.0]), t64([-2.0]))  # z = 0.5
    gc, gr = _grads(fn, *refs, beta=0.5)
    # descending the loss raises log pi(chosen) and lowers log pi(rejected)
    assert gc < 0 and gr > 0, (name, gc, gr)


def test_label_smoothing_zero_is_plain_dpo():
    c, r, rc, rr = random_logps(7)
    plain = -torch.nn.functional.logsigmoid(0.3 * ((c - rc) - (r - rr)))
    assert torch.equal(dpo_sigmoid_loss(c, r, rc, rr, 0.3)[0], plain)
    assert torch.equal(dpo_sigmoid_loss(c, r, rc, rr, 0.3, label_smoothing=0.0)[0], plain)
    assert torch.equal(robust_dpo_loss(c, r, rc, rr, 0.3, label_smoothing=0.0)[0], plain)
    assert not torch.allclose(dpo_sigmoid_loss(c, r, rc, rr, 0.3, label_smoothing=0.1)[0], plain)


def test_ipo_minimum_at_half_inverse_beta():
    beta = 0.2  # target margin 1 / (2 beta) = 2.5
    zs = torch.linspace(-5, 10, 1501, dtype=torch.float64)  # step 0.01
    zero = torch.zeros_like(zs)
    losses = ipo_loss(zs, zero, zero, zero, beta)[0]
    assert zs[losses.argmin()].item() == pytest.approx(2.5, abs=1e-9)
    assert losses.min().item() == pytest.approx(0.0, abs=1e-20)
    c = t64([2.5]).requires_grad_()
    ipo_loss(c, t64([0.0]), t64([0.0]), t64([0.0]), beta)[0].sum().backward()
    assert c.grad.item() == 0.0


def test_rewards_are_detached():
    c, r, rc, rr = (x.requires_grad_() for x in random_logps(3))
    for name, fn in DPO_LOSSES.items():
        args = (c, r) if name in REFERENCE_FREE else (c, r, rc, rr)
        losses, cr, rr_ = fn(*args, 0.5)
        assert losses.requires_grad and not cr.requires_grad and not rr_.requires_grad, name
        assert losses.shape == cr.shape == rr_.shape == (8,), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orpo_stable_near_zero_and_very_negative(dtype):
    c = torch.tensor([-1e-6, -50.0, -1e-6, -50.0, -1e-9], dtype=dtype, requires_grad=True)
    r = torch.tensor([-50.0, -1e-6, -1e-6, -50.0, -0.5], dtype=dtype, requires_grad=True)
    log_odds = orpo_log_odds(c, r)
    # float64 reference from exact identities: log(1 - e^x) = log(-expm1(x)), log1p(-e^x)
    def l1me(x):
        return math.log(-math.expm1(x)) if x > -LN2 else math.log1p(-math.exp(x))
    want = [(ci - ri) - (l1me(ci) - l1me(ri)) for ci, ri in zip(c.double().tolist(), r.double().tolist())]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    assert_close(log_odds, torch.tensor(want, dtype=dtype), **tol)
    losses, _, _ = orpo_odds_ratio_loss(c, r, beta=0.1)
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(c.grad).all() and torch.isfinite(r.grad).all()
    # log_odds(-1e-6 vs -50) = 49.999999 - (ln(1e-6) - ~0) = 63.8155...
    assert log_odds[0].item() == pytest.approx(50 - 1e-6 - math.log(-math.expm1(-1e-6)), rel=1e-6)
    assert losses[1].item() == pytest.approx(0.1 * log_odds[0].item(), rel=1e-5)  # -logsigmoid(-x) ~ x


def test_orpo_upcasts_half_precision():
    c, r = torch.tensor([-0.5], dtype=torch.bfloat16), torch.tensor([-1.5], dtype=torch.bfloat16)
    losses, cr, _ = orpo_odds_ratio_loss(c, r, 0.1)
    assert losses.dtype == cr.dtype == torch.float32


def test_registries():
    assert set(DPO_LOSSES) == {"sigmoid", "ipo", "hinge", "robust", "simpo", "orpo"}
    assert REFERENCE_FREE == {"simpo", "orpo"} and LENGTH_NORMALISED == {"ipo", "simpo", "orpo"}
    assert DPO_LOSSES["sigmoid"] is dpo_sigmoid_loss and DPO_LOSSES["orpo"] is orpo_odds_ratio_loss


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("beta", [0, 0.0, -0.1, float("nan"), float("inf"), True, None, "0.1", t64(0.1)])
@pytest.mark.parametrize("name", sorted(DPO_LOSSES))
def test_bad_beta(name, beta):
    args = random_logps(0, n=2 if name in REFERENCE_FREE else 4)
    with pytest.raises(ValueError, match="beta"):
        DPO_LOSSES[name](*args, beta)


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7, float("nan")])
@pytest.mark.parametrize("fn", [dpo_sigmoid_loss, robust_dpo_loss, simpo_loss])
def test_bad_label_smoothing(fn, eps):
    args = random_logps(0, n=2 if fn is simpo_loss else 4)
    with pytest.raises(ValueError, match="label_smoothing"):
        fn(*args, 0.1, label_smoothing=eps)


def test_bad_gamma_and_shapes():
    c, r, rc, rr = random_logps(0)
    with pytest.raises(ValueError, match="gamma_beta_ratio"):
        simpo_loss(c, r, 2.0, gamma_beta_ratio=float("nan"))
    with pytest.raises(ValueError, match="same shape"):
        dpo_sigmoid_loss(c, r[:3], rc, rr, 0.1)
    with pytest.raises(ValueError, match="same shape"):
        orpo_odds_ratio_loss(c, r[:3], 0.1)


# ---------------------------------------------------------------- TRL 1.16 equality


@pytest.fixture(scope="module")
def trl():
    ref = json.loads(TRL_FIXTURE.read_text())
    assert ref["trl_version"] == "1.16.0"
    return ref


def _inputs(ref, averaged=False):
    i = ref["inputs"]
    logps = [t64(i[k]) for k in ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")]
    if averaged:  # per-token averages: what TRL 1.16's IPO divides the log-ratios by
        lc, lr = t64(i["chosen_lengths"]), t64(i["rejected_lengths"])
        logps = [logps[0] / lc, logps[1] / lr, logps[2] / lc, logps[3] / lr]
    return logps


TRL_TOL = dict(rtol=1e-6, atol=1e-6)
DPO_CASES = {  # fixture key -> (our function, takes label_smoothing, per-token averages)
    "sigmoid": (dpo_sigmoid_loss, True, False),
    "sigmoid_ls0.1": (dpo_sigmoid_loss, True, False),
    "ipo": (ipo_loss, False, True),
    "hinge": (hinge_loss, False, False),
    "robust": (robust_dpo_loss, True, False),
    "robust_ls0.1": (robust_dpo_loss, True, False),
}


@pytest.mark.parametrize("case", sorted(DPO_CASES))
def test_matches_trl_1_16_dpo(trl, case):
    fn, smooth, averaged = DPO_CASES[case]
    want = trl["dpo"][case]
    kw = {"label_smoothing": want["label_smoothing"]} if smooth else {}
    losses, cr, rr = fn(*_inputs(trl, averaged), want["beta"], **kw)
    assert_close(losses, t64(want["losses"]), **TRL_TOL)
    # TRL logs rewards from the SUMMED log-ratios, for IPO too
    _, cr, rr = fn(*_inputs(trl), want["beta"], **kw)
    assert_close(cr, t64(want["chosen_rewards"]), **TRL_TOL)
    assert_close(rr, t64(want["rejected_rewards"]), **TRL_TOL)
    if "batch" in want:  # TRL's whole-batch call: the mean loss and its logged metrics
        batch = want["batch"]
        assert_close(losses.mean(), t64(batch["loss"]), **TRL_TOL)
        assert_close((cr - rr).mean(), t64(batch["rewards/margins"]), **TRL_TOL)
        assert_close((cr > rr).double().mean(), t64(batch["rewards/accuracies"]), **TRL_TOL)


def test_trl_1_16_dpo_ignores_label_smoothing_for_sigmoid(trl):
    ignored = t64(trl["dpo"]["sigmoid_ls0.1_trl_ignores"]["losses"])
    assert_close(dpo_sigmoid_loss(*_inputs(trl), 0.5)[0], ignored, **TRL_TOL)
    assert not torch.allclose(dpo_sigmoid_loss(*_inputs(trl), 0.5, label_smoothing=0.1)[0], ignored)


@pytest.mark.parametrize("case", ["simpo", "simpo_ls0.1"])
def test_matches_trl_1_16_simpo(trl, case):
    want = trl["reference_free"]["simpo"][case]
    avg = trl["reference_free"]["inputs"]
    losses, cr, rr = simpo_loss(t64(avg["chosen_logps"]), t64(avg["rejected_logps"]), want["beta"],
                                gamma_beta_ratio=want["gamma_beta_ratio"], label_smoothing=want["label_smoothing"])
    assert_close(losses, t64(want["losses"]), **TRL_TOL)
    assert_close(cr, t64(want["chosen_rewards"]), **TRL_TOL)
    assert_close(rr, t64(want["rejected_rewards"]), **TRL_TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["orpo_beta0.1", "orpo_beta0.25"])
def test_matches_trl_1_16_orpo(trl, case, dtype):
    want = trl["reference_free"]["orpo"][case]
    inp = trl["reference_free"]["orpo_inputs"]
    c, r = torch.tensor(inp["chosen_logps"], dtype=dtype), torch.tensor(inp["rejected_logps"], dtype=dtype)
    losses, cr, rr = orpo_odds_ratio_loss(c, r, want["beta"])
    # TRL returns beta * log sigmoid(log_odds) and subtracts it; ours is the term to add
    assert_close(losses, -torch.tensor(want["trl_losses"], dtype=dtype), **TRL_TOL)
    assert_close(cr, torch.tensor(want["chosen_rewards"], dtype=dtype), **TRL_TOL)
    assert_close(rr, torch.tensor(want["rejected_rewards"], dtype=dtype), **TRL_TOL)
    log_odds = orpo_log_odds(c, r)
    assert_close(torch.nn.functional.logsigmoid(log_odds).mean(), torch.tensor(want["log_odds_ratio"], dtype=dtype),
                 **TRL_TOL)
    assert_close(log_odds.mean(), torch.tensor(want["log_odds_chosen"], dtype=dtype), **TRL_TOL)
