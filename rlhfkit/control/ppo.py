"""PPO for Gymnasium control tasks on the same ``algos`` the language-model trainers use.

One iteration: step ``num_envs`` environments for ``num_steps`` (a rollout), compute GAE over the
(envs, steps) window with bootstrap values and episode ends (``algos.gae``), then
``update_epochs`` passes of shuffled minibatches through ``algos.policy_loss`` (clipped
surrogate), ``algos.value_loss`` (clipped value loss), ``algos.entropy_bonus`` and
``algos.masked_whiten`` (advantage whitening). The mapping to RLHF: an action is a token, an
episode is a response, the environment's reward is the reward model's score.
Hyper-parameters follow cleanrl's ``ppo.py`` / ``ppo_continuous_action.py`` (Huang et al. 2022).

The mechanics are the LLM trainers' engine, ``trainers.mechanics.Mechanics``, used by composition:
backward, gradient clipping and the optimiser step, metric rows (``metrics.jsonl`` and TensorBoard),
the progress bar, checkpoints and exact resume, the final save and the learning curve. The model
stays a plain module on the CPU (no ``prepare``: tiny MLPs stepped beside NumPy environments).
A checkpoint is taken at the end of an iteration and holds everything the next one starts from:
weights (with the observation normaliser), Adam, the sampling/shuffle generator, every environment
object (pickled: its physics state, its RNG, its time-limit counter, so an episode in progress
continues), the current observations, the running episode returns and lengths, the reward
scaler, and the global RNGs.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file

from .. import algos
from ..trainers.mechanics import Mechanics
from .agent import CONFIG_FILE, WEIGHTS_FILE, ActorCritic
from .config import ControlConfig

TRAINER = "control"  # the checkpoint's section and trainer name


def make_envs(cfg: ControlConfig, restored: list | None = None) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of ``env_id`` (or the ``restored`` environment objects of a checkpoint); a
    finished episode resets in the same step (its last observation is in ``info["final_obs"]``), so
    every stored transition is a real one. In this mode the vector env keeps no state of its own
    between steps: its environments are the whole state."""
    if restored is None:
        check_env_id(cfg.env_id)
        fns = [lambda: gym.make(cfg.env_id) for _ in range(cfg.num_envs)]
    else:
        fns = [lambda env=env: env for env in restored]
    envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
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

    def state_dict(self) -> dict:
        return {"returns": self.returns.copy(), "moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.returns = np.array(state["returns"], dtype=np.float64)
        self.moments.load_state_dict(state["moments"])

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


def update(cfg, agent, optimizer, mechanics: Mechanics, params, roll, last_values, gen) -> dict:
    """GAE over the window, then ``update_epochs`` x ``num_minibatches`` clipped PPO steps (backward,
    clipping to ``max_grad_norm`` and the optimiser step by ``mechanics``)."""
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
            mechanics.backward(loss)
            mechanics.optimizer_step(optimizer, params)  # clip, step, zero the gradients
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
    """Train, write ``metrics.jsonl`` / TensorBoard / ``learning_curve.png`` / ``policy/`` (and
    ``checkpoint-<global_step>/`` every ``save_steps``); return this call's per-episode rows
    (``global_step``, ``episodic_return``, ``episodic_length``). ``resume_from_checkpoint`` continues
    a run from a checkpoint exactly."""
    return ControlRun(cfg).train()


def _tracker_name(key: str) -> str | None:
    """A metric's TensorBoard tag: grouped as cleanrl does (``loss/*`` as they are, the rest under
    ``charts/``); the iteration counter is not drawn."""
    if key == "iteration":
        return None
    return key if "/" in key else f"charts/{key}"


class ControlRun:
    """One run of control PPO: environments, actor-critic, Adam and the engine; see the module docstring."""

    def __init__(self, cfg: ControlConfig):
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.cfg, self.output_dir = cfg, Path(cfg.output_dir)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # action sampling and minibatch shuffles
        self.envs = make_envs(cfg)
        if cfg.save_steps:
            self._check_picklable()
        self.agent = build_agent(cfg, self.envs)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.params = Mechanics.trainable_params(self.agent, self.optimizer)
        norm_reward = cfg.normalize_reward if cfg.normalize_reward is not None else not self.agent.discrete
        self.scaler = RewardScaler(cfg.num_envs, cfg.gamma, cfg.clip_reward) if norm_reward else None
        # Accelerate's TensorBoard tracker writes to logging_dir/<project name>: output_dir/tensorboard
        self.mechanics = Mechanics(max_grad_norm=cfg.max_grad_norm, log_with="tensorboard" if cfg.tensorboard else None,
                                   logging_dir=str(self.output_dir), tracker_project_name="tensorboard",
                                   tracker_config=cfg.to_dict(), step_key="global_step", tracker_name=_tracker_name)
        obs, _ = self.envs.reset(seed=cfg.seed)
        self.state = {"obs": obs, "global_step": 0, "ep_return": np.zeros(cfg.num_envs),
                      "ep_length": np.zeros(cfg.num_envs, int)}
        self.iterations = max(1, cfg.total_timesteps // cfg.batch_size)
        self.iteration = 0
        self.episodes: list[dict] = []  # this call's episode rows
        self.updates: list[dict] = []   # this call's update rows

    def train(self) -> list[dict]:
        cfg, mech = self.cfg, self.mechanics
        try:
            mech.start(self.output_dir, cfg.resume_from_checkpoint, self.load_checkpoint,
                       lambda: self.state["global_step"])
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            self._loop()
        except BaseException:
            mech.end()
            raise
        finally:
            self.envs.close()
        mech.save_model(self.output_dir / "policy", mech.model_writer(self.agent))
        mech.finish(self.output_dir, title=cfg.env_id)  # episodic return from metrics.jsonl, with its 20-episode mean
        return self.episodes

    def _loop(self) -> None:
        cfg, state = self.cfg, self.state
        bar = self.mechanics.progress(self.iterations * cfg.batch_size, self.iteration * cfg.batch_size,
                                      f"ppo {cfg.env_id}", disable=not cfg.progress, unit="step")
        start, start_step = time.perf_counter(), state["global_step"]
        try:
            while self.iteration < self.iterations:
                if cfg.anneal_lr:
                    self.optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - self.iteration / self.iterations)
                finished: list[tuple[int, dict]] = []  # (global_step, row) of the episodes that end in this rollout
                roll, last_values = collect(cfg, self.envs, self.agent, state, self.scaler, self.gen,
                                            lambda step, ret, length: finished.append(
                                                (step, {"episodic_return": ret, "episodic_length": length})))
                self.mechanics.record_rows(finished, self.episodes)
                stats = update(cfg, self.agent, self.optimizer, self.mechanics, self.params, roll, last_values,
                               self.gen)
                self.iteration += 1
                stats.update(iteration=self.iteration, learning_rate=self.optimizer.param_groups[0]["lr"],
                             sps=(state["global_step"] - start_step) / (time.perf_counter() - start))
                self.mechanics.record(stats, state["global_step"], self.updates, console=False)
                bar.update(cfg.batch_size)
                recent = [e["episodic_return"] for e in self.episodes[-20:]]
                if recent:
                    bar.set_postfix(ret=f"{np.mean(recent):.1f}", sps=f"{stats['sps']:.0f}")
                step = state["global_step"]
                if cfg.save_steps and (step - cfg.batch_size) // cfg.save_steps != step // cfg.save_steps:
                    self.save_checkpoint()
        finally:
            bar.close()

    # ------------------------------------------------------------------ checkpoints
    def _check_picklable(self) -> None:
        """A checkpoint holds the environment objects themselves; refuse at the start, not at the first save."""
        try:
            pickle.dumps(self.envs.envs)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise ValueError(f"save_steps={self.cfg.save_steps}: the {self.cfg.env_id} environments cannot be "
                             f"pickled into a checkpoint ({err}); set save_steps=0 to train without "
                             f"checkpoints") from None

    def save_checkpoint(self) -> Path:
        """``output_dir/checkpoint-<global_step>`` at the end of an iteration (the policy files, loadable with
        ``ActorCritic.from_pretrained``, plus ``trainer_state.pt``/``.json``), written atomically."""
        cfg, step = self.cfg, self.state["global_step"]
        method = {"iteration": self.iteration, "global_step": step, "obs": self.state["obs"].copy(),
                  "ep_return": self.state["ep_return"].copy(), "ep_length": self.state["ep_length"].copy(),
                  "envs": pickle.dumps(self.envs.envs), "generator": self.gen.get_state(),
                  "reward_scaler": self.scaler.state_dict() if self.scaler is not None else None,
                  "env_id": cfg.env_id, "num_envs": cfg.num_envs, "gymnasium": gym.__version__}
        summary = {"trainer": TRAINER, "global_step": step, "iteration": self.iteration, "config": cfg.to_dict()}
        return self.mechanics.save_checkpoint(
            self.output_dir, step, section=TRAINER, method_state=method, optimizer=self.optimizer, scheduler=None,
            writer=self.mechanics.model_writer(self.agent), summary=summary, limit=cfg.save_total_limit)

    def load_checkpoint(self, path: Path) -> None:
        """Restore what ``save_checkpoint`` wrote into this freshly built run (same config)."""
        path, cfg = Path(path), self.cfg
        state = self.mechanics.read_checkpoint(path, TRAINER, TRAINER)
        saved = state[TRAINER]
        for name in ("env_id", "num_envs"):
            if saved[name] != getattr(cfg, name):
                raise ValueError(f"{path} was trained with {name}={saved[name]!r}, this run has "
                                 f"{name}={getattr(cfg, name)!r}; resume with the same {name} (or start a new "
                                 f"output_dir)")
        if (saved["reward_scaler"] is None) != (self.scaler is None):
            raise ValueError(f"{path} was trained with reward normalisation {'off' if saved['reward_scaler'] is None else 'on'}, "
                             f"this run has it {'on' if self.scaler is not None else 'off'}; resume with the same "
                             f"normalize_reward")

        def load_weights(folder: Path) -> None:
            spec = json.loads((folder / CONFIG_FILE).read_text())
            differ = sorted(k for k in spec if spec[k] != self.agent.spec.get(k))
            if differ:
                raise ValueError(f"{folder / CONFIG_FILE}: the policy differs from this run's in {', '.join(differ)}; "
                                 f"resume with the config that wrote the checkpoint")
            self.agent.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))

        def restore_method(state: dict) -> None:
            self.envs.close()
            self.envs = make_envs(cfg, pickle.loads(saved["envs"]))
            self.iteration = saved["iteration"]
            self.state.update(global_step=saved["global_step"], obs=saved["obs"].copy(),
                              ep_return=saved["ep_return"].copy(), ep_length=saved["ep_length"].copy())
            self.gen.set_state(saved["generator"])
            if self.scaler is not None:
                self.scaler.load_state_dict(saved["reward_scaler"])

        self.mechanics.restore(path, state, load_weights=load_weights, optimizer=self.optimizer, scheduler=None,
                               restore_method=restore_method, step=lambda: self.state["global_step"])


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
