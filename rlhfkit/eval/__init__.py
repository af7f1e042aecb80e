"""Did it get better? Reward, KL to a reference, win rate, length, reward-model accuracy; reports.

    from rlhfkit.eval import evaluate_policies, reward_model_scorer
    results = evaluate_policies({"sft": sft, "ppo": ppo}, tokenizer, prompts,
                                scorers={"reward": reward_model_scorer("runs/rm")}, reference=sft)

``metrics`` holds the measurements, ``evaluate`` the ``rlhfkit eval`` command, ``report``
the Markdown/HTML pages and plots.
"""

from .evaluate import EvalConfig, evaluate_policies, evaluate_reward_model, run_eval, summary_rows
from .metrics import (
    Samples,
    distribution,
    kl_to_reference,
    length_stats,
    pair_classification,
    pairwise_accuracy,
    response_logprobs,
    reward_model_scorer,
    sample,
    sequence_kl,
    win_rate,
)

__all__ = ["EvalConfig", "Samples", "distribution", "evaluate_policies", "evaluate_reward_model", "kl_to_reference",
           "length_stats", "pair_classification", "pairwise_accuracy", "response_logprobs", "reward_model_scorer",
           "run_eval", "sample", "sequence_kl", "summary_rows", "win_rate"]
