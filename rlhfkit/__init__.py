"""rlhfkit: RLHF for Hugging Face Transformers models.

The classic PPO API lives at the top level, so ``from rlhfkit import PPOTrainer`` works
where old scripts said ``from trl import PPOTrainer``; ``rlhfkit.core`` is ``trl.core``.
"""

__version__ = "0.1.0"

from .models import (AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead, CriticModel, RewardModel,
                     create_reference_model)
from .trainers import (DistillationConfig, DistillationTrainer, DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer,
                       KTOConfig, KTOTrainer, PPOConfig, PPOTrainer,
                       RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer, SFTConfig, SFTTrainer, set_seed)

__all__ = ["AutoModelForCausalLMWithValueHead", "AutoModelForSeq2SeqLMWithValueHead", "CriticModel", "DPOConfig",
           "DPOTrainer", "DistillationConfig", "DistillationTrainer", "GRPOConfig", "GRPOTrainer", "KTOConfig",
           "KTOTrainer", "PPOConfig", "PPOTrainer",
           "RLOOConfig", "RLOOTrainer", "RewardConfig", "RewardModel", "RewardTrainer", "SFTConfig", "SFTTrainer",
           "__version__", "create_reference_model", "set_seed"]
