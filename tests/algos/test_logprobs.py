import math

import pytest
import torch
from torch.testing import assert_close

from rlhfkit.algos import entropy_from_logits, logprobs_from_logits, sequence_logprobs

TIGHT = dict(rtol=1e-6, atol=1e-6)

# position 0: softmax(log [1, 2, 3]) = [1/6, 1/3, 1/2]; position 1: uniform over 3
LOGITS = torch.tensor([[[0.0, math.log(2), math.log(3)], [0.0, 0.0, 0.0]]])  # (1, 2, 3)


def random_logits(seed, B=3, T=5, V=11, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, V, (B, T), generator=g)
    return logits.to(dtype), labels


# ---------------------------------------------------------------- hand-computed cases


def test_logprobs_hand():
    out = logprobs_from_logits(LOGITS, torch.tensor([[2, 0]]))
    assert out.dtype == torch.float32
    assert_close(out, torch.tensor([[math.log(0.5), math.log(1 / 3)]]), **TIGHT)


def test_entropy_hand():
    h0 = -(1 / 6 * math.log(1 / 6) + 1 / 3 * math.log(1 / 3) + 1 / 2 * math.log(1 / 2))
    assert_close(entropy_from_logits(LOGITS), torch.tensor([[h0, math.log(3)]]), **TIGHT)


def test_sequence_logprobs_hand():
    lp = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, -0.25, -9.0], [-3.0, -3.0, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(sequence_logprobs(lp, mask), torch.tensor([-7.0, -0.75, 0.0]), **TIGHT)
    assert_close(sequence_logprobs(lp, mask, average=True), torch.tensor([-7 / 3, -0.375, 0.0]), **TIGHT)


# ---------------------------------------------------------------- naive-loop equivalence


@pytest.mark.parametrize("seed", range(3))
def test_logprobs_and_entropy_match_loop(seed):
    logits, labels = random_logits(seed)
    B, T, V = logits.shape
    exp_lp, exp_h = [], []
    for b in range(B):
        row_lp, row_h = [], []
        for t in range(T):
            z = logits[b, t].tolist()
            lse = math.log(sum(math.exp(x) for x in z))
            row_lp.append(z[labels[b, t]] - lse)
            row_h.append(-sum(math.exp(x - lse) * (x - lse) for x in z))
        exp_lp.append(row_lp)
        exp_h.append(row_h)
    assert_close(logprobs_from_logits(logits, labels), torch.tensor(exp_lp, dtype=torch.float64), **TIGHT)
    assert_close(entropy_from_logits(logits), torch.tensor(exp_h, dtype=torch.float64), **TIGHT)


@pytest.mark.parametrize("seed", range(3))
def test_sequence_logprobs_match_loop(seed):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(4, 6, generator=g, dtype=torch.float64) * 5
    mask = (torch.rand(4, 6, generator=g) < 0.7).double()
    mask[:, 0] = 1.0
    sums, avgs = [], []
    for row, mrow in zip(lp.tolist(), mask.tolist()):
        s = sum(x for x, m in zip(row, mrow) if m)
        sums.append(s)
        avgs.append(s / sum(mrow))
    assert_close(sequence_logprobs(lp, mask), torch.tensor(sums, dtype=torch.float64), **TIGHT)
    assert_close(sequence_logprobs(lp, mask, average=True), torch.tensor(avgs, dtype=torch.float64), **TIGHT)


# ---------------------------------------------------------------- gradients, dtypes, chunks


def test_logprobs_gradient_matches_log_softmax_gather():
    logits, labels = random_logits(0, dtype=torch.float32)
    upstream = torch.randn(labels.shape, generator=torch.Generator().manual_seed(1))
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    out_a = logprobs_from_logits(a, labels)
    out_b = torch.log_softmax(b, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert_close(out_a, out_b, **TIGHT)
    (out_a * upstream).sum().backward()
    (out_b * upstream).sum().backward()
    assert_close(a.grad, b.grad, **TIGHT)


def test_bf16_logits_are_upcast():
    logits, labels = random_logits(2, dtype=torch.bfloat16)
    out = logprobs_from_logits(logits, labels)
    assert out.dtype == torch.float32
    ref = torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert_close(out, ref, **TIGHT)
    ent = entropy_from_logits(logits)
    assert ent.dtype == torch.float32
    assert_close(ent, entropy_from_logits(logits.float()), **TIGHT)
    # gradient flows back into bf16 logits
    leaf = logits.clone().requires_grad_(True)
    logprobs_from_logits(leaf, labels).sum().backward()
    assert leaf.grad.dtype == torch.bfloat16 and torch.isfinite(leaf.grad.float()).all()


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])
def test_chunking_gives_same_result(chunk_size):
    logits, labels = random_logits(3, dtype=torch.float32)
    assert_close(
        logprobs_from_logits(logits, labels, chunk_size=chunk_size), logprobs_from_logits(logits, labels), rtol=0, atol=0
    )
    assert_close(entropy_from_logits(logits, chunk_size=chunk_size), entropy_from_logits(logits), rtol=0, atol=0)
    with pytest.raises(ValueError):
        logprobs_from_logits(logits, labels, chunk_size=0)


def test_chunked_gradient_and_noncontiguous_logits():
    logits, labels = random_logits(4, T=6, dtype=torch.float32)
    view = logits[:, :-1]  # non-contiguous, as in logits[:, :-1] vs input_ids[:, 1:]
    assert not view.is_contiguous()
    a = view.detach().clone().requires_grad_(True)
    b = view.detach().clone().requires_grad_(True)
    upstream = torch.randn(labels[:, 1:].shape, generator=torch.Generator().manual_seed(5))
    (logprobs_from_logits(a, labels[:, 1:], chunk_size=3) * upstream).sum().backward()
    ref = torch.log_softmax(b, -1).gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    (ref * upstream).sum().backward()
    assert_close(a.grad, b.grad, **TIGHT)
    assert_close(logprobs_from_logits(view, labels[:, 1:], chunk_size=7), ref.detach(), **TIGHT)
