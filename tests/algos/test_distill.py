"""generalized_jsd_loss: a hand-computed case, a naive per-token loop, and the two KL ends computed directly."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.algos import generalized_jsd_loss, token_divergence

# One position, two tokens: student Q = softmax([0, 0]) = (1/2, 1/2), teacher P = softmax([ln 3, 0]) = (3/4, 1/4).
STUDENT = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64)
TEACHER = torch.tensor([[[math.log(3.0), 0.0]]], dtype=torch.float64)
P, Q = (0.75, 0.25), (0.5, 0.5)


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b))


def jsd(beta, p=P, q=Q):
    m = tuple(beta * x + (1 - beta) * y for x, y in zip(p, q))
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def test_hand_computed_case():
    forward, _ = generalized_jsd_loss(STUDENT, TEACHER, beta=0.0)
    reverse, _ = generalized_jsd_loss(STUDENT, TEACHER, beta=1.0)
    half, _ = generalized_jsd_loss(STUDENT, TEACHER, beta=0.5)
    quarter, _ = generalized_jsd_loss(STUDENT, TEACHER, beta=0.25)
    # KL(P || Q) = 3/4 ln(3/2) + 1/4 ln(1/2);  KL(Q || P) = 1/2 ln(2/3) + 1/2 ln 2
    assert forward.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5)
    assert forward.item() == pytest.approx(0.1308120, rel=1e-5)
    assert reverse.item() == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2.0), rel=1e-5)
    assert reverse.item() == pytest.approx(0.1438410, rel=1e-5)
    # beta = 1/2: M = (5/8, 3/8); 1/2 [3/4 ln(6/5) + 1/4 ln(2/3)] + 1/2 [1/2 ln(4/5) + 1/2 ln(4/3)]
    by_hand = 0.5 * (0.75 * math.log(1.2) + 0.25 * math.log(2 / 3)) \
        + 0.5 * (0.5 * math.log(0.8) + 0.5 * math.log(4 / 3))
    assert half.item() == pytest.approx(by_hand, rel=1e-5)
    assert half.item() == pytest.approx(0.0338221, rel=1e-5)
    # beta = 1/4: M = (9/16, 7/16), the weights are beta on the teacher's side and 1 - beta on the student's
    assert quarter.item() == pytest.approx(jsd(0.25), rel=1e-5)
    assert quarter.item() == pytest.approx(0.25 * kl(P, (9 / 16, 7 / 16)) + 0.75 * kl(Q, (9 / 16, 7 / 16)), rel=1e-5)


def test_temperature_divides_both_sides():
    # logits twice as large at temperature 2 are the same distributions as above
    for beta in (0.0, 0.5, 1.0):
        scaled, _ = generalized_jsd_loss(2 * STUDENT, 2 * TEACHER, beta=beta, temperature=2.0)
        plain, _ = generalized_jsd_loss(STUDENT, TEACHER, beta=beta)
        assert scaled.item() == pytest.approx(plain.item(), rel=1e-5)
    hot, _ = generalized_jsd_loss(STUDENT, TEACHER, beta=0.0, temperature=2.0)  # P = softmax([ln 3 / 2, 0])
    p = (math.sqrt(3) / (1 + math.sqrt(3)), 1 / (1 + math.sqrt(3)))
    assert hot.item() == pytest.approx(kl(p, Q), rel=1e-5)


def _softmax(row, tau):
    top = max(row)
    e = [math.exp((x - top) / tau) for x in row]
    return [x / sum(e) for x in e]


def naive(student, teacher, mask, beta, tau):
    """Per-token loop in Python floats: softmaxes, mixture, the two KLs, then the masked token mean."""
    total, count, per = 0.0, 0.0, []
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            q = _softmax(student[b, t].tolist(), tau)
            p = _softmax(teacher[b, t].tolist(), tau)
            if beta == 0.0:
                d = kl(p, q)
            elif beta == 1.0:
                d = kl(q, p)
            else:
                d = jsd(beta, p, q)
            w = float(mask[b, t])
            per.append(d * w)
            total += d * w
            count += w
    return total / max(count, 1.0), total, per


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_matches_a_naive_loop(beta, tau):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 5, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(2, 3, 5, generator=g, dtype=torch.float64) * 2
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    mean, total, per = naive(student, teacher, mask, beta, tau)
    loss, metrics = generalized_jsd_loss(student, teacher, mask, beta=beta, temperature=tau)
    assert loss.item() == pytest.approx(mean, rel=1e-5)
    assert metrics["num_tokens"].item() == 3.0 and metrics["divergence_mean"].item() == pytest.approx(mean, rel=1e-5)
    assert metrics["divergence_max"].item() == pytest.approx(max(per), rel=1e-5)
    summed, _ = generalized_jsd_loss(student, teacher, mask, beta=beta, temperature=tau, reduction="sum")
    assert summed.item() == pytest.approx(total, rel=1e-5)
    each, _ = generalized_jsd_loss(student, teacher, mask, beta=beta, temperature=tau, reduction="none")
    torch.testing.assert_close(each.flatten(), torch.tensor(per, dtype=torch.float64), rtol=1e-5, atol=1e-12)


def test_the_ends_are_forward_and_reverse_kl_computed_directly():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 4, 7, generator=g)
    teacher = torch.randn(3, 4, 7, generator=g)
    s, t = F.log_softmax(student, -1), F.log_softmax(teacher, -1)
    forward = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)  # KL(teacher || student)
    reverse = F.kl_div(t, s, log_target=True, reduction="none").sum(-1)  # KL(student || teacher)
    got_forward, _ = generalized_jsd_loss(student, teacher, beta=0.0, reduction="none")
    got_reverse, _ = generalized_jsd_loss(student, teacher, beta=1.0, reduction="none")
    torch.testing.assert_close(got_forward, forward, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_reverse, reverse, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(forward, reverse)  # the two directions differ: the test tells them apart
    torch.testing.assert_close(token_divergence(s, t, 0.0), forward, rtol=1e-5, atol=1e-6)


def test_only_the_student_gets_gradients_and_they_match_the_kl_gradient():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss, _ = generalized_jsd_loss(student, teacher, beta=0.0)
    loss.backward()
    assert teacher.grad is None
    # forward KL's gradient w.r.t. the student logits is (Q - P) / tokens
    q, p = torch.softmax(student.detach(), -1), torch.softmax(teacher.detach(), -1)
    torch.testing.assert_close(student.grad, (q - p) / 6, rtol=1e-5, atol=1e-12)


def test_equal_distributions_give_zero_and_jsd_is_symmetric_at_one_half():
    x = torch.randn(2, 3, 5)
    for beta in (0.0, 0.3, 1.0):
        assert generalized_jsd_loss(x, x.clone(), beta=beta)[0].abs().item() < 1e-6
    a, b = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    torch.testing.assert_close(generalized_jsd_loss(a, b, beta=0.5)[0], generalized_jsd_loss(b, a, beta=0.5)[0])


def test_low_precision_logits_are_scored_in_float32():
    a, b = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    loss, _ = generalized_jsd_loss(a.bfloat16(), b.bfloat16(), beta=0.5)
    assert loss.dtype == torch.float32
    exact, _ = generalized_jsd_loss(a.bfloat16().float(), b.bfloat16().float(), beta=0.5)
    assert torch.equal(loss, exact)


def test_an_empty_mask_gives_zero():
    loss, metrics = generalized_jsd_loss(torch.randn(1, 2, 3), torch.randn(1, 2, 3), torch.zeros(1, 2))
    assert loss.item() == 0.0 and metrics["divergence_max"].item() == 0.0 and metrics["num_tokens"].item() == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(beta=1.5), "beta must be in"), (dict(temperature=0.0), "temperature must be > 0"),
    (dict(reduction="batchmean"), "reduction must be one of"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generalized_jsd_loss(torch.randn(1, 2, 3), torch.randn(1, 2, 3), **kwargs)


def test_a_different_vocabulary_is_refused():
    with pytest.raises(ValueError, match="same vocabulary"):
        generalized_jsd_loss(torch.randn(1, 2, 3), torch.randn(1, 2, 4))
