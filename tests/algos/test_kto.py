"""KTO and unpaired APO-zero losses: hand-computed cases, a naive per-row loop, gradients, bad input."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rlhfkit.algos.kto import KTO_LOSSES, USES_KL, apo_zero_unpaired_loss, kto_kl, kto_loss

TIGHT = dict(rtol=1e-6, atol=1e-7)


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# policy / reference log-probs with log-ratios h = 1, -1, 0, -2; rows 0, 1 desirable
POLICY, REF = t64([-1.0, -3.0, -2.0, -4.0]), t64([-2.0, -2.0, -2.0, -2.0])
LABELS = torch.tensor([True, True, False, False])
# mismatched pairs whose log-ratios are all 1: z0 = 1
KL_POLICY, KL_REF = t64([-1.0, -2.0, -3.0, -4.0]), t64([-2.0, -3.0, -4.0, -5.0])


def test_kto_hand_case():
    kl = kto_kl(KL_POLICY, KL_REF)
    assert kl.item() == 1.0
    losses, rewards, z0 = kto_loss(POLICY, REF, LABELS, kl, beta=0.5, desirable_weight=2.0, undesirable_weight=0.5)
    # beta * (h - z0) = 0, -1 for the desirable rows; beta * (z0 - h) = 0.5, 1.5 for the undesirable ones
    expected = [2.0 * 0.5, 2.0 * 0.7310585786300049, 0.5 * 0.3775406687981454, 0.5 * 0.18242552380635635]
    assert_close(losses, t64(expected), rtol=1e-12, atol=1e-12)
    assert_close(rewards, t64([0.5, -0.5, 0.0, -1.0]), **TIGHT)
    assert z0.item() == 1.0


def test_kto_reference_point_is_clamped_at_zero():
    kl = kto_kl(KL_REF, KL_POLICY)  # mean log-ratio -1
    assert kl.item() == -1.0
    losses, _, z0 = kto_loss(POLICY, REF, LABELS, kl, beta=1.0)
    assert z0.item() == 0.0
    # z0 = 0: desirable 1 - sigmoid(h), undesirable 1 - sigmoid(-h)
    expected = [1 - sigmoid(1), 1 - sigmoid(-1), 1 - sigmoid(0), 1 - sigmoid(2)]
    assert_close(losses, t64(expected), rtol=1e-12, atol=1e-12)


def test_apo_zero_unpaired_hand_case():
    losses, rewards = apo_zero_unpaired_loss(POLICY, REF, LABELS, beta=0.5)
    expected = [0.3775406687981454, 0.6224593312018546, 0.5, 0.2689414213699951]  # 1-s(.5), 1-s(-.5), s(0), s(-1)
    assert_close(losses, t64(expected), rtol=1e-12, atol=1e-12)
    assert_close(rewards, t64([0.5, -0.5, 0.0, -1.0]), **TIGHT)


def naive_kto(policy, ref, labels, kl_policy, kl_ref, beta, dw, uw):
    """One row at a time with the math module, the way the paper writes it."""
    z0 = max(0.0, sum(p - r for p, r in zip(kl_policy, kl_ref)) / len(kl_policy))
    out = []
    for p, r, good in zip(policy, ref, labels):
        h = p - r
        out.append(dw * (1 - sigmoid(beta * (h - z0))) if good else uw * (1 - sigmoid(beta * (z0 - h))))
    return out


def naive_apo(policy, ref, labels, beta, dw, uw):
    return [dw * (1 - sigmoid(beta * (p - r))) if good else uw * sigmoid(beta * (p - r))
            for p, r, good in zip(policy, ref, labels)]


@pytest.mark.parametrize("seed", range(5))
def test_losses_equal_a_naive_loop(seed):
    g = torch.Generator().manual_seed(seed)
    policy, ref, kl_p, kl_r = (-torch.rand(9, generator=g, dtype=torch.float64) * 6 for _ in range(4))
    labels = torch.rand(9, generator=g) > 0.4
    beta, dw, uw = 0.1 + seed * 0.3, 1.0 + seed * 0.25, 1.33 - seed * 0.1
    args = [x.tolist() for x in (policy, ref)] + [labels.tolist()]
    losses, rewards, _ = kto_loss(policy, ref, labels, kto_kl(kl_p, kl_r), beta, dw, uw)
    assert_close(losses, t64(naive_kto(*args, kl_p.tolist(), kl_r.tolist(), beta, dw, uw)), **TIGHT)
    assert_close(rewards, beta * (policy - ref), **TIGHT)
    apo, _ = apo_zero_unpaired_loss(policy, ref, labels, beta, dw, uw)
    assert_close(apo, t64(naive_apo(*args, beta, dw, uw)), **TIGHT)


def test_gradient_flows_through_the_log_ratio_only():
    policy = POLICY.clone().requires_grad_(True)
    kl_policy = KL_POLICY.clone().requires_grad_(True)
    losses, _, _ = kto_loss(policy, REF, LABELS, kto_kl(kl_policy, KL_REF), beta=0.5)
    losses.mean().backward()
    assert kl_policy.grad is None  # the reference point is detached
    # d/dh [1 - s(b(h - z0))] = -b s(1 - s): a desirable row's log-prob is pushed up, an undesirable one down
    assert (policy.grad[:2] < 0).all() and (policy.grad[2:] > 0).all()
    s = sigmoid(0.5 * (1 - 1))
    assert policy.grad[0].item() == pytest.approx(-0.5 * s * (1 - s) / 4, rel=1e-12)


def test_dispatch_and_bad_input():
    assert set(KTO_LOSSES) == {"kto", "apo_zero_unpaired"} and USES_KL == {"kto"}
    kl = kto_kl(KL_POLICY, KL_REF)
    with pytest.raises(ValueError, match="beta"):
        kto_loss(POLICY, REF, LABELS, kl, beta=0.0)
    with pytest.raises(ValueError, match="labels must be a bool"):
        kto_loss(POLICY, REF, LABELS.long(), kl, beta=0.1)
    with pytest.raises(ValueError, match="shape"):
        kto_loss(POLICY, REF, LABELS[:3], kl, beta=0.1)
    with pytest.raises(ValueError, match="undesirable_weight"):
        apo_zero_unpaired_loss(POLICY, REF, LABELS, beta=0.1, undesirable_weight=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        kto_kl(KL_POLICY, KL_REF[:2])


# ---------------------------------------------------------------- against TRL 1.16

TRL_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "trl_1_16" / "kto_losses.json"


@pytest.fixture(scope="module")
def trl_reference():
    """Values TRL 1.16's KTOTrainer._compute_loss computed (tests/fixtures/make_trl116_kto_reference.py)."""
    return json.loads(TRL_FIXTURE.read_text())


def test_fixture_covers_both_losses_and_both_kl_signs(trl_reference):
    cases = trl_reference["cases"].values()
    assert trl_reference["trl_version"] == "1.16.0"
    assert {c["loss_type"] for c in cases} == {"kto", "apo_zero_unpaired"}
    assert any(c["kl"] > 0 for c in cases) and any(c["loss_type"] == "kto" and c["kl"] == 0 for c in cases)


@pytest.mark.parametrize("case", ["kl_positive/kto/beta0.1/dw1.0/uw1.0", "kl_positive/kto/beta0.5/dw1.33/uw0.75",
                                  "kl_positive/apo_zero_unpaired/beta0.3/dw1.0/uw1.0",
                                  "kl_positive/apo_zero_unpaired/beta0.5/dw0.8/uw1.2",
                                  "kl_clamped/kto/beta0.1/dw1.0/uw1.0", "kl_clamped/kto/beta0.5/dw1.33/uw0.75",
                                  "kl_clamped/apo_zero_unpaired/beta0.3/dw1.0/uw1.0",
                                  "kl_clamped/apo_zero_unpaired/beta0.5/dw0.8/uw1.2"])
def test_equals_trl_1_16(trl_reference, case):
    c = trl_reference["cases"][case]
    x = {k: t64(v) for k, v in c["inputs"].items()}
    labels = torch.tensor(trl_reference["labels"])
    weights = dict(desirable_weight=c["desirable_weight"], undesirable_weight=c["undesirable_weight"])
    fn = KTO_LOSSES[c["loss_type"]]
    if c["loss_type"] in USES_KL:
        kl = kto_kl(x["policy_kl_logps"], x["reference_kl_logps"])
        losses, rewards, z0 = fn(x["policy_logps"], x["reference_logps"], labels, kl, c["beta"], **weights)
        assert z0.item() == pytest.approx(c["kl"], rel=1e-6, abs=1e-9)
    else:
        losses, rewards = fn(x["policy_logps"], x["reference_logps"], labels, c["beta"], **weights)
    assert losses.mean().item() == pytest.approx(c["loss"], rel=1e-6)
    assert rewards[labels].mean().item() == pytest.approx(c["rewards/chosen"], rel=1e-6)
    assert rewards[~labels].mean().item() == pytest.approx(c["rewards/rejected"], rel=1e-6)
    assert x["policy_logps"][labels].mean().item() == pytest.approx(c["logps/chosen"], rel=1e-6)
