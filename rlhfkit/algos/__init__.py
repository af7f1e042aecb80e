"""Pure tensor math for RLHF: masked statistics, log-probs, KL, PPO, group-advantage, preference and
distillation losses.

Imports torch only; no config objects, no ``.item()``, no I/O. Each function takes
tensors and plain numbers and returns tensors (a loss plus a dict of detached metrics
where useful). Docstrings give the formula, the shapes and the paper or source.
"""

from rlhfkit.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    GROUP_SCALES,
    IMPORTANCE_SAMPLING_LEVELS,
    KL_PLACEMENTS,
    LOSS_AGGREGATIONS,
    REINFORCE_BASELINES,
    group_advantages,
    group_stats,
    grpo_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    rloo_sequence_loss,
)
from rlhfkit.algos.distill import DISTILL_REDUCTIONS, generalized_jsd_loss, token_divergence
from rlhfkit.algos.dpo import (
    DPO_LOSSES,
    LENGTH_NORMALISED,
    REFERENCE_FREE,
    dpo_sigmoid_loss,
    hinge_loss,
    ipo_loss,
    orpo_log_odds,
    orpo_odds_ratio_loss,
    robust_dpo_loss,
    simpo_loss,
)
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
from rlhfkit.algos.kto import KTO_LOSSES, USES_KL, apo_zero_unpaired_loss, kto_kl, kto_loss
from rlhfkit.algos.logprobs import entropy_from_logits, logprobs_from_logits, sequence_logprobs
from rlhfkit.algos.packing import segment_mean, segment_sum, unpack_tokens
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
    "ADVANTAGE_ESTIMATORS",
    "AdaptiveKLController",
    "DISTILL_REDUCTIONS",
    "DPO_LOSSES",
    "FixedKLController",
    "GROUP_SCALES",
    "IMPORTANCE_SAMPLING_LEVELS",
    "KL_ESTIMATORS",
    "KL_PLACEMENTS",
    "KTO_LOSSES",
    "LENGTH_NORMALISED",
    "LOSS_AGGREGATIONS",
    "REFERENCE_FREE",
    "REINFORCE_BASELINES",
    "RunningMoments",
    "USES_KL",
    "apo_zero_unpaired_loss",
    "bradley_terry_loss",
    "dpo_sigmoid_loss",
    "entropy_bonus",
    "entropy_from_logits",
    "gae",
    "generalized_jsd_loss",
    "group_advantages",
    "group_stats",
    "grpo_loss",
    "hinge_loss",
    "ipo_loss",
    "kl_abs",
    "kl_full",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalized_rewards",
    "kl_penalty",
    "kto_kl",
    "kto_loss",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "orpo_log_odds",
    "orpo_odds_ratio_loss",
    "policy_loss",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "rloo_sequence_loss",
    "robust_dpo_loss",
    "segment_mean",
    "segment_sum",
    "sequence_logprobs",
    "simpo_loss",
    "token_divergence",
    "unpack_tokens",
    "value_loss",
]
