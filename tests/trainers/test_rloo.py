"""RLOOTrainer (TRL 1.x API): its sequence-level loss by hand and against a loop, KL in the reward, smoke."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.config import ConfigError
from rlhfkit.algos.advantages import rloo_sequence_loss
from rlhfkit.trainers.rloo import RLOOConfig, RLOOTrainer, rloo_method
from tests.trainers.online_helpers import in_target, params_of, prompt_rows, small


def test_sequence_loss_hand_case():
    # row 0: log-ratio sum 0.1 + 0.2 = 0.3 (pad ignored), rho = e^0.3 = 1.3499 > 1.2, A = +1: clipped at 1.2
    # row 1: log-ratio -0.5, rho = 0.6065 < 0.8, A = -2: clipped at 0.8 -> min(-1.2131, -1.6) = -1.6
    logprobs = torch.tensor([[0.1, 0.2, 5.0], [-0.5, 0.0, 0.0]])
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, metrics = rloo_sequence_loss(logprobs, old, adv, mask, 0.2, 0.2)
    expected = -(min(math.exp(0.3) * 1, 1.2 * 1) + min(math.exp(-0.5) * -2, 0.8 * -2)) / 2
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=0)
    assert metrics["clip_ratio/high_mean"].item() == 0.5 and metrics["clip_ratio/low_mean"].item() == 0.5
    assert metrics["clip_ratio/region_mean"].item() == 1.0


def test_sequence_loss_matches_a_naive_loop_with_gradients():
    g = torch.Generator().manual_seed(0)
    logprobs = (torch.randn(6, 5, generator=g) * 0.3).requires_grad_()
    old = torch.randn(6, 5, generator=g) * 0.3
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    adv = torch.randn(6, generator=g)
    loss, _ = rloo_sequence_loss(logprobs, old, adv, mask, 0.2, 0.28)
    naive = 0.0
    for i in range(6):
        s = sum(float(mask[i, t]) * (logprobs[i, t] - old[i, t]) for t in range(5))
        rho = torch.exp(s)
        naive = naive - torch.min(rho * adv[i], rho.clamp(0.8, 1.28) * adv[i]) / 6
    torch.testing.assert_close(loss, naive, rtol=1e-5, atol=1e-7)
    (grad,) = torch.autograd.grad(loss, logprobs)
    (naive_grad,) = torch.autograd.grad(naive, logprobs)
    torch.testing.assert_close(grad, naive_grad, rtol=1e-5, atol=1e-7)


def test_kl_goes_into_the_reward_before_leave_one_out():
    cfg = RLOOConfig(output_dir="x", num_generations=2, per_device_train_batch_size=4, beta=0.5,
                     reward_clip_range=[-1.0, 1.0])
    rewards = torch.tensor([3.0, 0.0, 0.5, 0.5])  # 3.0 is clipped to 1.0
    old = torch.tensor([[0.2, 0.4], [0.0, 0.0], [0.1, 9.0], [0.0, 0.0]])
    ref = torch.zeros(4, 2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    adv, metrics = rloo_method(cfg).advantages(rewards, old, ref, mask)
    r = torch.tensor([1.0 - 0.5 * 0.6, 0.0, 0.5 - 0.5 * 0.1, 0.5])  # sequence-summed KL, padding left out
    torch.testing.assert_close(adv, torch.stack([r[0] - r[1], r[1] - r[0], r[2] - r[3], r[3] - r[2]]))
    torch.testing.assert_close(metrics["kl"], torch.tensor(0.7 / 7))


def test_normalize_advantages_whitens():
    cfg = RLOOConfig(output_dir="x", num_generations=2, per_device_train_batch_size=4, beta=0.0,
                     normalize_advantages=True)
    adv, _ = rloo_method(cfg).advantages(torch.tensor([1.0, 0.0, 3.0, 0.0]), None, None, torch.ones(4, 2))
    torch.testing.assert_close(adv.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv.std(), torch.tensor(1.0), atol=1e-3, rtol=0)
    # with another process: whitened by the mean and std of both processes' advantages, as TRL
    other = torch.tensor([4.0, -4.0, 0.0, 0.0])
    adv, _ = rloo_method(cfg).advantages(torch.tensor([1.0, 0.0, 3.0, 0.0]), None, None, torch.ones(4, 2),
                                         lambda t: torch.cat([t, other]))
    mine = torch.tensor([1.0, -1.0, 3.0, -3.0])  # leave-one-out with G = 2: r_i - r_other
    pool = torch.cat([mine, other])
    torch.testing.assert_close(adv, (mine - pool.mean()) / (pool.std() + 1e-4))


def test_smoke_reference_frozen_and_round_trip(tokenizer, tmp_path):
    trainer = RLOOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target,
                          args=RLOOConfig(**small(tmp_path, beta=0.05)), train_dataset=prompt_rows(),
                          processing_class=tokenizer)
    before, ref_before = params_of(trainer.model), params_of(trainer.ref_model)
    history = trainer.train()
    assert all(math.isfinite(row["train/loss"]) for row in history if "train/loss" in row)
    assert "train/kl" in history[-1] and "train/clip_ratio/region_mean" in history[-1]
    after = params_of(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.equal(ref_before[n], p) for n, p in trainer.ref_model.named_parameters())
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert all(torch.equal(after[n], p) for n, p in loaded.named_parameters())


def test_defaults_are_trls():
    cfg = RLOOConfig()
    assert (cfg.num_generations, cfg.beta, cfg.epsilon, cfg.learning_rate, cfg.normalize_advantages) == \
        (2, 0.05, 0.2, 1e-6, False)


@pytest.mark.parametrize("overrides, field", [
    (dict(reward_clip_range=[1.0]), "reward_clip_range"),
    (dict(reward_clip_range=[2.0, 1.0]), "reward_clip_range"),
    (dict(beta=-0.1), "beta"),
    (dict(num_generations=1), "num_generations"),
    (dict(epsilon=0.0), "epsilon"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        RLOOConfig(**small("out", **overrides))
    assert err.value.field == field
