"""PPO for Gymnasium control tasks (CartPole, Pendulum, ...) on the LLM trainers' ``algos``."""

from .agent import ActorCritic, ObsNormalizer
from .config import ControlConfig
from .ppo import evaluate_policy, train_control

__all__ = ["ActorCritic", "ControlConfig", "ObsNormalizer", "evaluate_policy", "train_control"]
