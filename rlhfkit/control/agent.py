"""Actor-critic for control tasks: a categorical actor (discrete actions) or a Gaussian actor
(continuous actions, diagonal covariance, learned or fixed), a critic, and an observation
normaliser that travels with the saved policy.

``evaluate(batch_obs, batch_acts) -> (values, log_probs, entropy)`` is the PPO update's view:
the same quantities the LLM trainers get from a forward pass (a token is an action, a response
is an episode). Discrete log-probs use ``algos.logprobs_from_logits`` / ``entropy_from_logits``,
the functions PPO on language models uses. The Gaussian log-density is written out (it equals
``MultivariateNormal(mean, diag(std**2)).log_prob``, tested) because building a distribution
object per environment step costs more than the network on these sizes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import algos

CONFIG_FILE, WEIGHTS_FILE = "policy_config.json", "policy.safetensors"
_LOG_2PI = math.log(2 * math.pi)


def _mlp(sizes: list[int], activation: str, out_gain: float) -> nn.Sequential:
    """Linear layers with orthogonal init (gain sqrt(2), last layer ``out_gain``), zero biases
    (Engstrom et al. 2020, "Implementation Matters in Deep Policy Gradients")."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, out_gain if last else math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, act()]
    return nn.Sequential(*layers)


class ObsNormalizer(nn.Module):
    """Running mean/variance of observations (parallel update, float64), applied as
    ``clip((obs - mean) / sqrt(var + eps), -clip, clip)``; buffers, so saved with the policy."""

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip, self.eps = clip, eps

    @torch.no_grad()
    def update(self, batch: np.ndarray) -> None:
        x = torch.as_tensor(batch, dtype=torch.float64).reshape(-1, self.mean.shape[0])  # (N, D)
        n = x.shape[0]
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)  # (D,), (D,)
        delta, tot = b_mean - self.mean, self.count + n
        self.mean += delta * n / tot
        self.var.copy_((self.var * self.count + b_var * n + delta**2 * self.count * n / tot) / tot)
        self.count.copy_(tot)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z = (obs.to(torch.float64) - self.mean) / torch.sqrt(self.var + self.eps)
        return z.clamp(-self.clip, self.clip).to(torch.float32)


class ActorCritic(nn.Module):
    """``ActorCritic(obs_dim, action_dim, discrete, hidden_sizes=(64, 64), fixed_std=None, ...)``.

    Discrete: the actor outputs ``action_dim`` logits. Continuous: it outputs the mean; the
    standard deviation is ``exp(log_std)``, a learned state-independent parameter, or the
    constant ``fixed_std`` (the fixed covariance matrix ``diag(fixed_std**2)`` of the classic
    actor-critic tutorial) when given. ``normalize_obs`` adds an :class:`ObsNormalizer`.
    """

    def __init__(self, obs_dim: int, action_dim: int, discrete: bool, hidden_sizes=(64, 64),
                 activation: str = "tanh", fixed_std: float | None = None, log_std_init: float = 0.0,
                 normalize_obs: bool = False, obs_clip: float = 10.0, action_low=None, action_high=None):
        super().__init__()
        if fixed_std is not None and fixed_std <= 0:
            raise ValueError(f"fixed_std must be > 0 (or None for a learned log-std), got {fixed_std}")
        self.spec = dict(obs_dim=obs_dim, action_dim=action_dim, discrete=discrete, hidden_sizes=list(hidden_sizes),
                         activation=activation, fixed_std=fixed_std, log_std_init=log_std_init,
                         normalize_obs=normalize_obs, obs_clip=obs_clip,
                         action_low=None if action_low is None else [float(a) for a in np.ravel(action_low)],
                         action_high=None if action_high is None else [float(a) for a in np.ravel(action_high)])
        self.discrete = discrete
        sizes = [obs_dim, *hidden_sizes]
        self.critic = _mlp(sizes + [1], activation, 1.0)
        self.actor = _mlp(sizes + [action_dim], activation, 0.01)  # near-uniform / near-zero-mean start
        if discrete:
            self.log_std = None
        elif fixed_std is None:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))
        else:
            self.register_buffer("log_std", torch.full((action_dim,), math.log(fixed_std)))
        self.obs_norm = ObsNormalizer(obs_dim, obs_clip) if normalize_obs else None

    # ------------------------------------------------------------------ the PPO view
    def normalize(self, obs) -> torch.Tensor:
        """Raw observations (N, D), numpy or tensor -> what the networks see (float32)."""
        obs = torch.as_tensor(obs)
        return self.obs_norm(obs) if self.obs_norm is not None else obs.to(torch.float32)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) for normalised observations (N, D) -> (N,)."""
        return self.critic(obs).squeeze(-1)

    def _log_prob_entropy(self, head: torch.Tensor, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.discrete:
            logits = head.unsqueeze(0)  # (1, N, A): the (B, T, V) layout of an LM
            logp = algos.logprobs_from_logits(logits, acts.long().unsqueeze(0)).squeeze(0)  # (N,)
            return logp, algos.entropy_from_logits(logits).squeeze(0)  # (N,), (N,)
        log_std = self.log_std.expand_as(head)  # (N, A)
        z = (acts - head) * torch.exp(-log_std)  # (N, A)
        logp = (-0.5 * z**2 - log_std - 0.5 * _LOG_2PI).sum(-1)  # (N,) diagonal Gaussian
        entropy = (0.5 + 0.5 * _LOG_2PI + log_std).sum(-1)  # (N,)
        return logp, entropy

    def evaluate(self, batch_obs: torch.Tensor, batch_acts: torch.Tensor):
        """(values (N,), log_probs (N,), entropy (N,)) of actions taken in (normalised) observations."""
        values = self.value(batch_obs)
        log_probs, entropy = self._log_prob_entropy(self.actor(batch_obs), batch_acts)
        return values, log_probs, entropy

    @torch.no_grad()
    def fused_forward(self):
        """A function ``obs -> (actor head (N, A), values (N,))`` computing both networks in one pass.

        The two MLPs are stacked into one with block-diagonal weights (a snapshot: rebuild it after
        each update), so a rollout step runs 3 matmuls instead of 6. Same values to float rounding
        (tested); the update itself always runs the separate networks.
        """
        pairs = [(a, c) for a, c in zip(self.actor, self.critic) if isinstance(a, nn.Linear)]
        weights = [torch.cat([a.weight, c.weight]) if i == 0 else torch.block_diag(a.weight, c.weight)
                   for i, (a, c) in enumerate(pairs)]
        biases = [torch.cat([a.bias, c.bias]) for a, c in pairs]
        act = torch.tanh if self.spec["activation"] == "tanh" else torch.relu
        width = pairs[-1][0].out_features

        def forward(obs: torch.Tensor):
            x = obs
            for i, (w, b) in enumerate(zip(weights, biases)):
                x = torch.addmm(b, x, w.t())  # (N, 2H) then (N, A + 1)
                if i < len(weights) - 1:
                    x = act(x)
            return x[:, :width], x[:, width]

        return forward

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None, forward=None):
        """(actions, log_probs, values) for normalised observations (N, D); actions unclipped.
        ``forward``: a :meth:`fused_forward` snapshot to use instead of the two networks."""
        head, values = forward(obs) if forward is not None else (self.actor(obs), None)  # (N, A)
        if self.discrete:
            # inverse-CDF draw: one uniform per row; torch.multinomial costs ~2x more at these sizes
            cdf = torch.softmax(head, dim=-1).cumsum(-1)  # (N, A)
            u = torch.rand(head.shape[0], 1, generator=generator, dtype=cdf.dtype)  # (N, 1)
            acts = (cdf < u).sum(-1).clamp_max(head.shape[-1] - 1)  # (N,)
        else:
            noise = torch.randn(head.shape, generator=generator, dtype=head.dtype)
            acts = head + torch.exp(self.log_std) * noise  # (N, A)
        log_probs, _ = self._log_prob_entropy(head, acts)
        return acts, log_probs, values if values is not None else self.value(obs)

    @torch.no_grad()
    def act(self, raw_obs, deterministic: bool = True) -> np.ndarray:
        """Deployment: raw observations (N, D) -> actions for the environment (clipped to its box)."""
        obs = self.normalize(raw_obs)
        if deterministic:
            head = self.actor(obs)
            acts = head.argmax(-1) if self.discrete else head
        else:
            acts = self.sample(obs)[0]
        return self.to_env(acts)

    def to_env(self, acts: torch.Tensor) -> np.ndarray:
        """Actions as the environment takes them: ints, or floats clipped to the action box."""
        if self.discrete:
            return acts.numpy().astype(np.int64)
        out = acts.numpy().astype(np.float32)
        if self.spec["action_low"] is not None:
            out = np.clip(out, self.spec["action_low"], self.spec["action_high"])
        return out

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, folder, state_dict: dict | None = None) -> None:
        """``policy_config.json`` + ``policy.safetensors`` (written to temp names, then renamed).
        ``state_dict``: the weights to write instead of the module's own (the engine's model writer)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in (state_dict or self.state_dict()).items()}
        save_file(state, str(folder / (WEIGHTS_FILE + ".tmp")))
        (folder / (CONFIG_FILE + ".tmp")).write_text(json.dumps(self.spec, indent=2))
        os.replace(folder / (WEIGHTS_FILE + ".tmp"), folder / WEIGHTS_FILE)
        os.replace(folder / (CONFIG_FILE + ".tmp"), folder / CONFIG_FILE)

    @classmethod
    def from_pretrained(cls, folder) -> "ActorCritic":
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; expected a folder written by `rlhfkit control`")
        model = cls(**json.loads((folder / CONFIG_FILE).read_text()))
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        return model.eval()
