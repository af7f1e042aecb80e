"""One training mechanics (``loop``) and one short file per method."""

from .loop import Mechanics, atomic_save_dir, build_optimizer, set_seed
from .ppo import PPOTrainer
from .ppo_config import PPOConfig

__all__ = ["Mechanics", "PPOConfig", "PPOTrainer", "atomic_save_dir", "build_optimizer", "set_seed"]
