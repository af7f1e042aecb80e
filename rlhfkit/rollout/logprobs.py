"""Token log-probs over a region of a sequence: the one place a model's LM head is asked for a slice.

Every trainer and eval scores some tokens of a sequence given the tokens before them: SFT the
completion, DPO/KTO the chosen and rejected completions, PPO/GRPO/RLOO the sampled response,
eval the response again under a reference. All of them call :func:`token_logprobs` (or its
rollout form :func:`response_forward`), so one check (:func:`keep_kwargs`) decides whether
the model computes logits for the scored positions only (``logits_to_keep``) for the whole
package: a plain causal LM, a PEFT/LoRA model and the value-head model are treated alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algos import logprobs_from_logits
from ..models.compat import note_logits_to_keep
from .batch import RolloutBatch, Seq2SeqRolloutBatch


def keep_kwargs(model, keep, where: str = "the forward pass") -> dict:
    """``{"logits_to_keep": keep}`` when ``model``'s forward can compute the LM head on its last
    ``keep`` positions only (or, for a (B, T) bool tensor, on its True positions), else ``{}`` (said
    once per model class in the log: same results, slower). ``where`` names the caller in that
    message. ``keep <= 0`` means all positions."""
    if (isinstance(keep, torch.Tensor) or keep > 0) and note_logits_to_keep(model, where):
        return {"logits_to_keep": keep}
    return {}


@dataclass
class RegionOutput:
    logprobs: torch.Tensor              # (B, K) float32: log p(target_k | tokens before it)
    logits: torch.Tensor                # (B, K, V) the logits behind them (divided by the temperature)
    values: torch.Tensor | None = None  # (B, K) float32 from a value-head model, else None


def token_logprobs(model, input_ids: torch.Tensor, targets: torch.Tensor, *, attention_mask=None, position_ids=None,
                   temperature: float = 1.0, where: str = "the forward pass", **forward_kwargs) -> RegionOutput:
    """Log-probs of ``targets`` (B, K) predicted by the last K positions of ``input_ids`` (B, T).

    Position ``T - K + k`` predicts ``targets[:, k]``, so for next-token scoring feed the
    sequence without its last token and pass the last K tokens as targets. ``targets`` must
    be valid ids (clamp ignore-index labels to 0 and mask them afterwards). ``model`` is a
    causal LM (``.logits``), a PEFT model around one, or ``AutoModelForCausalLMWithValueHead``
    (a ``(logits, loss, values)`` tuple: its values come back too). Logits are divided by
    ``temperature`` first, as sampling with that temperature did (TRL's GRPO does the same).
    """
    K = targets.shape[1]
    inputs = dict(input_ids=input_ids, use_cache=False, **forward_kwargs)
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    out = model(**inputs, **keep_kwargs(model, K, where))
    logits, values = (out[0], out[2]) if isinstance(out, tuple) else (out.logits, None)
    logits = logits[:, -K:]  # (B, K, V); a model without logits_to_keep returned every position
    if temperature != 1.0:
        logits = logits / temperature
    values = values[:, -K:].float() if values is not None else None  # (B, K)
    return RegionOutput(logprobs_from_logits(logits, targets), logits, values)


def response_forward(model, batch: RolloutBatch, *, temperature: float = 1.0,
                     where: str = "the rollout forward") -> RegionOutput:
    """:func:`token_logprobs` of a rollout's response tokens (B, R) in ``build_batch``'s layout."""
    return token_logprobs(model, batch.input_ids[:, :-1], batch.response_ids,
                          attention_mask=batch.attention_mask[:, :-1], position_ids=batch.position_ids[:, :-1],
                          temperature=temperature, where=where)


def response_logprobs(model, batch: RolloutBatch, *, temperature: float = 1.0, with_logits: bool = False):
    """Log-probs (B, R) float32 of the response tokens, or ``(logprobs, logits (B, R, V))``."""
    out = response_forward(model, batch, temperature=temperature)
    return (out.logprobs, out.logits) if with_logits else out.logprobs


def forward_batch(model, batch, critic=None):
    """PPO's forward: log-probs (B, R), values (B, R) and logits (B, R, V) of the response tokens.

    ``model`` is an ``AutoModelForCausalLMWithValueHead`` (or its seq2seq sibling); with a
    separate ``critic`` (``CriticModel``) the values come from the critic instead of the shared head.
    """
    if isinstance(batch, Seq2SeqRolloutBatch):  # the decoder sees only the response: nothing to cut
        logits, _, values = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                  decoder_input_ids=batch.decoder_input_ids,
                                  decoder_attention_mask=batch.decoder_attention_mask, use_cache=False)
        return logprobs_from_logits(logits, batch.response_ids), values.float(), logits  # (B, R) each, (B, R, V)
    out = response_forward(model, batch, where="the PPO forward")
    values = out.values
    if critic is not None:
        R = batch.response_length
        values = critic(input_ids=batch.input_ids[:, :-1], attention_mask=batch.attention_mask[:, :-1],
                        position_ids=batch.position_ids[:, :-1], logits_to_keep=R)[:, -R:].float()  # (B, R)
    return out.logprobs, values, out.logits
