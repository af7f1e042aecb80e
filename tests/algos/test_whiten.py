"""``masked_whiten`` is the one whitening of the package: its variants are bit-identical to the formulas
written out (TRL's PPO, OpenRLHF's REINFORCE++, TRL's RLOO), and each has a hand-computed case."""

import math

import pytest
import torch
from torch.testing import assert_close

from rlhfkit.algos import masked_mean, masked_var, masked_whiten

TIGHT = dict(rtol=1e-6, atol=1e-7)
# valid elements 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9
VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
CENTRED = VALUES - 7 / 3


def random_case(seed: int, dtype=torch.float32, shape=(6, 9)):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=g).to(dtype) * 3 + 0.5
    mask = (torch.rand(shape, generator=g) < 0.6).to(dtype)
    mask.view(-1)[0] = 1.0
    return values, mask


# the formulas as they were written before they called masked_whiten
def ppo_formula(values, mask, shift_mean=True, eps=1e-8):  # TRL 0.11.4 trl.core.masked_whiten
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean


def reinforce_pp_formula(returns, mask, eps=1e-8):  # OpenRLHF's global whitening of the returns
    mean = masked_mean(returns, mask)
    var = masked_var(returns, mask, unbiased=False)
    return (returns - mean) * var.clamp(min=eps).rsqrt() * mask


def rloo_formula(adv, pool):  # TRL 1.x RLOOTrainer normalize_advantages
    return (adv - pool.mean()) / (pool.std() + 1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(5))
def test_ppo_whitening_is_bit_identical(seed, dtype):
    values, mask = random_case(seed, dtype)
    for shift in (True, False):
        assert torch.equal(masked_whiten(values, mask, shift_mean=shift), ppo_formula(values, mask, shift_mean=shift))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(5))
def test_reinforce_pp_whitening_is_bit_identical(seed, dtype):
    returns, mask = random_case(seed, dtype)
    got = masked_whiten(returns, mask, unbiased=False, eps_at="floor") * mask
    assert torch.equal(got, reinforce_pp_formula(returns, mask))
    constant = torch.full_like(returns, 2.0)  # variance 0: the floor eps decides
    got = masked_whiten(constant, mask, unbiased=False, eps_at="floor") * mask
    assert torch.equal(got, reinforce_pp_formula(constant, mask))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(5))
def test_rloo_whitening_is_bit_identical(seed, dtype):
    adv, _ = random_case(seed, dtype, shape=(12,))
    pool = torch.cat([adv, random_case(seed + 100, dtype, shape=(12,))[0]])  # two processes, gathered
    assert torch.equal(masked_whiten(adv, None, eps=1e-4, eps_at="std", pool=pool), rloo_formula(adv, pool))
    assert torch.equal(masked_whiten(adv, None, eps=1e-4, eps_at="std"), rloo_formula(adv, adv))


def test_floor_hand():
    # biased variance 42/9 / 3 = 14/9 over the valid elements, well above the floor
    expected = CENTRED / math.sqrt(14 / 9)
    assert_close(masked_whiten(VALUES, MASK, unbiased=False, eps_at="floor"), expected, **TIGHT)
    # eps = 4 above that variance: the floor divides by sqrt(4) = 2 instead
    assert_close(masked_whiten(VALUES, MASK, unbiased=False, eps_at="floor", eps=4.0), CENTRED / 2, **TIGHT)
    # eps_at="var" adds it instead: sqrt(14/9 + 4)
    assert_close(masked_whiten(VALUES, MASK, unbiased=False, eps=4.0), CENTRED / math.sqrt(14 / 9 + 4), **TIGHT)


def test_std_hand_with_a_pool():
    # pool 1, 2, 3, 6: mean 3, unbiased variance (4 + 1 + 0 + 9) / 3 = 14/3
    adv = torch.tensor([1.0, 6.0], dtype=torch.float64)
    pool = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    std = math.sqrt(14 / 3)
    expected = torch.tensor([(1 - 3) / (std + 1e-4), (6 - 3) / (std + 1e-4)], dtype=torch.float64)
    assert_close(masked_whiten(adv, None, eps=1e-4, eps_at="std", pool=pool), expected, **TIGHT)
    # no pool: the statistics of adv itself (mean 3.5, unbiased variance 12.5)
    own = torch.tensor([-2.5, 2.5], dtype=torch.float64) / (math.sqrt(12.5) + 1e-4)
    assert_close(masked_whiten(adv, None, eps=1e-4, eps_at="std"), own, **TIGHT)


def test_std_hand_with_a_mask():
    # valid 1, 2, 4: unbiased variance 42/9 / 2 = 7/3, divided by std + eps
    expected = CENTRED / (math.sqrt(7 / 3) + 1e-4)
    assert_close(masked_whiten(VALUES, MASK, eps=1e-4, eps_at="std"), expected, **TIGHT)


def test_unmasked_var_hand():
    # mask=None, eps_at="var": every element counts; mean 3.5, unbiased variance 3.5
    expected = (VALUES - 3.5) / math.sqrt(3.5 + 1e-8)
    assert_close(masked_whiten(VALUES, None), expected, **TIGHT)


def test_whiten_errors():
    with pytest.raises(ValueError, match="eps_at"):
        masked_whiten(VALUES, MASK, eps_at="sqrt")
    with pytest.raises(ValueError, match="pool"):
        masked_whiten(VALUES, MASK, pool=VALUES.flatten())
