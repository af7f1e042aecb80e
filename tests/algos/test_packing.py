import torch
from torch.testing import assert_close

from rlhfkit.algos import segment_mean, segment_sum, sequence_logprobs, unpack_tokens

TIGHT = dict(rtol=1e-6, atol=1e-6)

# three sequences packed: seq 0 scores 2 tokens, seq 1 none, seq 2 three (columns of a K = 3 region)
VALUES = torch.tensor([-1.0, -2.0, -0.5, -0.25, -4.0])
SEGMENT = torch.tensor([0, 0, 2, 2, 2])
COLUMN = torch.tensor([1, 2, 0, 1, 2])


def test_segment_sum_and_mean_hand():
    assert_close(segment_sum(VALUES, SEGMENT, 3), torch.tensor([-3.0, 0.0, -4.75]), **TIGHT)
    assert_close(segment_mean(VALUES, SEGMENT, 3), torch.tensor([-1.5, 0.0, -4.75 / 3]), **TIGHT)


def test_unpack_tokens_hand():
    out = unpack_tokens(VALUES, SEGMENT, COLUMN, (3, 3))
    assert torch.equal(out, torch.tensor([[0.0, -1.0, -2.0], [0.0, 0.0, 0.0], [-0.5, -0.25, -4.0]]))
    # a sum over the padded layout is the segment sum (the mask is implicit: 0 where nothing was scored)
    assert_close(sequence_logprobs(out, (out != 0).float()), segment_sum(VALUES, SEGMENT, 3), **TIGHT)


def random_packing(seed, S=6, K=7, extra=()):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(S, K, generator=g) < 0.6
    segment, column = mask.nonzero(as_tuple=True)
    values = torch.randn(len(segment), *extra, generator=g, dtype=torch.float64)
    return values, segment, column, (S, K)


def test_segment_functions_match_a_naive_loop():
    for seed in range(5):
        values, segment, column, (S, K) = random_packing(seed, extra=(4,))
        sums, means, padded = torch.zeros(S, 4, dtype=values.dtype), torch.zeros(S, 4, dtype=values.dtype), \
            torch.zeros(S, K, 4, dtype=values.dtype)
        for s in range(S):
            rows = [p for p in range(len(values)) if int(segment[p]) == s]
            for p in rows:
                sums[s] += values[p]
                padded[s, int(column[p])] = values[p]
            means[s] = sums[s] / max(len(rows), 1)
        assert_close(segment_sum(values, segment, S), sums, rtol=1e-12, atol=1e-12)
        assert_close(segment_mean(values, segment, S), means, rtol=1e-12, atol=1e-12)
        assert torch.equal(unpack_tokens(values, segment, column, (S, K)), padded)


def test_gradients_flow_back_to_each_packed_position():
    values, segment, column, shape = random_packing(1)
    values.requires_grad_(True)
    weights = torch.randn(shape, dtype=values.dtype)
    (unpack_tokens(values, segment, column, shape) * weights).sum().backward()
    assert torch.equal(values.grad, weights[segment, column])  # d out[s, k] / d values[p] = 1 at its one slot
    values.grad = None
    seg_w = torch.randn(shape[0], dtype=values.dtype)
    (segment_sum(values, segment, shape[0]) * seg_w).sum().backward()
    assert torch.equal(values.grad, seg_w[segment])
