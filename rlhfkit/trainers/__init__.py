"""One training loop (``loop``), shared mechanics, and one short file per method."""

from .config import LoopConfig
from .dpo import DPOConfig, DPOTrainer
from .loop import TrainLoop
from .mechanics import Mechanics, atomic_save_dir, build_optimizer, set_seed
from .ppo import PPOTrainer
from .ppo_config import PPOConfig
from .reward import RewardConfig, RewardTrainer
from .sft import SFTConfig, SFTTrainer

__all__ = ["DPOConfig", "DPOTrainer", "LoopConfig", "Mechanics", "PPOConfig", "PPOTrainer", "RewardConfig", "RewardTrainer", "SFTConfig",
           "SFTTrainer", "TrainLoop", "atomic_save_dir", "build_optimizer", "set_seed"]
