"""PPO inputs checked before any model work: ``step``'s lists, ``train``'s arguments, TRL 0.11's trainer
checks, and the model's context length and vocabulary size they are checked against.

The rollout layout itself (``RolloutBatch``, ``build_batch``) and its forward pass live in
``rlhfkit.rollout``; they are re-exported here for code that imported them from this module.
"""

from __future__ import annotations

import math
import warnings

import torch
from transformers import PreTrainedModel

from ..rollout import (RolloutBatch, Seq2SeqRolloutBatch, build_batch, build_seq2seq_batch,  # noqa: F401
                       forward_batch)  # re-exported: they lived here before rlhfkit.rollout


def _as_token_tensor(x, what: str, i: int, device, vocab_size: int | None) -> torch.Tensor:
    try:
        t = torch.as_tensor(x, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{what}[{i}] must be a 1-D tensor of token ids, got {type(x).__name__} ({err})") from None
    if t.dim() != 1:
        raise ValueError(f"{what}[{i}] must be a 1-D tensor of token ids, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"{what}[{i}] must hold integer token ids, got dtype {t.dtype}")
    if len(t) and vocab_size is not None:
        lo, hi = int(t.min()), int(t.max())  # one sync per tensor, before any model work
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{what}[{i}] holds token id {bad}, outside the model's vocabulary of {vocab_size} "
                             f"(valid ids 0..{vocab_size - 1}); was it encoded with another tokenizer?")
    return t.long()


def _as_score(s, i: int) -> torch.Tensor:
    if isinstance(s, (str, bytes)):
        raise TypeError(f"scores[{i}] is the string {s!r}: every score must be a number or a tensor "
                        "(convert with float(...))")
    try:
        t = torch.as_tensor(s, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"scores[{i}] must be a number or a 0-/1-element tensor, got {type(s).__name__} "
                        f"({err})") from None
    if t.dim() > 1:  # TRL's rule: a [[1.0]] score is a shape bug upstream, not a scalar
        raise ValueError(f"Scores must be 1-dimensional - got {t.dim()} dimensions for scores[{i}] "
                         f"(shape {tuple(t.shape)}); pass one 0-d or 1-element 1-d tensor per response")
    if t.numel() != 1:
        raise ValueError(f"scores[{i}] must be a scalar (one number per response), got shape {tuple(t.shape)}")
    if not math.isfinite(float(t)):
        raise ValueError(f"scores[{i}] is {float(t)}: every score must be a finite number")
    return t.reshape(())


def check_step_inputs(queries, responses, scores, response_masks, batch_size: int | None, max_length: int | None,
                      device, vocab_size: int | None = None):
    """Validate ``step``'s arguments; returns (queries, responses, scores (B,), masks or None).

    ``response_masks[i]`` is 1 on the tokens of ``responses[i]`` the policy sampled and 0 on
    the ones inserted (tool results, observations); any other value is refused.

    Runs before any model work, so a bad token id or score fails here with its index, not
    deep inside an embedding lookup.
    """
    for name, value in (("queries", queries), ("responses", responses), ("scores", scores)):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list of tensors, got {type(value).__name__}")
    if not (len(queries) == len(responses) == len(scores)):
        raise ValueError(f"queries, responses and scores must have the same length, got "
                         f"{len(queries)}, {len(responses)} and {len(scores)}")
    if batch_size is not None and len(queries) != batch_size:
        raise ValueError(f"step() got {len(queries)} samples but PPOConfig.batch_size is {batch_size}; "
                         "pass exactly batch_size samples or change the config")
    if not queries:
        raise ValueError("step() got no samples: queries, responses and scores are empty")
    queries = [_as_token_tensor(q, "queries", i, device, vocab_size) for i, q in enumerate(queries)]
    responses = [_as_token_tensor(r, "responses", i, device, vocab_size) for i, r in enumerate(responses)]
    values = [_as_score(s, i) for i, s in enumerate(scores)]
    for i, (q, r) in enumerate(zip(queries, responses)):
        if len(q) == 0:
            raise ValueError(f"queries[{i}] is empty: a query needs at least one token (e.g. BOS)")
        if len(r) == 0:
            raise ValueError(f"responses[{i}] is empty: drop the sample or score a response of at least one token")
        if max_length is not None and len(q) + len(r) > max_length:
            raise ValueError(f"queries[{i}] + responses[{i}] are {len(q)} + {len(r)} tokens, longer than the model's "
                             f"context of {max_length}; truncate the query or lower max_new_tokens")
    if response_masks is not None:
        if len(response_masks) != len(responses):
            raise ValueError(f"response_masks has {len(response_masks)} entries for {len(responses)} responses")
        response_masks = [torch.as_tensor(m, device=device) for m in response_masks]
        for i, (m, r) in enumerate(zip(response_masks, responses)):
            if m.shape != r.shape:
                raise ValueError(f"response_masks[{i}] has shape {tuple(m.shape)}, responses[{i}] {tuple(r.shape)}")
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"response_masks[{i}] holds values other than 0 and 1: 1 marks a token the policy "
                                 "sampled, 0 an inserted one (a tool result, an observation)")
    return queries, responses, torch.stack(values).to(device), response_masks


def check_token_rewards(token_rewards, responses, masks, device) -> list[torch.Tensor]:
    """``step``'s ``token_rewards``: one finite 1-D float tensor per response, 0 on inserted tokens."""
    if not isinstance(token_rewards, (list, tuple)) or len(token_rewards) != len(responses):
        got = len(token_rewards) if isinstance(token_rewards, (list, tuple)) else type(token_rewards).__name__
        raise ValueError(f"token_rewards must be a list of one tensor per response ({len(responses)}), got {got}")
    out = []
    for i, (t, r) in enumerate(zip(token_rewards, responses)):
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.shape != r.shape:
            raise ValueError(f"token_rewards[{i}] has shape {tuple(t.shape)}, responses[{i}] {tuple(r.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"token_rewards[{i}] holds a value that is not a finite number")
        if masks is not None:
            inserted = (masks[i] == 0) & (t != 0)
            if bool(inserted.any()):
                raise ValueError(f"token_rewards[{i}] puts a reward on token {int(inserted.nonzero()[0])}, which "
                                 f"response_masks[{i}] marks as inserted (0); put it on a policy token (the last "
                                 "one of the turn it rewards)")
        out.append(t)
    return out


def check_train_inputs(reward_fn, prompts, multi_turn: bool = False) -> None:
    """``PPOTrainer.train``'s arguments: a callable and a list of prompt strings (a bare string is an error).

    ``multi_turn`` (tools or environments): prompts may also be message lists, and ``reward_fn``
    None (the environment's reward alone; checked once the environment is built)."""
    if multi_turn:
        if reward_fn is not None and not callable(reward_fn):
            raise TypeError(f"train(reward_fn, prompts): reward_fn must be callable (prompts, completions) -> scores, "
                            f"or None with an environment that gives a reward, got {type(reward_fn).__name__}")
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)):
            raise TypeError(f"train(reward_fn, prompts): prompts must be a list of strings or message lists, got "
                            f"{type(prompts).__name__}")
        for i, p in enumerate(prompts):
            messages = isinstance(p, (list, tuple)) and all(isinstance(m, dict) and "role" in m and "content" in m
                                                            for m in p)
            if not (isinstance(p, str) or (messages and p)):
                raise TypeError(f"train(reward_fn, prompts): prompts[{i}] is {type(p).__name__}; each prompt is a "
                                "string or a list of {'role': ..., 'content': ...} messages")
        return
    if not callable(reward_fn):
        raise TypeError(f"train(reward_fn, prompts): reward_fn must be callable (prompts, responses) -> scores, "
                        f"got {type(reward_fn).__name__}")
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__") or not all(
            isinstance(p, str) for p in prompts):
        bad = type(prompts).__name__ if not hasattr(prompts, "__iter__") or isinstance(prompts, (str, bytes)) else next(
            f"prompts[{i}] is {type(p).__name__}" for i, p in enumerate(prompts) if not isinstance(p, str))
        raise TypeError(f"train(reward_fn, prompts): prompts must be a list of strings, got {bad}; "
                        "wrap a single prompt in a list: train(reward_fn, [\"the cat\"])")


# ---------------------------------------------------------------- trainer arguments (TRL 0.11.4's checks)
def check_trainer_inputs(config, model, ref_model, tokenizer, dataset, lr_scheduler, num_shared_layers):
    """TRL's argument checks and warnings for ``PPOTrainer``; returns (model, ref_model).

    A bare causal LM is wrapped in a value head (an rlhfkit convenience); anything else
    that is not a value-head model is refused with TRL's message.
    """
    from transformers import PreTrainedTokenizerBase

    from ..models import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead
    from .ppo_config import PPOConfig

    supported = (AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead)
    if not isinstance(config, PPOConfig):
        raise ValueError(f"config must be a PPOConfig, got {type(config)}")
    if model is None:
        raise ValueError("PPOTrainer needs a model: AutoModelForCausalLMWithValueHead.from_pretrained(path)")
    if not isinstance(model, supported) and _is_causal_lm(model):
        model = AutoModelForCausalLMWithValueHead(model)
    if not isinstance(model, supported):
        raise ValueError(f"model must be a PreTrainedModelWrapper, got {type(model)} - supported architectures are: "
                         f"{supported}")
    if ref_model is not None and not isinstance(ref_model, supported):
        if not _is_causal_lm(ref_model):
            raise ValueError(f"ref_model must be a PreTrainedModelWrapper or `None`, got {type(ref_model)} - "
                             f"supported architectures are: {supported} ")
        ref_model = AutoModelForCausalLMWithValueHead(ref_model)
    if ref_model is not None and num_shared_layers is not None:
        warnings.warn("num_shared_layers is ignored when ref_model is provided. Two different models are used for the "
                      "model and the reference model and no layers are shared.", UserWarning, stacklevel=3)
    if tokenizer is None or not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ValueError("tokenizer must be a PreTrainedTokenizerBase like a PreTrainedTokenizer or a "
                         f"PreTrainedTokenizerFast, got {type(tokenizer)}")
    if dataset is None:
        warnings.warn("No dataset is provided. Make sure to set config.batch_size to the correct value before "
                      "training (fine with train(reward_fn, prompts) or your own batches).", UserWarning, stacklevel=3)
    elif isinstance(dataset, (str, bytes)) or not hasattr(dataset, "__getitem__"):
        raise ValueError(f"dataset must be a torch.utils.data.Dataset or datasets.Dataset, got {type(dataset)}")
    if lr_scheduler is not None and not isinstance(lr_scheduler, torch.optim.lr_scheduler.LRScheduler):
        raise ValueError("lr_scheduler must be a torch.optim.lr_scheduler._LRScheduler or "
                         f"torch.optim.lr_scheduler.LRScheduler (for torch >= 2.0), got {type(lr_scheduler)}")
    return model, ref_model


def _is_causal_lm(model) -> bool:
    if not isinstance(model, PreTrainedModel) or getattr(model.config, "is_encoder_decoder", False):
        return False
    return model.get_output_embeddings() is not None


def max_positions(config) -> int | None:
    """The model's context length, or None when the config does not say."""
    if getattr(config, "is_encoder_decoder", False):
        return None  # query and response live in separate encoder and decoder sequences
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    return None


def vocab_size(model) -> int | None:
    """Rows of the output embedding (what an id must index), else ``config.vocab_size``."""
    inner = getattr(model, "pretrained_model", model)
    get_out = getattr(inner, "get_output_embeddings", None)
    out = get_out() if get_out is not None else None
    weight = getattr(out, "weight", None)
    if weight is not None and weight.dim() == 2:
        return int(weight.shape[0])
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(size) if size else None
