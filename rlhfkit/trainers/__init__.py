"""The engine (``mechanics``), the training loop on it (``loop``), and one recipe file per method."""

from .config import LoopConfig
from .distill import DistillationConfig, DistillationTrainer
from .dpo import DPOConfig, DPOTrainer
from .grpo import GRPOConfig, GRPOTrainer
from .kto import KTOConfig, KTOTrainer
from .loop import TrainLoop
from .mechanics import Mechanics, atomic_save_dir, build_optimizer, set_seed
from .ppo import PPOTrainer
from .ppo_config import PPOConfig
from .reward import RewardConfig, RewardTrainer
from ..rollout.rewards import RewardFunc, load_reward_funcs
from .rloo import RLOOConfig, RLOOTrainer
from .sft import SFTConfig, SFTTrainer

__all__ = ["DPOConfig", "DPOTrainer", "DistillationConfig", "DistillationTrainer", "GRPOConfig", "GRPOTrainer",
           "KTOConfig", "KTOTrainer", "LoopConfig", "Mechanics",
           "PPOConfig", "PPOTrainer", "RLOOConfig", "RLOOTrainer", "RewardConfig", "RewardFunc", "RewardTrainer",
           "SFTConfig", "SFTTrainer", "TrainLoop", "atomic_save_dir", "build_optimizer", "load_reward_funcs",
           "set_seed"]
