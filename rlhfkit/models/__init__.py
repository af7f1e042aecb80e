"""Load and wrap Hugging Face models: value head, reference copy, separate critic."""

from .critic import CriticModel
from .fused import FusedTanhGELU, fuse_activations
from .reward_model import RewardModel
from .shared_prompt import shared_prompt_forward, supports_shared_prompt
from .reference import create_reference_model, is_peft_model, reference_context
from .value_head import AutoModelForCausalLMWithValueHead, ValueHead

__all__ = ["AutoModelForCausalLMWithValueHead", "CriticModel", "FusedTanhGELU", "RewardModel", "ValueHead",
           "create_reference_model", "fuse_activations", "is_peft_model", "reference_context",
           "shared_prompt_forward", "supports_shared_prompt"]
