import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from rlhfkit.algos import RunningMoments, masked_mean, masked_sum, masked_var, masked_whiten

TIGHT = dict(rtol=1e-6, atol=1e-7)

# valid elements: 1, 2 (row 0) and 4 (row 1); mean 7/3, sample variance 7/3
VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)


def random_case(seed, shape=(4, 7)):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(shape, generator=g) < 0.6).double()
    mask[0, 0] = mask[-1, -1] = 1.0  # at least two valid elements
    return values, mask


def valid_list(values, mask):
    return [v for v, m in zip(values.flatten().tolist(), mask.flatten().tolist()) if m]


# ---------------------------------------------------------------- hand-computed cases


def test_masked_sum_and_mean_hand():
    assert_close(masked_sum(VALUES, MASK), torch.tensor(7.0, dtype=torch.float64), **TIGHT)
    assert_close(masked_sum(VALUES, MASK, dim=-1), torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert_close(masked_mean(VALUES, MASK), torch.tensor(7 / 3, dtype=torch.float64), **TIGHT)
    assert_close(masked_mean(VALUES, MASK, dim=-1), torch.tensor([1.5, 4.0], dtype=torch.float64))
    assert_close(masked_mean(VALUES, MASK, dim=0), torch.tensor([2.5, 2.0, math.nan], dtype=torch.float64), equal_nan=True)


def test_masked_var_hand():
    # deviations from 7/3: -4/3, -1/3, 5/3; squares sum to 42/9
    assert_close(masked_var(VALUES, MASK), torch.tensor(42 / 9 / 2, dtype=torch.float64), **TIGHT)
    assert_close(masked_var(VALUES, MASK, unbiased=False), torch.tensor(42 / 9 / 3, dtype=torch.float64), **TIGHT)


def test_masked_var_single_element_is_zero_not_nan():
    # TRL divides by n - 1 = 0 here (NaN); a batch of one single-token response must work.
    values = torch.tensor([[0.3, 7.0, -2.0]])
    mask = torch.tensor([[0.0, 1.0, 0.0]])
    assert_close(masked_var(values, mask), torch.tensor(0.0))
    whitened = masked_whiten(values, mask)
    assert torch.isfinite(whitened).all()
    assert_close(whitened[0, 1], torch.tensor(0.0))


def test_masked_var_empty_mask_does_not_raise():
    out = masked_var(torch.ones(2, 3), torch.zeros(2, 3))
    assert out.shape == ()  # NaN by contract (documented), but no exception


def test_masked_whiten_hand():
    std = math.sqrt(7 / 3 + 1e-8)
    expected = torch.tensor([[1 - 7 / 3, 2 - 7 / 3, 3 - 7 / 3], [4 - 7 / 3, 5 - 7 / 3, 6 - 7 / 3]], dtype=torch.float64) / std
    assert_close(masked_whiten(VALUES, MASK), expected, **TIGHT)
    assert_close(masked_whiten(VALUES, MASK, shift_mean=False), expected + 7 / 3, **TIGHT)


def test_masked_var_matches_trl_formula_bitwise_float32():
    values, mask = random_case(3)
    values, mask = values.float(), mask.float()
    mean = (values * mask).sum() / mask.sum()
    var = ((values - mean) ** 2 * mask).sum() / mask.sum()
    trl = var * (mask.sum() / (mask.sum() - 1))
    assert torch.equal(masked_var(values, mask), trl)


# ---------------------------------------------------------------- naive-loop equivalence


@pytest.mark.parametrize("seed", range(5))
def test_masked_stats_match_loop(seed):
    values, mask = random_case(seed)
    xs = valid_list(values, mask)
    n = len(xs)
    mean = sum(xs) / n
    var_b = sum((x - mean) ** 2 for x in xs) / n
    assert_close(masked_sum(values, mask), torch.tensor(sum(xs), dtype=torch.float64), **TIGHT)
    assert_close(masked_mean(values, mask), torch.tensor(mean, dtype=torch.float64), **TIGHT)
    assert_close(masked_var(values, mask, unbiased=False), torch.tensor(var_b, dtype=torch.float64), **TIGHT)
    assert_close(masked_var(values, mask), torch.tensor(var_b * n / (n - 1), dtype=torch.float64), **TIGHT)

    row_means = [
        sum(v * m for v, m in zip(vr, mr)) / sum(mr) if sum(mr) else math.nan
        for vr, mr in zip(values.tolist(), mask.tolist())
    ]
    assert_close(masked_mean(values, mask, dim=1), torch.tensor(row_means, dtype=torch.float64), equal_nan=True, **TIGHT)

    var_u = var_b * n / (n - 1)
    for shift in (True, False):
        expected = [
            [(v - mean) / math.sqrt(var_u + 1e-8) + (0.0 if shift else mean) for v in row] for row in values.tolist()
        ]
        got = masked_whiten(values, mask, shift_mean=shift)
        assert_close(got, torch.tensor(expected, dtype=torch.float64), **TIGHT)


# ---------------------------------------------------------------- RunningMoments


def test_running_moments_hand():
    rm = RunningMoments()
    mean, std = rm.update(torch.tensor([1.0, 2.0, 3.0]))
    assert_close(mean, torch.tensor(2.0))
    assert_close(std, torch.tensor(1.0))  # sqrt((2/3) * 3 / 2)
    assert_close(rm.mean, torch.tensor(2.0, dtype=torch.float64), **TIGHT)
    assert_close(rm.std, torch.tensor(1.0, dtype=torch.float64), **TIGHT)

    mean, std = rm.update(torch.tensor([5.0]))
    assert_close(mean, torch.tensor(5.0))
    assert_close(std, torch.tensor(0.0))  # one-element batch: 0, not NaN
    # all seen: 1, 2, 3, 5 -> mean 2.75, squared deviations sum 8.75, unbiased var 8.75 / 3
    assert_close(rm.mean, torch.tensor(2.75, dtype=torch.float64), **TIGHT)
    assert_close(rm.var, torch.tensor(8.75 / 4, dtype=torch.float64), **TIGHT)
    assert_close(rm.std, torch.tensor(math.sqrt(8.75 / 3), dtype=torch.float64), **TIGHT)


def test_running_moments_first_batch_of_one_no_nan():
    rm = RunningMoments()
    mean, std = rm.update(torch.tensor([4.0]))
    assert_close(mean, torch.tensor(4.0))
    assert_close(std, torch.tensor(0.0))
    assert_close(rm.mean, torch.tensor(4.0, dtype=torch.float64), **TIGHT)
    assert_close(rm.std, torch.tensor(1.0, dtype=torch.float64))  # undefined yet: prior kept
    for t in rm.state_dict().values():
        assert torch.isfinite(t)
    rm.update(torch.tensor([6.0]))
    assert_close(rm.mean, torch.tensor(5.0, dtype=torch.float64), **TIGHT)
    assert_close(rm.std, torch.tensor(math.sqrt(2.0), dtype=torch.float64), **TIGHT)


def test_running_moments_match_numpy_over_concatenated_batches():
    g = torch.Generator().manual_seed(0)
    rm = RunningMoments()
    seen = []
    for size in (8, 3, 16, 1, 5):
        xs = torch.randn(size, generator=g) * 3 + 1
        seen.append(xs.double().numpy())
        batch_mean, batch_std = rm.update(xs)
        allx = np.concatenate(seen)
        # the 1e-24 prior count is negligible at float64 precision
        assert_close(rm.mean, torch.tensor(allx.mean(), dtype=torch.float64), rtol=1e-6, atol=1e-6)
        assert_close(rm.std, torch.tensor(allx.std(ddof=1), dtype=torch.float64), rtol=1e-6, atol=1e-6)
        assert_close(rm.var, torch.tensor(allx.var(), dtype=torch.float64), rtol=1e-6, atol=1e-6)
        assert_close(batch_mean, torch.tensor(seen[-1].mean(), dtype=torch.float32), rtol=1e-5, atol=1e-6)
        expected_std = seen[-1].std(ddof=1) if size > 1 else 0.0
        assert_close(batch_std, torch.tensor(expected_std, dtype=torch.float32), rtol=1e-5, atol=1e-6)


def test_running_moments_state_dict_round_trip():
    rm = RunningMoments()
    rm.update(torch.tensor([1.0, 5.0, 2.0]))
    other = RunningMoments()
    other.load_state_dict(rm.state_dict())
    xs = torch.tensor([0.5, -1.0])
    assert_close(rm.update(xs), other.update(xs))
    for k, v in rm.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    other.load_state_dict({"mean": 1.0, "var": 2.0, "std": 3.0, "count": 4.0})
    assert other.count.dtype == torch.float64 and float(other.std) == 3.0
