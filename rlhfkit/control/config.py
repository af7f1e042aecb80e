"""``ControlConfig``: every field of ``rlhfkit control`` (cleanrl's names and defaults for CartPole).

Continuous-action environments get cleanrl's ``ppo_continuous_action`` recipe when the fields that
depend on the action space are left at None (``normalize_observation``, ``normalize_reward``):
both on for a continuous action space, off for a discrete one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..trainers.config import Checks, check_field_types, f


@dataclass
class ControlConfig:
    env_id: str = f("CartPole-v1", "Gymnasium environment id (discrete or box actions), e.g. CartPole-v1, Pendulum-v1.")
    total_timesteps: int = f(500_000, "Environment steps to train for, summed over all environments.")
    seed: int = f(1, "Seed for the networks, the action sampling and the environments (env i gets seed + i).")
    output_dir: str = f("runs/control", "Folder for metrics.jsonl, TensorBoard logs, the learning-curve plot and policy/.")
    num_envs: int = f(4, "Environments stepped in parallel (gymnasium SyncVectorEnv).")
    num_steps: int = f(128, "Steps per environment per rollout; a rollout is num_envs * num_steps transitions.")
    learning_rate: float = f(2.5e-4, "Adam learning rate (actor and critic share one optimiser, as in cleanrl).")
    anneal_lr: bool = f(True, "Decay the learning rate linearly to 0 over the run.")
    gamma: float = f(0.99, "Discount factor.")
    gae_lambda: float = f(0.95, "GAE lambda.")
    num_minibatches: int = f(4, "Minibatches per epoch over a rollout.")
    update_epochs: int = f(4, "Passes over each rollout.")
    norm_adv: bool = f(True, "Whiten advantages per minibatch.")
    clip_coef: float = f(0.2, "PPO ratio clip range epsilon.")
    clip_vloss: bool = f(True, "Clip the value update around the rollout's values (same epsilon).")
    vf_coef: float = f(0.5, "Weight of the value loss.")
    ent_coef: float = f(0.01, "Weight of the entropy bonus.")
    max_grad_norm: float = f(0.5, "Clip the global gradient norm to this.")
    target_kl: float | None = f(None, "Stop the epochs of a rollout early when approx KL exceeds this (None: never).")
    hidden_sizes: list = f([64, 64], "Hidden layer widths of the actor and of the critic (separate networks).")
    activation: str = f("tanh", "Hidden activation: tanh or relu.")
    fixed_std: float | None = f(None, "Continuous actions: a fixed standard deviation (covariance diag(std^2)); "
                                      "None learns a state-independent log-std.")
    log_std_init: float = f(0.0, "Initial learned log-std (continuous actions).")
    normalize_observation: bool | None = f(None, "Running mean/std observation normalisation, saved with the policy "
                                                 "(None: on for continuous actions).")
    normalize_reward: bool | None = f(None, "Scale rewards by the running std of the discounted return "
                                            "(None: on for continuous actions).")
    clip_obs: float = f(10.0, "Clip normalised observations to [-clip_obs, clip_obs].")
    clip_reward: float = f(10.0, "Clip scaled rewards to [-clip_reward, clip_reward].")
    bootstrap_truncated: bool = f(True, "At a time-limit truncation, add gamma * V(final observation) to the "
                                        "reward instead of treating the end as terminal.")
    save_steps: int = f(0, "Write a checkpoint every this many environment steps, at the end of the first "
                           "iteration at or after each multiple, named checkpoint-<global_step> (0: only the final "
                           "policy/).")
    save_total_limit: int | None = f(None, "Keep at most this many checkpoints (oldest deleted first).")
    resume_from_checkpoint: str | None = f(None, "A checkpoint-<global_step> folder to resume from, or 'latest' for "
                                                 "the newest in output_dir; the run continues exactly as if never "
                                                 "stopped (same config).")
    torch_threads: int = f(1, "CPU threads for PyTorch (small networks run fastest on one).")
    tensorboard: bool = f(True, "Write TensorBoard logs to output_dir/tensorboard.")
    progress: bool = f(True, "Show a progress bar.")

    def __post_init__(self):
        check_field_types(self)  # "ten" where a number belongs -> ConfigError naming the field
        c = Checks(self)
        c.at_least(1, "total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "torch_threads",
                   "save_total_limit")
        c.at_least(0, "save_steps")
        c.positive("learning_rate", "clip_coef", "max_grad_norm", "clip_obs", "clip_reward", "fixed_std", "target_kl")
        c.within("gamma", 0, 1)
        c.within("gae_lambda", 0, 1)
        c.choice("activation", ("tanh", "relu"))
        c.non_empty("env_id", "output_dir", "resume_from_checkpoint")
        if not self.hidden_sizes or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0
                                            for h in self.hidden_sizes):
            c.fail("hidden_sizes", f"must be a non-empty list of positive integers, got {self.hidden_sizes!r}")
        if self.batch_size % self.num_minibatches:
            c.fail("num_minibatches", f"num_envs * num_steps = {self.batch_size} is not divisible by "
                                      f"num_minibatches = {self.num_minibatches}")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {fl.name: fl.metadata["help"] for fl in fields(cls)}
