"""Load and wrap Hugging Face models: value head, reference copy, separate critic."""

from .critic import CriticModel
from .fused import FusedTanhGELU, fuse_activations
from .reward_model import RewardModel
from .shared_prompt import shared_prompt_forward, supports_shared_prompt
from .reference import LAYER_PATTERNS, create_reference_model, is_peft_model, reference_context
from .value_head import AutoModelForCausalLMWithValueHead, ValueHead
from .seq2seq import AutoModelForSeq2SeqLMWithValueHead

# The value-head classes PPOTrainer takes (TRL's name for the tuple).
SUPPORTED_ARCHITECTURES = (AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead)

__all__ = ["AutoModelForCausalLMWithValueHead", "AutoModelForSeq2SeqLMWithValueHead", "CriticModel", "FusedTanhGELU",
           "LAYER_PATTERNS", "RewardModel", "SUPPORTED_ARCHITECTURES", "ValueHead", "create_reference_model",
           "fuse_activations", "is_peft_model", "reference_context", "shared_prompt_forward",
           "supports_shared_prompt"]
