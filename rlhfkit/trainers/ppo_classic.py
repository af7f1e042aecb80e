"""TRL 0.11.4's public PPOTrainer helpers, as functions of the trainer (``self``).

``PPOTrainer`` binds them as methods under TRL's names (``batched_forward_pass``, ``compute_rewards``,
``compute_advantages``, ``loss``, ...), so scripts that call them work unchanged; ``step()`` runs
the same math on its own response-only layout and shares :func:`gae_advantages` with them.
"""

from __future__ import annotations

import torch

from .. import algos
from ..core import PPODecorators
from .ppo_batch import check_step_inputs, classic_forward_pass, classic_model_inputs
from .ppo_stats import classic_loss, record_step_stats as _record_step_stats


def gae_advantages(config, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor):
    """``whiten_rewards`` -> GAE -> ``whiten_advantages``: (advantages, returns), (B, T) each."""
    if config.whiten_rewards:
        rewards = algos.masked_whiten(rewards * mask, mask, shift_mean=False)
    advantages, returns = algos.gae(rewards, values, mask, config.gamma, config.lam)  # (B, T)
    if config.whiten_advantages:
        advantages = algos.masked_whiten(advantages, mask)
    return advantages, returns


def step_safety_checker(self, batch_size, queries, responses, scores, masks=None):
    """step()'s input checks under TRL's name; returns (queries, responses, scores, masks) as lists."""
    q, r, s, m = check_step_inputs(queries, responses, scores, masks, batch_size, self.max_length,
                                   self.current_device, self.vocab_size)
    return q, r, list(s.unbind()), m

def prepare_model_inputs(self, queries, responses) -> dict:
    """Padded ``input_ids``/``attention_mask`` of query+response (encoder-decoder: the queries, plus
    ``decoder_input_ids``/``decoder_attention_mask`` of the responses), on the trainer's device."""
    return classic_model_inputs(queries, responses, self.tokenizer, self.training_data_collator,
                                self.current_device, self.is_encoder_decoder)

@PPODecorators.empty_device_cache()
def batched_forward_pass(self, model, queries, responses, model_inputs, return_logits: bool = False,
                         response_masks=None):
    """``(logprobs, logits or None, values, masks)`` of the whole padded sequences, each (B, L-1)
    (logits (B, L-1, V)), in chunks of ``mini_batch_size``; ``masks`` marks response tokens."""
    with self.mechanics.autocast():
        return classic_forward_pass(model, queries, responses, model_inputs, self.config.mini_batch_size,
                                    self.is_encoder_decoder, return_logits, response_masks)

def kl_penalty(self, logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate of ``config.kl_penalty``; for "full" the inputs are log-probs (..., V)."""
    if self.config.kl_penalty == "full":
        return algos.kl_full(logprob, ref_logprob)
    return algos.kl_penalty(logprob, ref_logprob, self.config.kl_penalty)

def compute_rewards(self, scores, logprobs, ref_logprobs, masks):
    """``(rewards, non_score_rewards, kls)``, each (B, T): ``-beta * kl`` per token plus the score on
    the last masked-in token."""
    kls = self._kl_penalty(logprobs, ref_logprobs)  # (B, T)
    non_score = -self.kl_ctl.value * kls  # (B, T)
    score_only, _ = algos.kl_penalized_rewards(torch.as_tensor(scores).to(kls), torch.zeros_like(kls), masks, 0.0)
    return non_score + score_only, non_score, kls

def compute_advantages(self, values, rewards, mask):
    """``(values * mask, advantages, returns)`` by GAE; advantages whitened (``whiten_advantages``)."""
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    advantages, returns = gae_advantages(self.config, rewards, values, mask)  # (B, T) each
    return values, advantages.detach(), returns

def loss(self, old_logprobs, values, logits, vpreds, logprobs, mask, advantages, returns):
    """``(policy_loss, vf_coef * value_loss, stats)`` with TRL's flat stat names; a minibatch whose
    mean ratio exceeds ``ratio_threshold`` gets zero losses (and a warning)."""
    return classic_loss(self.config, old_logprobs, values, logits, vpreds, logprobs, mask, advantages, returns)

def train_minibatch(self, old_logprobs, values, logprobs, logits, vpreds, mask, advantages, returns) -> dict:
    """One gradient step on ``loss(...)`` (clipping, accumulation and ``optimizer.zero_grad()`` included)."""
    self._set_train(True)
    loss_p, loss_v, stats = self.loss(old_logprobs, values, logits, vpreds, logprobs, mask, advantages, returns)
    self.mechanics.backward(loss_p + loss_v)
    self.mechanics.optimizer_step(self.optimizer, self.params)
    return stats

def record_step_stats(self, kl_coef: float, **data) -> dict:
    """TRL's step statistics from ``scores, logprobs, ref_logprobs, non_score_reward, masks, kls,
    queries, responses, train_stats`` (each train stat stacked over minibatches, averaged here)."""
    train = {k: torch.as_tensor(v).float().mean(0) for k, v in data["train_stats"].items()}
    return _record_step_stats(scores=data["scores"], raw_scores=data.get("raw_scores", data["scores"]),
                             logprobs=data["logprobs"], ref_logprobs=data["ref_logprobs"], kl=data["kls"],
                             non_score_reward=data["non_score_reward"], mask=data["masks"], kl_coef=kl_coef,
                             queries=data["queries"], responses=data["responses"], train_stats=train,
                             to_host=False)

def gather_stats(self, stats: dict) -> dict:
    """Average every tensor stat over processes (identity in a single process)."""
    if not self.is_distributed:
        return stats
    return {k: self.accelerator.reduce(v.to(self.accelerator.device), "mean") if isinstance(v, torch.Tensor)
            else v for k, v in stats.items()}
