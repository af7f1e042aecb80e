"""Load and wrap Hugging Face models: value head, reference copy, separate critic."""

from .critic import CriticModel
from .reward_model import RewardModel
from .reference import create_reference_model, is_peft_model, reference_context
from .value_head import AutoModelForCausalLMWithValueHead, ValueHead

__all__ = ["AutoModelForCausalLMWithValueHead", "CriticModel", "RewardModel", "ValueHead", "create_reference_model",
           "is_peft_model", "reference_context"]
