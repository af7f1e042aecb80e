import math

import torch

from rlhfkit.algos import bradley_terry_loss


def test_bradley_terry_hand_computed():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    loss, m = bradley_terry_loss(chosen, rejected)
    # -log sigmoid(1) = log(1 + e^-1); -log sigmoid(-1) = log(1 + e)
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=0)
    assert m["accuracy"].item() == 0.5 and m["margin"].item() == 0.0
    loss_m, _ = bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 0.0]))
    expected_m = (math.log(2) + math.log1p(math.exp(1))) / 2  # first pair: sigmoid(0)
    torch.testing.assert_close(loss_m, torch.tensor(expected_m), rtol=1e-6, atol=0)


def test_bradley_terry_matches_naive_loop_with_weights_and_margin():
    g = torch.Generator().manual_seed(0)
    c, r, m, w = (torch.randn(7, generator=g) for _ in range(4))
    w = w.abs() + 0.1
    loss, _ = bradley_terry_loss(c, r, margin=m, weight=w)
    num = sum(wi * math.log1p(math.exp(-(ci - ri - mi))) for ci, ri, mi, wi in zip(c.tolist(), r.tolist(), m.tolist(), w.tolist()))
    torch.testing.assert_close(loss, torch.tensor(num / w.sum().item()), rtol=1e-5, atol=0)


def test_bradley_terry_gradient_pushes_chosen_up():
    c = torch.tensor([0.0], requires_grad=True)
    r = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(c, r)[0].backward()
    assert c.grad.item() == -0.5 and r.grad.item() == 0.5
