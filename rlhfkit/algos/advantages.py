"""Critic-free advantages (GRPO, Dr. GRPO, RLOO, REINFORCE++) and the GRPO/DAPO/GSPO policy loss.

These methods sample G completions per prompt and use the other completions of the same
prompt (or the whole batch) as the baseline instead of a learned value function. Rows are
grouped consecutively: rows ``[k*G, (k+1)*G)`` are the G completions of prompt k (TRL's
``RepeatSampler`` order). Sequence rewards are (N,) with N = num_prompts * G; token tensors
are (B, T) over the response grid with ``mask`` = 1 on real response tokens.

Sources checked line by line: TRL 1.x ``trl/trainer/grpo_trainer.py``
(``_generate_and_score_completions`` for the advantages, ``_compute_loss`` for the loss and
its clip metrics), TRL 1.x ``rloo_trainer.py``, and OpenRLHF
``openrlhf/trainer/ppo_utils/experience_maker.py`` (``compute_advantages_and_returns``) for
REINFORCE++. Where this code differs from them, the docstring says so.
"""

from __future__ import annotations

import math

import torch

from rlhfkit.algos.kl import kl_k3, kl_penalized_rewards
from rlhfkit.algos.ppo import gae
from rlhfkit.algos.stats import masked_whiten

GROUP_SCALES = ("group", "batch", "none")


def _grouped(rewards: torch.Tensor, group_size: int, name: str = "rewards") -> torch.Tensor:
    """(N,) -> (N // G, G), with a clear error when N is not a multiple of G."""
    if rewards.dim() != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.numel() % group_size:
        raise ValueError(f"{name} has {rewards.numel()} rows, not a multiple of group_size={group_size} "
                         "(rows [k*G, (k+1)*G) must be the G completions of prompt k)")
    return rewards.view(-1, group_size)


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Unbiased std ignoring NaN (TRL 1.16 ``nanstd``): NaN where fewer than 2 values are not NaN."""
    valid = ~torch.isnan(x)
    if dim is None:
        mean, count = torch.nanmean(x), valid.sum().to(x.dtype)
        var = torch.nanmean((x - mean) ** 2)
    else:
        mean, count = torch.nanmean(x, dim=dim, keepdim=True), valid.sum(dim).to(x.dtype)
        var = torch.nanmean((x - mean) ** 2, dim=dim)
    bessel = torch.where(count > 1, count / (count - 1), torch.full_like(count, float("nan")))
    return (var * bessel).sqrt()


def _group_std(grouped: torch.Tensor) -> torch.Tensor:
    """Unbiased std of each group (K, G) -> (K,), NaN ignored; 0 for groups of one (TRL's eval-time rule)."""
    if grouped.shape[1] < 2:
        return torch.zeros(grouped.shape[0], dtype=grouped.dtype, device=grouped.device)
    return _nanstd(grouped, dim=1)  # (K,)


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group",
                     eps: float = 1e-4, batch_rewards: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO's group-relative advantage of each completion.

        A_i = r_i - mean_{j in group(i)} r_j
        A_i = A_i / (std_{group(i)} + eps)     scale="group" (GRPO)
        A_i = A_i / (std_batch + eps)          scale="batch" (std of all N rewards)
        A_i unchanged                          scale="none"  (Dr. GRPO)

    std is the unbiased (Bessel) standard deviation, as ``torch.std``; a group (or batch) of
    one has std 0. ``scale`` also takes TRL's old booleans (True = "group", False = "none").
    A NaN reward marks an unscorable completion (every reward function returned None; see
    ``rollout.rewards.score(..., keep_nan=True)``): as in TRL 1.16 it is left out of the
    group mean and std, and every advantage that comes out NaN (that row, or a group with fewer
    than two scorable rows when scaling by std) is set to 0.
    Shapes: rewards (N,) -> advantages (N,), N = num_prompts * group_size.
    Papers: Shao et al. 2024, "DeepSeekMath" (arXiv:2402.03300), GRPO; Liu et al. 2025,
    "Understanding R1-Zero-Like Training: A Critical Perspective" (arXiv:2503.20783), Dr. GRPO
    (no std division, it biases towards too easy / too hard prompts).
    Source: TRL 1.x ``GRPOTrainer._generate_and_score_completions`` (``scale_rewards``), same
    formula and eps. TRL computes this on rewards gathered from all processes. Groups never
    span processes here, so only ``scale="batch"`` needs the others: ``batch_rewards`` (M,) are
    the rewards whose std divides (default: ``rewards``; pass every process's, gathered).
    """
    if isinstance(scale, bool):
        scale = "group" if scale else "none"
    if scale not in GROUP_SCALES:
        raise ValueError(f"scale must be one of {GROUP_SCALES} (TRL's scale_rewards), got {scale!r}")
    grouped = _grouped(rewards, group_size)  # (K, G)
    advantages = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).reshape(-1)  # (N,)
    if scale == "group":
        advantages = advantages / (_group_std(grouped).repeat_interleave(group_size) + eps)  # (N,)
    elif scale == "batch":
        pool = rewards if batch_rewards is None else batch_rewards  # (M,)
        std = _nanstd(pool) if pool.numel() > 1 else torch.zeros((), dtype=rewards.dtype, device=rewards.device)
        advantages = advantages / (std + eps)  # (N,)
    # unscorable rows carry no signal (TRL's nan_to_num(nan=0); +-inf is left alone here)
    return torch.where(torch.isnan(advantages), torch.zeros_like(advantages), advantages)


def group_stats(rewards: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """What practitioners watch on group rewards, detached.

        mean          (K,)  mean reward of each prompt's G completions (NaN rewards left out)
        std           (K,)  unbiased std of each group (0 for G = 1; NaN with < 2 scorable rows)
        frac_zero_std ()    share of groups whose std is ~0 (``torch.isclose(std, 0)``):
                            with scale="group" or "none" those groups carry no gradient

    TRL 1.16 logs ``frac_reward_zero_std`` = ``frac_zero_std`` (with scale_rewards="batch" it
    checks the batch std instead; the per-group fraction here is the one that says how many
    prompts are wasted), and ``reward`` / ``reward_std`` as the nanmean / nanstd of all rewards
    (not of these per-group values).
    Shapes: rewards (N,) -> dict of (K,), (K,), () with K = N // group_size.
    """
    grouped = _grouped(rewards.detach(), group_size)  # (K, G)
    std = _group_std(grouped)  # (K,)
    zero = torch.isclose(std, torch.zeros_like(std))  # (K,)
    return {"mean": torch.nanmean(grouped, dim=1), "std": std, "frac_zero_std": zero.to(grouped.dtype).mean()}


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: each completion's baseline is the mean of the others in its group.

        A_i = r_i - (sum_{j in group(i)} r_j - r_i) / (G - 1)     ( = G/(G-1) * (r_i - mean) )

    Shapes: rewards (N,) -> advantages (N,). Needs G >= 2. NaN rewards (unscorable rows) are
    left out as in TRL 1.16: the baseline averages the scorable others, (nansum - r_i) / (n_k - 1),
    and NaN advantages (that row, or a group with one scorable row) become 0.
    Paper: Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback in LLMs" (arXiv:2402.14740); Kool et al. 2019, "Buy 4 REINFORCE
    Samples, Get a Baseline for Free!". Source: TRL 1.x ``RLOOTrainer`` and OpenRLHF
    ``advantage_estimator="rloo"`` (same formula). TRL subtracts ``beta * KL`` from the rewards
    first and may then whiten the advantages (``normalize_advantages``); the trainer does both.
    """
    if group_size < 2:
        raise ValueError(f"RLOO needs group_size >= 2 (a baseline from the other completions), got {group_size}")
    grouped = _grouped(rewards, group_size)  # (K, G)
    scorable = (~torch.isnan(grouped)).sum(dim=1, keepdim=True).to(grouped.dtype)  # (K, 1)
    baseline = (torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (scorable - 1)  # (K, G)
    advantages = (grouped - baseline).reshape(-1)  # (N,)
    return torch.where(torch.isnan(advantages), torch.zeros_like(advantages), advantages)


REINFORCE_BASELINES = (None, "group")


def reinforce_pp_advantages(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float,
                            gamma: float = 1.0, baseline: str | None = None, group_size: int | None = None,
                            eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (and REINFORCE++-baseline) token advantages, as OpenRLHF defines them.

        s_i      = score_i - mean_{group(i)} score        if baseline="group", else score_i
        r_{i,t}  = -kl_coef * kl_{i,t} + s_i * [t is the last real token of row i]
        G_{i,t}  = sum_{k >= t} gamma^(k-t) r_{i,k}        (masked; returns)
        A_{i,t}  = (G_{i,t} - mu) / sqrt(max(sigma^2, eps))  (global whitening over all real tokens;
                                                          mu, sigma^2: masked mean, biased variance)

    Shapes: scores (B,), kl (B, T) (e.g. ``kl_k1(logp, ref_logp)``), mask (B, T) ->
    (advantages (B, T), returns (B, T)), detached. Padding positions are 0 in both.
    Paper: Hu et al. 2025, "REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both
    Prompt and Reward Models" (arXiv:2501.03262).
    Source: OpenRLHF ``compute_advantages_and_returns`` with ``advantage_estimator="reinforce"``
    or ``"reinforce_baseline"``: ``compute_reward`` (score at the last action token plus the KL
    reward), ``get_cumulative_returns``, then the global whitening with
    ``var.clamp(min=1e-8).rsqrt()``. Differences: OpenRLHF silently resets gamma to 1 for the
    baseline variant; here gamma != 1 with baseline="group" is an error. OpenRLHF's optional
    ``reward_clip_range`` is not applied (clamp ``scores`` first). OpenRLHF leaves padding at
    ``-mu/sigma``; here it is 0 (the loss masks it either way). Under data parallelism OpenRLHF
    whitens over the local experiences only, so does this (pass the local batch).
    The returns are GAE with lambda = 1 and zero values (``ppo.gae``), the one tested copy.
    """
    if baseline not in REINFORCE_BASELINES:
        raise ValueError(f"baseline must be one of {REINFORCE_BASELINES}, got {baseline!r}")
    if scores.dim() != 1 or kl.shape != mask.shape or kl.dim() != 2 or kl.shape[0] != scores.shape[0]:
        raise ValueError(f"expected scores (B,), kl and mask (B, T); got scores {tuple(scores.shape)}, "
                         f"kl {tuple(kl.shape)}, mask {tuple(mask.shape)}")
    scores = scores.detach()
    if baseline == "group":
        if group_size is None:
            raise ValueError("baseline='group' (REINFORCE++-baseline) needs group_size (completions per prompt)")
        if gamma != 1.0:
            raise ValueError(f"baseline='group' uses gamma=1 (OpenRLHF forces it for reinforce_baseline), got {gamma}")
        grouped = _grouped(scores, group_size, "scores")  # (K, G)
        scores = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)  # (B,)
    mask = mask.to(kl.dtype)
    rewards, _ = kl_penalized_rewards(scores.to(kl.dtype), kl.detach(), mask, kl_coef)  # (B, T)
    returns, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)  # (B, T); values 0 -> A = returns
    advantages = masked_whiten(returns, mask, eps=eps, unbiased=False, eps_at="floor") * mask  # (B, T)
    return advantages, returns * mask


# advantage_estimator -> the estimator and where the KL to the reference (coefficient beta) goes:
#   "loss":   the estimator sees the scores only; beta * KL is a term of the policy loss (``grpo_loss``)
#   "reward": beta * KL comes off the rewards first, per token (REINFORCE++: ``kl_penalized_rewards``)
#             or summed per sequence (TRL's RLOOTrainer), so it shapes the advantages
# "baseline": the fixed ``baseline`` argument of ``reinforce_pp_advantages``.
ADVANTAGE_ESTIMATORS = {
    "grpo": {"fn": group_advantages, "kl": "loss"},
    "rloo": {"fn": rloo_advantages, "kl": "loss"},
    "reinforce++": {"fn": reinforce_pp_advantages, "kl": "reward", "baseline": None},
    "reinforce++_baseline": {"fn": reinforce_pp_advantages, "kl": "reward", "baseline": "group"},
    "rloo_kl_in_reward": {"fn": rloo_advantages, "kl": "reward"},
}
KL_PLACEMENTS = ("reward", "loss")


# ---------------------------------------------------------------- the GRPO policy loss


def _agg_grpo(per_token, mask, max_completion_length, num_items):
    # mean over each sequence's tokens, then over sequences (Shao et al. 2024, eq. 3)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _agg_bnpo(per_token, mask, max_completion_length, num_items):
    # all tokens of the local batch count equally
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def _agg_dr_grpo(per_token, mask, max_completion_length, num_items):
    # a constant normaliser: no length bias (Liu et al. 2025)
    if max_completion_length is None:
        raise ValueError("loss_type='dr_grpo' needs max_completion_length (the generation limit)")
    return (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)


def _agg_dapo(per_token, mask, max_completion_length, num_items):
    # token-level sum over the global token count (Yu et al. 2025, DAPO)
    normaliser = mask.sum().clamp(min=1.0) if num_items is None else num_items
    return (per_token * mask).sum() / normaliser


# loss_type -> aggregation of the (B, T) per-token loss to a scalar
LOSS_AGGREGATIONS = {"grpo": _agg_grpo, "bnpo": _agg_bnpo, "dr_grpo": _agg_dr_grpo, "dapo": _agg_dapo}
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def _token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the real tokens: (B, T), (B, T) -> ()."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def _sequence_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the rows that have a real token of x's value on them (constant along T): -> ()."""
    rows = (mask.sum(-1) > 0).to(mask.dtype)  # (B,)
    return ((x * mask).amax(-1) * rows).sum() / rows.sum().clamp(min=1.0)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float,
    epsilon_high: float,
    loss_type: str = "dapo",
    importance_sampling_level: str = "token",
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    max_completion_length: int | None = None,
    delta: float | None = None,
    num_items: float | torch.Tensor | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's clipped surrogate with asymmetric clipping, k3 KL and a choice of aggregation.

        log w_t = logp_t - old_t                                   level "token"
        log w_t = sg[mean_t(logp - old)] + logp_t - sg[logp_t]     level "sequence" (GSPO-token)
        w_t     = exp(log w_t);  w_t = min(w_t, delta) if delta    (two-sided clip, INTELLECT-2)
        l_t     = -min(w_t * A, clip(exp(log w_t), 1 - eps_low, 1 + eps_high) * A)
        l_t     = l_t * h_t           with token_weights h: top_entropy_quantile's 0/1 mask and/or
                                      the engine importance weights of ``engine_importance_weights``
        l_t    += beta * k3_t,   k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1
        loss    = LOSS_AGGREGATIONS[loss_type](l, mask)
          grpo:    mean_i( sum_t l_it m_it / max(1, sum_t m_it) )
          bnpo:    sum l m / max(1, sum m)                (tokens of this local batch)
          dr_grpo: sum l m / (B * max_completion_length)
          dapo:    sum l m / num_items                    (num_items: default sum m)

    GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071) uses one
    ratio per sequence, s_i = exp(mean_t(logp - old)). Written with the stop-gradient trick,
    every token's weight has the value s_i and the gradient s_i * grad(logp_t), so token-level
    advantages (B, T) work too (the paper's GSPO-token); with (B,) advantages the gradient is
    exactly GSPO's, and exactly that of TRL's broadcast (B, 1) ratio.

    Shapes: logprobs, old_logprobs, ref_logprobs, mask (B, T); advantages (B,) or (B, T) ->
    (loss (), metrics). ``old_logprobs=None`` means on-policy (old = logprobs detached).
    Metrics (detached): ``clip_ratio/low_mean`` (ratio < 1 - eps_low with A < 0),
    ``clip_ratio/high_mean`` (ratio > 1 + eps_high with A > 0), ``clip_ratio/region_mean``
    (either), as token means (sequence level with (B,) advantages: means over the sequences
    that have a real token, as TRL's (B, 1) ratio gives), and ``kl`` (token mean of k3) when
    beta > 0. ``delta`` (two-sided clipping: INTELLECT-2, Prime Intellect 2025, arXiv:2505.07291)
    must exceed 1 + epsilon_high.
    Papers: Shao et al. 2024 (arXiv:2402.03300) GRPO; Yu et al. 2025, "DAPO" (arXiv:2503.14476)
    clip-higher and token-level loss; Liu et al. 2025 (arXiv:2503.20783) Dr. GRPO.
    Source: TRL 1.x ``GRPOTrainer._compute_loss``: same ratio, clip, delta, k3 and the four
    aggregations. Differences: TRL divides grpo/bnpo/dr_grpo by the gradient-accumulation steps
    and dapo by ``num_items_in_batch / num_processes * grad_accum_steps / steps_per_generation``
    (TRL 1.16; num_items_in_batch = real tokens of the whole generation batch, all processes);
    here that is the loop's job: pass that value as ``num_items`` for TRL's dapo, and do not
    divide the dapo loss by the accumulation steps again. Not implemented: TRL's
    ``use_bias_correction_kl`` (k3 times the ratio), the off-policy
    mask and the cispo/sapo/luspo/vespo loss types. TRL's vLLM importance-sampling correction is
    ``engine_importance_weights``, passed in as (part of) ``token_weights``. TRL's
    sequence-level clip metrics average over all rows, including rows whose mask is all 0
    (masked truncated completions); here those rows are left out.
    """
    if loss_type not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_type must be one of {sorted(LOSS_AGGREGATIONS)}, got {loss_type!r}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                         f"got {importance_sampling_level!r}")
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} needs ref_logprobs (the reference model's token log-probs)")
    if delta is not None and delta <= 1.0 + epsilon_high:
        raise ValueError(f"delta must be > 1 + epsilon_high = {1.0 + epsilon_high} (it bounds the ratios the "
                         f"upper clip lets through when A < 0), got {delta}")
    mask = mask.to(logprobs.dtype)  # (B, T)
    old_logprobs = logprobs.detach() if old_logprobs is None else old_logprobs
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)

    log_ratio = logprobs - old_logprobs  # (B, T)
    if importance_sampling_level == "token":
        log_weights = log_ratio  # (B, T)
    else:
        seq = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)  # (B, 1)
        # value sg[seq] exactly (x - x == 0), gradient d logp_t per token
        log_weights = seq.detach() + logprobs - logprobs.detach()  # (B, T)
    coef_1 = torch.exp(log_weights)  # (B, T)
    coef_2 = torch.clamp(coef_1, 1.0 - epsilon_low, 1.0 + epsilon_high)  # (B, T)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)  # (B, T)
    if token_weights is not None:  # the normaliser stays the mask's: left-out tokens count as zeros
        per_token = per_token * token_weights.to(per_token.dtype)
    if beta != 0.0:
        per_token_kl = kl_k3(logprobs, ref_logprobs)  # (B, T)
        per_token = per_token + beta * per_token_kl
    loss = LOSS_AGGREGATIONS[loss_type](per_token, mask, max_completion_length, num_items)

    with torch.no_grad():
        low = ((coef_1 < 1.0 - epsilon_low) & (adv < 0)).to(mask.dtype)  # (B, T)
        high = ((coef_1 > 1.0 + epsilon_high) & (adv > 0)).to(mask.dtype)  # (B, T)
        region = torch.maximum(low, high)  # (B, T)
        mean = _token_mean
        if importance_sampling_level == "sequence" and advantages.dim() == 1:
            mean = _sequence_mean  # one clip decision per sequence
        metrics = {"clip_ratio/low_mean": mean(low * mask, mask), "clip_ratio/high_mean": mean(high * mask, mask),
                   "clip_ratio/region_mean": mean(region * mask, mask)}
        if beta != 0.0:
            metrics["kl"] = _token_mean(per_token_kl, mask)
    return loss, metrics


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float,
                      pool: torch.Tensor | None = None) -> torch.Tensor:
    """The tokens whose entropy is in the top ``quantile`` share (TRL's ``top_entropy_quantile``).

        tau = q-th quantile of {H_t : m_t = 1},  q = 1 - quantile;   h_t = m_t * [H_t >= tau]

    Shapes: entropy, mask (B, T) -> (B, T) float 0/1. ``pool`` (M,): the entropies the quantile
    is taken over (default: this batch's real tokens; pass every process's, gathered, as TRL).
    quantile = 1 keeps every real token. Paper: Wang et al. 2025, "Beyond the 80/20 Rule:
    High-Entropy Minority Tokens Drive Effective RL for LLM Reasoning" (arXiv:2506.01939).
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    real = mask.bool()  # (B, T)
    values = entropy[real].float() if pool is None else pool.float()  # (M,)
    if values.numel() == 0:
        return torch.zeros_like(mask, dtype=torch.float32)
    tau = torch.quantile(values, 1.0 - quantile)  # ()
    return ((entropy.float() >= tau) & real).float()  # (B, T)


ENGINE_IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def engine_importance_weights(old_logprobs: torch.Tensor, sampling_logprobs: torch.Tensor, mask: torch.Tensor,
                              mode: str = "sequence_mask", clip_min: float | None = None,
                              clip_max: float | None = 3.0) -> torch.Tensor:
    """Importance weights that correct for sampling with another engine (vLLM) than the trainer.

        d_t = m_t * (old_t - sampling_t)      (0 where the engine gave no log-prob: NaN)
        w   = exp(d_t)            (B, T)      token_*      w = exp(sum_t d_t)   (B, 1)  sequence_*
        *_truncate: w = clamp(w, clip_min, clip_max)      *_mask: w = 0 outside [clip_min, clip_max]

    ``old_logprobs``: the trainer's log-probs of the sampled tokens at sampling time,
    ``sampling_logprobs``: the engine's. Shapes (B, T) each -> (B, T) or (B, 1). Papers: Yao et al.
    2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training" (truncated IS,
    TIS); masked IS (MIS) as in TRL. Source: TRL 1.16 ``GRPOTrainer._generate_and_score_completions``
    (``vllm_importance_sampling_mode``), same modes, NaN handling and bounds.
    """
    if mode not in ENGINE_IS_MODES:
        raise ValueError(f"mode must be one of {ENGINE_IS_MODES}, got {mode!r}")
    diff = torch.nan_to_num((old_logprobs - sampling_logprobs) * mask, nan=0.0)  # (B, T)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)  # (B, 1)
    weights = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(weights, min=clip_min, max=clip_max)
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    return weights.masked_fill((weights < low) | (weights > high), 0.0)


def rloo_sequence_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor, epsilon_low: float, epsilon_high: float):
    """TRL 1.x RLOO's clipped surrogate with one ratio per sequence.

        rho_i = exp(sum_t m_it (logp_it - old_it))
        loss  = mean_i -min(rho_i A_i, clip(rho_i, 1 - eps_low, 1 + eps_high) A_i)

    Unlike GSPO (``grpo_loss(importance_sampling_level="sequence")``), the log-ratio is summed,
    not averaged, over the tokens, and the loss is a plain mean over sequences.
    Shapes: logprobs, old_logprobs, mask (B, T); advantages (B,) -> (loss (), metrics of
    detached clip fractions over sequences: clip_ratio/low_mean, high_mean, region_mean).
    Paper: Ahmadian et al. 2024, arXiv:2402.14740. Source: TRL 1.x ``RLOOTrainer._compute_loss`` (same formula
    and clip metrics).
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = ((logprobs - old_logprobs) * mask).sum(-1)  # (B,)
    coef_1 = torch.exp(log_ratio)  # (B,)
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)  # (B,)
    loss = -torch.min(coef_1 * advantages, coef_2 * advantages).mean()
    with torch.no_grad():
        low = ((coef_1 < 1 - epsilon_low) & (advantages < 0)).float()
        high = ((coef_1 > 1 + epsilon_high) & (advantages > 0)).float()
        metrics = {"clip_ratio/low_mean": low.mean(), "clip_ratio/high_mean": high.mean(),
                   "clip_ratio/region_mean": torch.maximum(low, high).mean()}
    return loss, metrics
