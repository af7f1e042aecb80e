"""The TRL 1.x public face that ``GRPOTrainer`` and ``RLOOTrainer`` share, as plain functions.

Each trainer class binds these as its methods (no base class: docs/architecture.md): ``build`` loads the
model, tokenizer, reward functions and prompts (``online_config.prepare``, every check before a
model loads) and hands them to ``online.OnlineRun`` with the method's advantages and loss.
"""

from __future__ import annotations

from .online import OnlineRun
from .online_config import prepare
from ..rollout.rewards import score
from .sft import finish_training


def build(trainer, args, method_fn, model, reward_funcs, train_dataset, eval_dataset, processing_class,
          reward_processing_classes, peft_config, rollout_engine=None) -> None:
    """Fill ``trainer`` (args, model, tokenizer, reward_funcs, loop, ref_model) for ``method_fn(args)``.

    ``rollout_engine``: a ``rlhfkit.rollout.vllm.VLLMRollout`` you built (rlhfkit extension);
    ``args.use_vllm`` starts one on the policy's folder instead.
    """
    trainer.args = args
    model, trainer.tokenizer, trainer.reward_funcs, train, evals = prepare(
        model, reward_funcs, args, train_dataset, eval_dataset, processing_class, peft_config,
        reward_processing_classes, rollout_engine)
    trainer.model = model
    trainer.loop = OnlineRun(args, model, trainer.tokenizer, method_fn(args), trainer.reward_funcs, score, *train,
                             *(evals or (None, None)), rollout_engine=rollout_engine)
    trainer.ref_model = trainer.loop.ref_model


def processing_class(trainer):
    """The tokenizer, under TRL's name."""
    return trainer.tokenizer


def train(trainer, resume_from_checkpoint: str | None = None) -> list[dict]:
    """Run ``args.max_steps`` optimiser steps (or resume); writes ``output_dir/final``; returns the log history."""
    return finish_training(trainer, trainer.method_name, trainer.loop.train(resume_from_checkpoint))


def evaluate(trainer) -> dict:
    """Reward, KL and length metrics on the eval prompts (``eval/*``)."""
    return trainer.loop.evaluate()


def save_model(trainer, path=None) -> None:
    """Save the policy (and tokenizer) to ``path`` (default ``args.output_dir``)."""
    trainer.loop.save_model(path or trainer.args.output_dir)
