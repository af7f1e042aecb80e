"""Control PPO: rlhfkit's ``train_control`` against a compact reference PPO, side by side.

The reference is cleanrl's ``ppo.py`` / ``ppo_continuous_action.py`` algorithm re-implemented
here in its own style (torch.distributions objects per step, preallocated storage, the
gymnasium wrappers for episode statistics and normalisation), with the same hyper-parameters,
environments and seeds as our run. Prints environment steps per second, the mean return of the
last 20 episodes, and the ratio.

    .venv/bin/python benchmarks/control_bench.py --env CartPole-v1 --steps 500000
    .venv/bin/python benchmarks/control_bench.py --env Pendulum-v1 --steps 300000 --preset pendulum
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from rlhfkit.control import ControlConfig, train_control

PRESETS = {  # Pendulum: rl-zoo's PPO settings (gamma 0.9, 10 epochs of 64-row minibatches, lr 1e-3)
    "cartpole": {},
    "pendulum": dict(num_envs=4, num_steps=1024, num_minibatches=64, update_epochs=10, learning_rate=1e-3,
                     gamma=0.9, gae_lambda=0.95, ent_coef=0.0, clip_vloss=False,
                     normalize_observation=False, normalize_reward=False),
}


def _layer(layer, std=np.sqrt(2)):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class RefAgent(nn.Module):
    def __init__(self, obs_dim, act_dim, discrete):
        super().__init__()
        self.discrete = discrete
        self.critic = nn.Sequential(_layer(nn.Linear(obs_dim, 64)), nn.Tanh(), _layer(nn.Linear(64, 64)), nn.Tanh(),
                                    _layer(nn.Linear(64, 1), 1.0))
        self.actor = nn.Sequential(_layer(nn.Linear(obs_dim, 64)), nn.Tanh(), _layer(nn.Linear(64, 64)), nn.Tanh(),
                                   _layer(nn.Linear(64, act_dim), 0.01))
        if not discrete:
            self.logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_action_and_value(self, x, action=None):
        head = self.actor(x)
        if self.discrete:
            dist = Categorical(logits=head)
            action = dist.sample() if action is None else action
            return action, dist.log_prob(action), dist.entropy(), self.critic(x)
        dist = Normal(head, torch.exp(self.logstd.expand_as(head)))
        action = dist.sample() if action is None else action
        return action, dist.log_prob(action).sum(1), dist.entropy().sum(1), self.critic(x)


def reference_ppo(cfg: ControlConfig) -> tuple[list[float], float]:
    """cleanrl's PPO loop; returns (episodic returns, steps per second)."""
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    probe = gym.make(cfg.env_id)
    discrete = isinstance(probe.action_space, gym.spaces.Discrete)
    probe.close()

    def make():
        env = gym.wrappers.RecordEpisodeStatistics(gym.make(cfg.env_id))
        if not discrete:
            env = gym.wrappers.ClipAction(env)
        if cfg.normalize_observation is not False and not discrete:
            env = gym.wrappers.NormalizeObservation(env)
            env = gym.wrappers.TransformObservation(env, lambda o: np.clip(o, -10, 10), env.observation_space)
        if cfg.normalize_reward is not False and not discrete:
            env = gym.wrappers.NormalizeReward(env, gamma=cfg.gamma)
            env = gym.wrappers.TransformReward(env, lambda r: np.clip(r, -10, 10))
        return env

    envs = gym.vector.SyncVectorEnv([make for _ in range(cfg.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    space = envs.single_action_space
    act_dim = int(space.n) if discrete else int(np.prod(space.shape))
    agent = RefAgent(obs_dim, act_dim, discrete)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
    T, N = cfg.num_steps, cfg.num_envs
    obs = torch.zeros((T, N, obs_dim))
    actions = torch.zeros((T, N) + (() if discrete else (act_dim,)))
    logprobs, rewards, dones, values = (torch.zeros((T, N)) for _ in range(4))
    returns_seen: list[float] = []
    next_obs, _ = envs.reset(seed=cfg.seed)
    next_obs, next_done = torch.Tensor(next_obs), torch.zeros(N)
    iterations = max(1, cfg.total_timesteps // cfg.batch_size)
    global_step, start = 0, time.perf_counter()
    mb_size = cfg.batch_size // cfg.num_minibatches
    for it in range(iterations):
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - it / iterations)
        for step in range(T):
            global_step += N
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            values[step], actions[step], logprobs[step] = value.flatten(), action, logprob
            next_obs, reward, term, trunc, infos = envs.step(action.cpu().numpy())
            rewards[step] = torch.tensor(reward).view(-1)
            next_obs, next_done = torch.Tensor(next_obs), torch.Tensor(np.logical_or(term, trunc).astype(np.float32))
            if "final_info" in infos and "episode" in infos["final_info"]:
                ep = infos["final_info"]["episode"]
                returns_seen += [float(r) for r, m in zip(ep["r"], infos["final_info"]["_episode"]) if m]
        with torch.no_grad():
            next_value = agent.critic(next_obs).reshape(1, -1)
            advantages, lastgaelam = torch.zeros_like(rewards), 0
            for t in reversed(range(T)):
                nextnonterminal = 1.0 - (next_done if t == T - 1 else dones[t + 1])
                nextvalues = next_value if t == T - 1 else values[t + 1]
                delta = rewards[t] + cfg.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + cfg.gamma * cfg.gae_lambda * nextnonterminal * lastgaelam
            rets = advantages + values
        b_obs, b_logprobs = obs.reshape(-1, obs_dim), logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + (() if discrete else (act_dim,)))
        b_adv, b_ret, b_val = advantages.reshape(-1), rets.reshape(-1), values.reshape(-1)
        for _ in range(cfg.update_epochs):
            perm = np.random.permutation(cfg.batch_size)
            for s in range(0, cfg.batch_size, mb_size):
                mb = perm[s:s + mb_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
                ratio = (newlogprob - b_logprobs[mb]).exp()
                adv = (b_adv[mb] - b_adv[mb].mean()) / (b_adv[mb].std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                newvalue = newvalue.view(-1)
                v_clipped = b_val[mb] + torch.clamp(newvalue - b_val[mb], -cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * torch.max((newvalue - b_ret[mb]) ** 2, (v_clipped - b_ret[mb]) ** 2).mean() \
                    if cfg.clip_vloss else 0.5 * ((newvalue - b_ret[mb]) ** 2).mean()
                loss = pg_loss - cfg.ent_coef * entropy.mean() + v_loss * cfg.vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()
    envs.close()
    return returns_seen, global_step / (time.perf_counter() - start)


def ours(cfg: ControlConfig) -> tuple[list[float], float]:
    start = time.perf_counter()
    episodes = train_control(cfg)
    steps = max(1, cfg.total_timesteps // cfg.batch_size) * cfg.batch_size
    return [e["episodic_return"] for e in episodes], steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fixed_std", type=float, default=None)
    parser.add_argument("--out", default="benchmarks/results/control")
    args = parser.parse_args()
    preset = PRESETS[args.preset or ("pendulum" if "Pendulum" in args.env else "cartpole")]
    cfg = ControlConfig(env_id=args.env, total_timesteps=args.steps, seed=args.seed, fixed_std=args.fixed_std,
                        output_dir=f"{args.out}/{args.env}-s{args.seed}", progress=False, tensorboard=False, **preset)
    results = {}
    for name, fn in (("rlhfkit", ours), ("reference", reference_ppo)):
        returns, sps = fn(cfg)
        results[name] = dict(sps=round(sps, 1), episodes=len(returns),
                             last20=round(float(np.mean(returns[-20:])), 1) if returns else None)
        print(json.dumps({name: results[name]}), flush=True)
    ratio = results["rlhfkit"]["sps"] / results["reference"]["sps"]
    print(json.dumps({"env": args.env, "steps": args.steps, "seed": args.seed, "fixed_std": args.fixed_std,
                      "speed_ratio": round(ratio, 2), **results}))


if __name__ == "__main__":
    main()
