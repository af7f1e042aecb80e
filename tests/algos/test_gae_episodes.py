"""GAE over a window of several episodes (control PPO): bootstrap value and episode ends."""

import torch

from rlhfkit.algos import gae


def _naive(rewards, values, last_values, dones, gamma, lam):
    """Per-row, per-step transcription of the recursion, in plain Python floats."""
    B, T = rewards.shape
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            nxt = float(values[b, t + 1]) if t < T - 1 else float(last_values[b])
            keep = 1.0 - float(dones[b, t])
            delta = float(rewards[b, t]) + gamma * keep * nxt - float(values[b, t])
            running = delta + gamma * lam * keep * running
            adv[b][t] = running
    return torch.tensor(adv, dtype=torch.float64)


def test_hand_computed_window_with_an_episode_end():
    # one env, 3 steps; the episode terminates at step 1, a new one starts at step 2
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 0.25, 1.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    last = torch.tensor([2.0], dtype=torch.float64)
    g, lam = 0.9, 0.8
    a2 = 3.0 + g * 2.0 - 1.0  # bootstrapped from last_values: 3.8
    a1 = 2.0 - 0.25  # terminal: no bootstrap, no recursion: 1.75
    a0 = (1.0 + g * 0.25 - 0.5) + g * lam * a1  # 0.725 + 1.26 = 1.985
    adv, ret = gae(r, v, torch.ones_like(r), g, lam, last_values=last, dones=d)
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2]], dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(ret, adv + v, rtol=1e-12, atol=0)


def test_matches_a_naive_loop_on_random_windows():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(5, 17, generator=gen, dtype=torch.float64)
    v = torch.randn(5, 17, generator=gen, dtype=torch.float64)
    d = (torch.rand(5, 17, generator=gen) < 0.2).double()
    last = torch.randn(5, generator=gen, dtype=torch.float64)
    adv, _ = gae(r, v, torch.ones_like(r), 0.99, 0.95, last_values=last, dones=d)
    torch.testing.assert_close(adv, _naive(r, v, last, d, 0.99, 0.95), rtol=1e-10, atol=1e-12)


def test_without_dones_or_bootstrap_it_is_the_single_episode_form():
    gen = torch.Generator().manual_seed(1)
    r, v = torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen)
    m = torch.ones(3, 6)
    plain = gae(r, v, m, 0.97, 0.9)
    explicit = gae(r, v, m, 0.97, 0.9, last_values=torch.zeros(3), dones=torch.zeros(3, 6))
    for a, b in zip(plain, explicit):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
