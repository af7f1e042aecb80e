"""Group Relative Policy Optimisation (GRPO) and its relatives, with TRL 1.x's API and flag names.

    def reward_len(prompts, completions, **columns):
        return [-abs(20 - len(c)) for c in completions]

    trainer = GRPOTrainer(model="runs/sft", reward_funcs=reward_len, train_dataset="data/prompts.jsonl",
                          args=GRPOConfig(output_dir="runs/grpo", num_generations=8, loss_type="dapo"))
    trainer.train()

Each prompt gets ``num_generations`` completions; a completion's advantage is its reward
against the others of its group (no critic). ``advantage_estimator`` (an rlhfkit extension,
OpenRLHF's ``--advantage_estimator``) picks the baseline, all on the same clipped loss:

    grpo                  (r - mean_group) / std (scale_rewards: group | batch | none = Dr. GRPO)
    rloo                  r - mean of the other G - 1 completions (leave-one-out)
    reinforce++           token rewards -beta * KL (k1) + score at the last token, returns, whitened over
                          the batch (Hu et al. 2025); beta then sits in the reward, not in the loss
    reinforce++_baseline  the same with the group mean score subtracted first

The loss (``algos.grpo_loss``) is TRL 1.x's: asymmetric clip (``epsilon``/``epsilon_high``,
DAPO), optional two-sided ``delta``, the k3 KL to a frozen reference when ``beta > 0``,
``loss_type`` grpo | bnpo | dr_grpo | dapo, and ``importance_sampling_level="sequence"`` for
GSPO. The loop (generation cycles, logging, checkpoints) is ``online.OnlineRun``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..algos.advantages import (ADVANTAGE_ESTIMATORS, ENGINE_IS_MODES, GROUP_SCALES, IMPORTANCE_SAMPLING_LEVELS,
                                LOSS_AGGREGATIONS, engine_importance_weights, group_advantages, group_stats,
                                grpo_loss, high_entropy_mask, reinforce_pp_advantages)
from ..algos.kl import kl_k1
from .config import Checks, f
from .online import Method, build
from .online_config import OnlineConfig
from .setup import finish_training

# advantage_estimator's choices: keys of algos' ADVANTAGE_ESTIMATORS (estimator and KL placement)
GRPO_ESTIMATORS = ("grpo", "rloo", "reinforce++", "reinforce++_baseline")
_SCALE_ALIASES = {True: "group", False: "none", "true": "group", "false": "none"}


@dataclass
class GRPOConfig(OnlineConfig):
    output_dir: str = f("runs/grpo", "Folder for the final model, checkpoints and metrics.jsonl.")
    beta: float = f(0.0, "KL coefficient to the frozen reference (0: no reference model is kept). For "
                         "reinforce++ it is the KL penalty in the reward instead of the loss.")
    delta: float | None = f(None, "Two-sided clipping: cap the ratio at delta also where the advantage is "
                                  "negative (INTELLECT-2); must exceed 1 + epsilon_high (none: off).")
    loss_type: str = f("dapo", f"Loss aggregation, one of {sorted(LOSS_AGGREGATIONS)}: grpo (per-sequence "
                               "mean, then mean), bnpo (token mean of the micro-batch), dr_grpo (sum / (rows * "
                               "max_completion_length)), dapo (sum / tokens of the whole generation).")
    scale_rewards: str = f("group", f"Divide group-centred rewards by the std of the group, of the batch, or "
                                    f"not at all: one of {GROUP_SCALES} (true = group, false = none; "
                                    f"'none' is Dr. GRPO).")
    importance_sampling_level: str = f("token", f"Probability ratio per token or per sequence (GSPO), one of "
                                                f"{IMPORTANCE_SAMPLING_LEVELS}.")
    top_entropy_quantile: float = f(1.0, "Train only on the tokens whose entropy is in this top share of the "
                                         "micro-batch's (all processes; 0.2: the top 20%, Wang et al. 2025); 1.0: "
                                         "every token.")
    vllm_importance_sampling_correction: bool = f(True, "With use_vllm: weight each completion (or token) by "
                                                        "exp(trainer - engine log-prob), bounded as "
                                                        "vllm_importance_sampling_mode says (TRL's default).")
    vllm_importance_sampling_mode: str = f("sequence_mask", f"One of {ENGINE_IS_MODES}: per token or per "
                                                            "sequence; truncate clips the weight to [clip_min, "
                                                            "clip_max], mask sets it to 0 outside.")
    vllm_importance_sampling_clip_max: float | None = f(3.0, "Upper bound of the engine importance weight.")
    vllm_importance_sampling_clip_min: float | None = f(None, "Lower bound of the engine importance weight "
                                                              "(none: no lower bound).")
    advantage_estimator: str = f("grpo", f"Baseline of the advantages, one of {GRPO_ESTIMATORS} (rlhfkit "
                                         "extension; see docs/online.md).")

    def __post_init__(self):
        if isinstance(self.scale_rewards, (bool, str)):
            key = self.scale_rewards.lower() if isinstance(self.scale_rewards, str) else self.scale_rewards
            self.scale_rewards = _SCALE_ALIASES.get(key, self.scale_rewards)
        super().__post_init__()
        c = Checks(self)
        c.at_least(0.0, "beta")
        c.choice("vllm_importance_sampling_mode", ENGINE_IS_MODES)
        c.positive("vllm_importance_sampling_clip_max")
        c.at_least(0.0, "vllm_importance_sampling_clip_min")
        lo, hi = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if lo is not None and hi is not None and lo >= hi:
            c.fail("vllm_importance_sampling_clip_min", f"must be below vllm_importance_sampling_clip_max={hi}, got {lo}")
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            c.fail("top_entropy_quantile", f"must be in (0, 1], got {self.top_entropy_quantile}")
        c.choice("loss_type", sorted(LOSS_AGGREGATIONS))
        c.choice("scale_rewards", GROUP_SCALES)
        c.choice("importance_sampling_level", IMPORTANCE_SAMPLING_LEVELS)
        c.choice("advantage_estimator", GRPO_ESTIMATORS)
        if self.delta is not None and self.delta <= 1.0 + self.epsilon_upper:
            c.fail("delta", f"must be > 1 + epsilon_high = {1.0 + self.epsilon_upper}, got {self.delta}")


def grpo_method(cfg: GRPOConfig) -> Method:
    """GRPO's advantages and loss as plain functions over one generation / one chunk."""
    G = cfg.num_generations
    estimator = ADVANTAGE_ESTIMATORS[cfg.advantage_estimator]
    estimate = estimator["fn"]
    kl_in_reward = estimator["kl"] == "reward" and cfg.beta > 0
    loss_beta = cfg.beta if estimator["kl"] == "loss" else 0.0

    def advantages(rewards, old, ref, mask, gather=lambda t: t):
        stats = group_stats(rewards, G)
        metrics = {"reward_std_group": stats["std"].mean(), "frac_reward_zero_std": stats["frac_zero_std"]}
        if estimate is group_advantages:  # scale_rewards=batch: the std of every process's rewards, as TRL
            pool = gather(rewards) if cfg.scale_rewards == "batch" else None
            return estimate(rewards, G, cfg.scale_rewards, batch_rewards=pool), metrics
        if estimate is not reinforce_pp_advantages:
            return estimate(rewards, G), metrics
        kl = kl_k1(old, ref) * mask if kl_in_reward else mask * 0.0  # (N, R) token rewards -beta * kl
        if kl_in_reward:
            metrics["kl_reward"] = (kl.sum(-1)).mean()
        adv, _ = estimate(rewards, kl, mask, cfg.beta if kl_in_reward else 0.0, baseline=estimator["baseline"],
                          group_size=G)
        return adv, metrics

    def loss(logprobs, old, ref, adv, mask, num_items, entropy=None, gather_tokens=lambda t: t, sampling=None):
        weights, extra = None, {}
        if cfg.top_entropy_quantile < 1.0:  # the quantile over every process's real tokens, as TRL
            weights = high_entropy_mask(entropy, mask, cfg.top_entropy_quantile,
                                        pool=gather_tokens(entropy[mask.bool()].float()))
            extra["entropy_mask_fraction"] = weights.sum() / mask.sum().clamp_min(1)
        if sampling is not None and cfg.vllm_importance_sampling_correction:  # engine vs trainer numerics
            is_weights = engine_importance_weights(old, sampling, mask, cfg.vllm_importance_sampling_mode,
                                                   cfg.vllm_importance_sampling_clip_min,
                                                   cfg.vllm_importance_sampling_clip_max)  # (B, R) or (B, 1)
            seen = is_weights[mask.sum(-1) > 0] if is_weights.shape[-1] == 1 else is_weights[mask.bool()]
            if seen.numel():
                extra.update({"sampling/importance_sampling_ratio/min": seen.min(),
                              "sampling/importance_sampling_ratio/mean": seen.mean(),
                              "sampling/importance_sampling_ratio/max": seen.max()})
            weights = is_weights if weights is None else weights * is_weights
        loss, metrics = grpo_loss(
            logprobs, old, adv, mask, epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_upper,
            loss_type=cfg.loss_type, importance_sampling_level=cfg.importance_sampling_level, ref_logprobs=ref,
            beta=loss_beta,
            max_completion_length=cfg.max_completion_length, delta=cfg.delta, num_items=num_items,
            token_weights=weights)
        return loss, {**metrics, **extra}

    return Method("GRPO", advantages, loss, reference=cfg.beta > 0, old_logprobs=kl_in_reward,
                  engine_correction=cfg.vllm_importance_sampling_correction)


class GRPOTrainer:
    """``GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class,
    reward_processing_classes, peft_config, tools, environment_factory)``, TRL 1.x style.

    ``model``: a path / hub id or a ``PreTrainedModel`` (default ``args.model_name_or_path``);
    ``reward_funcs``: a callable ``(prompts, completions, **columns) -> list[float]``, a dotted
    path, a reward-model folder, or a list of them (default ``args.reward_funcs``);
    ``train_dataset``: a path, ``datasets.Dataset`` or list of rows in any prompt format
    (default ``args.dataset_name``). ``GRPOTrainer(args=config)`` builds everything from the config.
    ``rollout_engine`` (keyword, rlhfkit extension): a ``rlhfkit.rollout.vllm.VLLMRollout`` to sample
    with; ``args.use_vllm=True`` starts one on the policy's folder instead.
    ``tools`` (functions), ``environment_factory`` (a class, or a dict of them by name) and
    ``tool_parser`` (keyword, ``text -> list[ToolCall]``) make every completion a multi-turn episode
    (TRL 1.x's ``tools`` / ``environment_factory``; docs/agents.md): inserted tool and environment
    tokens are masked out of the loss, KL and entropy.
    """

    method_name = "grpo"

    def __init__(self, model=None, reward_funcs=None, args: GRPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, reward_processing_classes=None, peft_config=None,
                 tools=None, environment_factory=None, *, rollout_engine=None, tool_parser=None):
        build(self, args or GRPOConfig(), grpo_method, model, reward_funcs, train_dataset, eval_dataset,
              processing_class, reward_processing_classes, peft_config, rollout_engine, tools=tools,
              environment_factory=environment_factory, tool_parser=tool_parser)

    @property
    def processing_class(self):
        """The tokenizer, under TRL's name."""
        return self.tokenizer

    def train(self, resume_from_checkpoint: str | None = None) -> list[dict]:
        """Run ``args.max_steps`` optimiser steps (or resume); writes the model to ``output_dir``; returns the log."""
        return finish_training(self, self.method_name, self.loop.train(resume_from_checkpoint))

    def evaluate(self) -> dict:
        """Reward and length metrics on the eval prompts (``eval/*``)."""
        return self.loop.evaluate()

    def save_model(self, path=None) -> None:
        """Save the policy (and tokenizer) to ``path`` (default ``args.output_dir``)."""
        self.loop.save_model(path or self.args.output_dir)
