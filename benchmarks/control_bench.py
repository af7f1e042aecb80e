"""Control PPO: rlhfkit's ``train_control`` against a compact reference PPO, side by side.

The reference is cleanrl's ``ppo.py`` / ``ppo_continuous_action.py`` algorithm re-implemented
here in its own style (torch.distributions objects per step, preallocated storage, the
gymnasium wrappers for episode statistics and normalisation), with the same hyper-parameters,
environments and seeds as our run. Prints environment steps per second, the mean return of the
last 20 episodes, and the ratio; with several seeds, the mean and spread of both over the seeds.

Like for like: the reference does what ``ControlConfig`` asks of rlhfkit where cleanrl has no
equivalent: it bootstraps time-limit truncations (reward += gamma * V(final observation) when
``bootstrap_truncated``, rlhfkit's default; cleanrl treats a truncation as an episode end), and
its minibatch shuffle and action sampling are seeded from ``--seed`` (cleanrl's shuffle uses
NumPy's global, unseeded generator). ``--no-bootstrap`` turns the bootstrap off on both sides.

    .venv/bin/python benchmarks/control_bench.py --env CartPole-v1 --steps 500000 --seeds 1 2 3
    .venv/bin/python benchmarks/control_bench.py --env Pendulum-v1 --steps 300000 --seeds 1 2 3
    .venv/bin/python benchmarks/control_bench.py --summarise benchmarks/results/control/*.json
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time
from pathlib import Path

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

    shuffle = np.random.default_rng(cfg.seed)
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
            cut = trunc & ~term  # a time limit, not a real end: bootstrap as rlhfkit does
            if cfg.bootstrap_truncated and cut.any():
                final = np.array(next_obs, dtype=np.float32)
                for i in np.flatnonzero(infos.get("_final_obs", np.zeros(N, bool))):
                    final[i] = infos["final_obs"][i]
                with torch.no_grad():
                    v_final = agent.critic(torch.as_tensor(final)).view(-1)  # (N,)
                rewards[step] += cfg.gamma * v_final * torch.as_tensor(cut, dtype=torch.float32)
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
            perm = shuffle.permutation(cfg.batch_size)
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


def run_seed(args, preset: dict, seed: int) -> dict:
    cfg = ControlConfig(env_id=args.env, total_timesteps=args.steps, seed=seed, fixed_std=args.fixed_std,
                        bootstrap_truncated=not args.no_bootstrap,
                        output_dir=f"{args.out}/{args.env}-s{seed}", progress=False, tensorboard=False, **preset)
    result = {"env": args.env, "steps": args.steps, "seed": seed, "fixed_std": args.fixed_std,
              "bootstrap_truncated": cfg.bootstrap_truncated}
    for name, fn in (("rlhfkit", ours), ("reference", reference_ppo)):
        if name not in args.impls:
            continue
        returns, sps = fn(cfg)
        result[name] = dict(sps=round(sps, 1), episodes=len(returns),
                            last20=round(float(np.mean(returns[-20:])), 1) if returns else None)
        print(json.dumps({name: result[name], "seed": seed}), flush=True)
    if "rlhfkit" in result and "reference" in result:
        result["speed_ratio"] = round(result["rlhfkit"]["sps"] / result["reference"]["sps"], 2)
    return result


def summarise(results: list[dict]) -> str:
    """One row per (env, steps, implementation): last-20 return and SPS, mean +- std (min..max) over seeds."""
    def spread(xs):
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.1f} +- {sd:.1f} ({min(xs):.1f}..{max(xs):.1f})"

    groups: dict = {}
    for r in results:
        for impl in ("rlhfkit", "reference"):
            if impl in r:
                groups.setdefault((r["env"], r["steps"], r.get("bootstrap_truncated", True), impl), []).append(r)
    lines = ["| env | steps | bootstrap truncations | implementation | seeds | last-20 return | SPS |",
             "|" + " --- |" * 7]
    for (env, steps, boot, impl), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        lines.append(f"| {env} | {steps} | {boot} | {impl} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{spread([r[impl]['last20'] for r in rs])} | {spread([r[impl]['sps'] for r in rs])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--impls", nargs="+", choices=["rlhfkit", "reference"], default=["rlhfkit", "reference"])
    parser.add_argument("--fixed_std", type=float, default=None)
    parser.add_argument("--no-bootstrap", action="store_true", help="treat truncations as episode ends on both sides")
    parser.add_argument("--out", default="benchmarks/results/control")
    parser.add_argument("--tag", default="", help="suffix of the result files (one per seed)")
    parser.add_argument("--summarise", nargs="+", help="result JSON files (globs allowed) to summarise")
    args = parser.parse_args()
    if args.summarise:
        paths = [p for pattern in args.summarise for p in sorted(glob.glob(pattern))]
        print(summarise([json.loads(Path(p).read_text()) for p in paths]))
        return
    preset = PRESETS[args.preset or ("pendulum" if "Pendulum" in args.env else "cartpole")]
    results = []
    for seed in args.seeds:
        result = run_seed(args, preset, seed)
        results.append(result)
        path = Path(args.out) / f"{args.env}-{args.steps}-s{seed}-{'+'.join(args.impls)}{args.tag}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        print(json.dumps(result), flush=True)
    print(summarise(results))


if __name__ == "__main__":
    main()
