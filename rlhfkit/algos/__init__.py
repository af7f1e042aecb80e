"""Pure tensor math for RLHF: masked statistics, log-probs, KL, PPO losses.

Imports torch only; no config objects, no ``.item()``, no I/O. Each function takes
tensors and plain numbers and returns tensors (a loss plus a dict of detached metrics
where useful). Docstrings give the formula, the shapes and the paper or source.
"""

from rlhfkit.algos.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_abs,
    kl_full,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalized_rewards,
    kl_penalty,
)
from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits, sequence_logprobs
from rlhfkit.algos.preference import bradley_terry_loss
from rlhfkit.algos.ppo import entropy_bonus, gae, policy_loss, value_loss
from rlhfkit.algos.stats import (
    RunningMoments,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)

__all__ = [
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "RunningMoments",
    "bradley_terry_loss",
    "entropy_bonus",
    "entropy_from_logits",
    "gae",
    "kl_abs",
    "kl_full",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalized_rewards",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "sequence_logprobs",
    "value_loss",
]
