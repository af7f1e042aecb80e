"""PPO for Gymnasium control tasks on the same ``algos`` the language-model trainers use.

One iteration: step ``num_envs`` environments for ``num_steps`` (a rollout), compute GAE over the
(envs, steps) window with bootstrap values and episode ends (``algos.gae``), then
``update_epochs`` passes of shuffled minibatches through ``algos.policy_loss`` (clipped
surrogate), ``algos.value_loss`` (clipped value loss), ``algos.entropy_bonus`` and
``algos.masked_whiten`` (advantage whitening). The mapping to RLHF: an action is a token, an
episode is a response, the environment's reward is the reward model's score.
Hyper-parameters follow cleanrl's ``ppo.py`` / ``ppo_continuous_action.py`` (Huang et al. 2022).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import algos, plot
from .agent import ActorCritic
from .config import ControlConfig


def make_envs(cfg: ControlConfig) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of ``env_id``; a finished episode resets in the same step (its last
    observation is in ``info["final_obs"]``), so every stored transition is a real one."""
    check_env_id(cfg.env_id)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(cfg.env_id) for _ in range(cfg.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    space = envs.single_action_space
    if not isinstance(space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ValueError(f"{cfg.env_id}: action space {space} is neither Discrete nor Box")
    return envs


def check_env_id(env_id: str) -> None:
    """Raise ValueError unless ``env_id`` is a Gymnasium environment this machine can build."""
    try:
        gym.make(env_id).close()
    except gym.error.Error as err:  # unknown id, missing namespace, extra not installed
        raise ValueError(f"{env_id!r} is not a Gymnasium environment this installation can make ({err}); "
                         "try CartPole-v1 or Pendulum-v1") from None


def build_agent(cfg: ControlConfig, envs) -> ActorCritic:
    space = envs.single_action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    norm_obs = cfg.normalize_observation if cfg.normalize_observation is not None else not discrete
    return ActorCritic(obs_dim, int(space.n) if discrete else int(np.prod(space.shape)), discrete,
                       cfg.hidden_sizes, cfg.activation, cfg.fixed_std, cfg.log_std_init, norm_obs, cfg.clip_obs,
                       None if discrete else space.low, None if discrete else space.high)


class RewardScaler:
    """Divide rewards by the running std of each env's discounted return (gymnasium's
    ``NormalizeReward``), then clip; the raw rewards still go to the episode statistics."""

    def __init__(self, num_envs: int, gamma: float, clip: float):
        self.returns = np.zeros(num_envs)
        self.moments = algos.RunningMoments()
        self.gamma, self.clip = gamma, clip

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        self.moments.update(torch.as_tensor(self.returns, dtype=torch.float64))
        self.returns[dones] = 0.0
        std = float(self.moments.std) if float(self.moments.count) > 1 else 1.0
        return np.clip(rewards / (std + 1e-8), -self.clip, self.clip)


def collect(cfg, envs, agent, state, scaler, gen, log_episode):
    """One rollout of ``num_steps``: (obs, acts, logprobs, values, rewards, dones) as (T, N, ...)
    tensors, and the bootstrap value V(s_T) (N,)."""
    T, N = cfg.num_steps, cfg.num_envs
    buf = {k: [] for k in ("obs", "acts", "logprobs", "values", "rewards", "dones")}
    obs = state["obs"]
    forward = agent.fused_forward()  # weights are fixed during a rollout
    for _ in range(T):
        if agent.obs_norm is not None:
            agent.obs_norm.update(obs)
        x = agent.normalize(obs)  # (N, D)
        acts, logp, values = agent.sample(x, gen, forward)
        next_obs, reward, term, trunc, info = envs.step(agent.to_env(acts))
        state["ep_return"] += reward
        state["ep_length"] += 1
        state["global_step"] += N
        done = term | trunc
        train_reward = scaler(reward, done) if scaler is not None else reward.astype(np.float64)
        if cfg.bootstrap_truncated and (trunc & ~term).any():
            final = next_obs.copy()
            for i in np.flatnonzero(info.get("_final_obs", np.zeros(N, bool))):
                final[i] = info["final_obs"][i]
            v_final = forward(agent.normalize(final.astype(np.float32)))[1].numpy()  # (N,)
            train_reward = train_reward + cfg.gamma * v_final * (trunc & ~term)
        for i in np.flatnonzero(done):
            log_episode(state["global_step"], float(state["ep_return"][i]), int(state["ep_length"][i]))
            state["ep_return"][i], state["ep_length"][i] = 0.0, 0
        for key, value in (("obs", x), ("acts", acts), ("logprobs", logp), ("values", values),
                           ("rewards", torch.as_tensor(train_reward, dtype=torch.float32)),
                           ("dones", torch.as_tensor(done, dtype=torch.float32))):
            buf[key].append(value)
        obs = next_obs
    state["obs"] = obs
    last_values = forward(agent.normalize(obs))[1]  # (N,)
    return {k: torch.stack(v) for k, v in buf.items()}, last_values


def update(cfg, agent, optimizer, roll, last_values, gen) -> dict:
    """GAE over the window, then ``update_epochs`` x ``num_minibatches`` clipped PPO steps."""
    ones = torch.ones_like(roll["rewards"].T)  # (N, T)
    advantages, returns = algos.gae(roll["rewards"].T, roll["values"].T, ones, cfg.gamma, cfg.gae_lambda,
                                    last_values=last_values, dones=roll["dones"].T)  # (N, T) each
    flat = {k: v.transpose(0, 1).reshape(cfg.batch_size, *v.shape[2:]) for k, v in roll.items()}  # (N*T, ...)
    flat["advantages"], flat["returns"] = advantages.reshape(-1), returns.reshape(-1)
    mb_size = cfg.batch_size // cfg.num_minibatches
    sums, count, stopped = {}, 0, False
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(cfg.batch_size, generator=gen)
        for start in range(0, cfg.batch_size, mb_size):
            mb = {k: v[perm[start:start + mb_size]] for k, v in flat.items()}
            values, logp, entropy = agent.evaluate(mb["obs"], mb["acts"])  # (M,) each
            adv, m = mb["advantages"][None], torch.ones(1, mb_size)  # (1, M): the (B, T) layout
            if cfg.norm_adv:
                adv = algos.masked_whiten(adv, m)
            pg_loss, pg = algos.policy_loss(logp[None], mb["logprobs"][None], adv, m, cfg.clip_coef)
            v_loss, vm = algos.value_loss(values[None], mb["values"][None], mb["returns"][None], m,
                                          cfg.clip_coef if cfg.clip_vloss else float("inf"))
            ent_loss = algos.entropy_bonus(entropy[None], m, cfg.ent_coef)
            loss = pg_loss + cfg.vf_coef * v_loss + ent_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for key, value in (("loss/policy", pg_loss), ("loss/value", v_loss), ("loss/entropy", entropy.mean()),
                               ("approx_kl", pg["approxkl"]), ("clipfrac", pg["clipfrac"])):
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            count += 1
            if cfg.target_kl is not None and float(pg["approxkl"]) > cfg.target_kl:
                stopped = True
                break
        if stopped:
            break
    stats = {k: v / count for k, v in sums.items()}
    var_y = float(flat["returns"].var())
    stats["explained_variance"] = float("nan") if var_y == 0 else \
        1 - float((flat["returns"] - flat["values"]).var()) / var_y
    return stats


def train_control(cfg: ControlConfig) -> list[dict]:
    """Train, write ``metrics.jsonl`` / TensorBoard / ``learning_curve.png`` / ``policy/``; return the
    per-episode rows (``global_step``, ``episodic_return``, ``episodic_length``)."""
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    envs = make_envs(cfg)
    agent = build_agent(cfg, envs)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
    norm_reward = cfg.normalize_reward if cfg.normalize_reward is not None else not agent.discrete
    scaler = RewardScaler(cfg.num_envs, cfg.gamma, cfg.clip_reward) if norm_reward else None
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    writer = _tensorboard(out) if cfg.tensorboard else None
    episodes: list[dict] = []
    metrics = (out / "metrics.jsonl").open("w")

    def log_episode(step: int, ret: float, length: int) -> None:
        row = {"global_step": step, "episodic_return": ret, "episodic_length": length}
        episodes.append(row)
        metrics.write(json.dumps(row) + "\n")
        if writer is not None:
            writer.add_scalar("charts/episodic_return", ret, step)
            writer.add_scalar("charts/episodic_length", length, step)

    obs, _ = envs.reset(seed=cfg.seed)
    state = {"obs": obs, "global_step": 0, "ep_return": np.zeros(cfg.num_envs), "ep_length": np.zeros(cfg.num_envs, int)}
    iterations = max(1, cfg.total_timesteps // cfg.batch_size)
    bar = tqdm(total=iterations * cfg.batch_size, desc=f"ppo {cfg.env_id}", disable=not cfg.progress,
               dynamic_ncols=True, unit="step")
    start = time.perf_counter()
    try:
        for it in range(iterations):
            if cfg.anneal_lr:
                optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - it / iterations)
            roll, last_values = collect(cfg, envs, agent, state, scaler, gen, log_episode)
            stats = update(cfg, agent, optimizer, roll, last_values, gen)
            stats.update(global_step=state["global_step"], iteration=it + 1,
                         learning_rate=optimizer.param_groups[0]["lr"],
                         sps=state["global_step"] / (time.perf_counter() - start))
            metrics.write(json.dumps(stats) + "\n")
            metrics.flush()
            if writer is not None:
                for key, value in stats.items():
                    if key not in ("global_step", "iteration"):
                        writer.add_scalar(key if "/" in key else f"charts/{key}", value, state["global_step"])
            bar.update(cfg.batch_size)
            recent = [e["episodic_return"] for e in episodes[-20:]]
            if recent:
                bar.set_postfix(ret=f"{np.mean(recent):.1f}", sps=f"{stats['sps']:.0f}")
    finally:
        bar.close()
        metrics.close()
        envs.close()
        if writer is not None:
            writer.close()
    agent.save_pretrained(out / "policy")
    plot.learning_curve(out, title=cfg.env_id)  # episodic return from metrics.jsonl, with its 20-episode mean
    return episodes


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


def evaluate_policy(policy: ActorCritic, env_id: str, episodes: int = 10, seed: int = 1000) -> list[float]:
    """Returns of ``episodes`` deterministic episodes of a saved policy (no learning)."""
    env = gym.make(env_id)
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            obs, reward, term, trunc, _ = env.step(policy.act(obs[None])[0])
            total += float(reward)
            done = term or trunc
        returns.append(total)
    env.close()
    return returns
