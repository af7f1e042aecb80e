"""REINFORCE leave-one-out (RLOO) with TRL 1.x's API: ``RLOOConfig`` / ``RLOOTrainer``.

    trainer = RLOOTrainer(model="runs/sft", reward_funcs="runs/rm", train_dataset="data/prompts.jsonl",
                          args=RLOOConfig(output_dir="runs/rloo", num_generations=4, beta=0.05))
    trainer.train()

As TRL 1.x's ``RLOOTrainer`` (Ahmadian et al. 2024, arXiv:2402.14740):

    r_i   = clip(sum_f w_f reward_f, reward_clip_range) - beta * sum_t (logp_old - logp_ref)_t   # KL in the reward
    A_i   = r_i - mean_{j != i in the group} r_j              (whitened over the batch if normalize_advantages)
    loss  = mean_i -min(rho_i A_i, clip(rho_i, 1 - epsilon, 1 + epsilon_high) A_i),
            rho_i = exp(sum_t logp_t - sum_t logp_old_t)      (one ratio per sequence, summed log-probs)

It runs on the same loop as GRPO (``online.OnlineRun``); only the advantages and the loss differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..algos.advantages import ADVANTAGE_ESTIMATORS, group_stats, rloo_sequence_loss
from ..algos.stats import masked_whiten
from .config import Checks, f
from .online import Method, build
from .online_config import OnlineConfig
from .setup import finish_training


@dataclass
class RLOOConfig(OnlineConfig):
    output_dir: str = f("runs/rloo", "Folder for the final model, checkpoints and metrics.jsonl.")
    num_generations: int = f(2, "Completions sampled per prompt (the group); at least 2.")
    beta: float = f(0.05, "KL coefficient: beta times the summed per-token log-ratio to the frozen reference is "
                          "subtracted from each reward (0: no reference model is kept).")
    normalize_advantages: bool = f(False, "Whiten the advantages over the generation (mean 0, std 1).")
    reward_clip_range: list[float] | None = f(None, "Clip the summed reward to [min, max] before the KL penalty "
                                                    "(none: no clipping).")

    def __post_init__(self):
        super().__post_init__()
        c = Checks(self)
        c.at_least(0.0, "beta")
        r = self.reward_clip_range
        if r is not None and (len(r) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                     for x in r) or r[0] > r[1]):
            c.fail("reward_clip_range", f"must be two numbers [min, max] with min <= max, got {r!r}")


def rloo_method(cfg: RLOOConfig) -> Method:
    """RLOO's advantages (KL in the reward, leave-one-out baseline) and its sequence-level loss."""
    G = cfg.num_generations
    estimator = ADVANTAGE_ESTIMATORS["rloo_kl_in_reward"]
    estimate = estimator["fn"]
    kl_in_reward = estimator["kl"] == "reward" and cfg.beta > 0

    def advantages(rewards, old, ref, mask, gather=lambda t: t):
        if cfg.reward_clip_range is not None:
            rewards = rewards.clamp(min=cfg.reward_clip_range[0], max=cfg.reward_clip_range[1])
        metrics = {}
        if kl_in_reward:
            per_token = (old - ref) * mask  # (N, R) k1, summed per sequence below
            rewards = rewards - cfg.beta * per_token.sum(-1)
            metrics["kl"] = per_token.sum() / mask.sum().clamp_min(1)
        stats = group_stats(rewards, G)
        metrics.update({"reward_std_group": stats["std"].mean(), "frac_reward_zero_std": stats["frac_zero_std"]})
        adv = estimate(rewards, G)  # (N,)
        if cfg.normalize_advantages:  # over every process's advantages, as TRL
            adv = masked_whiten(adv, None, eps=1e-4, eps_at="std", pool=gather(adv))  # (N,)
        return adv, metrics

    def loss(logprobs, old, ref, adv, mask, num_items, **_):
        return rloo_sequence_loss(logprobs, old, adv, mask, cfg.epsilon_low, cfg.epsilon_upper)

    return Method("RLOO", advantages, loss, reference=cfg.beta > 0, old_logprobs=kl_in_reward)


class RLOOTrainer:
    """``RLOOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class,
    reward_processing_classes, peft_config, tools, environment_factory)``, TRL 1.x style.

    Arguments as ``GRPOTrainer``; ``RLOOTrainer(args=config)`` builds everything from the config.
    """

    method_name = "rloo"

    def __init__(self, model=None, reward_funcs=None, args: RLOOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, reward_processing_classes=None, peft_config=None,
                 tools=None, environment_factory=None, *, rollout_engine=None, tool_parser=None):
        build(self, args or RLOOConfig(), rloo_method, model, reward_funcs, train_dataset, eval_dataset,
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
