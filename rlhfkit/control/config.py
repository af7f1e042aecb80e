"""``ControlConfig``: every field of ``rlhfkit control`` (cleanrl's names and defaults for CartPole).

Continuous-action environments get cleanrl's ``ppo_continuous_action`` recipe when the fields that
depend on the action space are left at None (``normalize_observation``, ``normalize_reward``):
both on for a continuous action space, off for a discrete one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


def f(default, help: str):
    """A dataclass field with its help text (control imports no trainer code, so it has its own)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


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
    torch_threads: int = f(1, "CPU threads for PyTorch (small networks run fastest on one).")
    tensorboard: bool = f(True, "Write TensorBoard logs to output_dir/tensorboard.")
    progress: bool = f(True, "Show a progress bar.")

    def __post_init__(self):
        positive = ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "torch_threads")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("learning_rate", "clip_coef", "max_grad_norm", "clip_obs", "clip_reward"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be tanh or relu, got {self.activation!r}")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(f"num_envs * num_steps = {self.num_envs * self.num_steps} is not divisible by "
                             f"num_minibatches = {self.num_minibatches}")
        if self.fixed_std is not None and self.fixed_std <= 0:
            raise ValueError(f"fixed_std must be > 0 or None, got {self.fixed_std!r}")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {fl.name: fl.metadata["help"] for fl in fields(cls)}
