"""Where every trainer's responses come from: one dispatcher over the three ways to sample.

``sample_responses`` picks, in this order, a rollout engine (vLLM's surface: ``generate`` /
``sync_weights``), the lean decode loop of ``rollout.decode`` (which also keeps the sampled tokens'
log-probs and values, for PPO's reuse), or Hugging Face ``generate``; ``PPOTrainer.generate`` and
the online trainers' ``Completions`` both call it.

``Completions`` holds the online trainers' choice for ``online.OnlineRun``: ``sample(model, queries)`` returns
the responses (the stop token kept) and, from an engine, the engine's log-probability of each
sampled token (``None`` from ``generate``); ``sync(model, step)`` pushes the policy into the
engine once per optimiser step that changed it, so every generation samples from the weights
being trained. The engine is ``rlhfkit.rollout.vllm.VLLMRollout`` (colocated; untested on GPU
hardware, see that module) or anything with its ``generate``/``sync_weights`` surface.
"""

from __future__ import annotations

import dataclasses

import torch

from ..models.reference import is_peft_model
from .decode import generate_with_logprobs
from .generate import generate_responses


def sample_responses(model, queries: list[torch.Tensor], generation_kwargs: dict, *, pad_token_id: int, eos_token_id,
                     batch_size: int, return_prompt: bool = False, engine=None, settings=None, lean=None,
                     remove_padding: bool = True, length_sampler=None, use_reference: bool = False):
    """Responses to ``queries`` (1-D token tensors): ``(responses, engine_logprobs, records)``.

    ``engine``: sample with it (``settings``: its ``SamplingSettings``, else made from
    ``generation_kwargs``); ``engine_logprobs`` are then the engine's log-probs of the sampled tokens.
    ``lean``: the decode loop's settings (``rollout.decode.lean_settings``); ``records`` are then its
    per-response ``(query, response, logprobs, values)`` for ``RolloutCache``. Otherwise Hugging Face
    ``generate`` (``generate_responses``: ``remove_padding``, ``length_sampler``, ``use_reference``).
    Responses end after their first EOS (kept); ``return_prompt`` puts the query in front.
    """
    if engine is not None:
        if settings is None:
            from .vllm import SamplingSettings

            settings = SamplingSettings.from_generation_kwargs(generation_kwargs, eos_token_id)
        out = engine.generate([q.tolist() for q in queries], settings)
        device = queries[0].device
        responses = [r.to(device) for r in out.response_ids]
        if return_prompt:
            responses = [torch.cat([q, r]) for q, r in zip(queries, responses)]
        return responses, [lp.to(device) for lp in out.logprobs], None
    if lean is not None:
        responses, records = generate_with_logprobs(model, queries, lean, pad_token_id=pad_token_id,
                                                    eos_token_id=eos_token_id, batch_size=batch_size,
                                                    return_prompt=return_prompt)
        return responses, None, records
    responses = generate_responses(model, queries, pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                                   batch_size=batch_size, return_prompt=return_prompt, remove_padding=remove_padding,
                                   length_sampler=length_sampler, use_reference=use_reference,
                                   generation_kwargs=generation_kwargs)
    return responses, None, None


def build_engine(config, model, dtype: str = "bfloat16"):
    """A colocated ``VLLMRollout`` on the policy's folder or hub id (``use_vllm=True``), with the
    config's ``vllm_gpu_memory_utilization`` and ``vllm_sync_timeout_s``; LoRA when the policy has it."""
    from .vllm import VLLMRollout

    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not path:
        raise ValueError("use_vllm=True needs the policy's folder or hub id to start vLLM, but this model was built "
                         "in memory (model.config._name_or_path is empty): save_pretrained it and pass the folder, "
                         "or pass rollout_engine=VLLMRollout(...) yourself")
    return VLLMRollout.from_pretrained(path, dtype=dtype, gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                                       enable_lora=is_peft_model(model), sync_timeout_s=config.vllm_sync_timeout_s)


class Completions:
    """``sample(model, queries) -> (responses, engine_logprobs | None)`` and ``sync(model, step)``."""

    def __init__(self, tokenizer, generation_kwargs: dict, engine=None):
        self.tokenizer, self.generation_kwargs, self.engine = tokenizer, generation_kwargs, engine
        self.settings = None
        self.synced_at: int | None = None
        if engine is not None:
            from .vllm import SamplingSettings
            # a generation kwarg the engine cannot honour is refused by name here, before training starts
            self.settings = SamplingSettings.from_generation_kwargs(
                {k: v for k, v in generation_kwargs.items() if v is not None}, tokenizer.eos_token_id)

    def sync(self, model, step: int) -> None:
        """Push ``model`` into the engine unless it already holds the weights of optimiser step ``step``."""
        if self.engine is not None and self.synced_at != step:
            self.engine.sync_weights(model)
            self.synced_at = step

    def sample(self, model, queries: list[torch.Tensor], max_new_tokens: int | None = None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """One response per query; ``max_new_tokens`` overrides the configured length (a multi-turn
        episode's next turn gets what is left of its token budget)."""
        kwargs, settings = self.generation_kwargs, self.settings
        if max_new_tokens is not None:
            kwargs = {**kwargs, "max_new_tokens": max_new_tokens}
            if settings is not None:
                settings = dataclasses.replace(settings, max_new_tokens=max_new_tokens,
                                               min_new_tokens=min(settings.min_new_tokens, max_new_tokens))
        responses, engine_logprobs, _ = sample_responses(
            model, queries, kwargs, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, batch_size=len(queries), engine=self.engine,
            settings=settings)
        return responses, engine_logprobs

def padded_rows(rows: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The engine's per-row log-probs as a tensor shaped and typed like ``like`` (N, R), NaN-padded."""
    out = torch.full_like(like, float("nan"))  # (N, R)
    for i, row in enumerate(rows):
        n = min(len(row), like.shape[1])
        out[i, :n] = row.to(like)[:n]
    return out


def engine_gap(old: torch.Tensor, engine: torch.Tensor, mask: torch.Tensor) -> dict:
    """|trainer - engine| log-prob of the sampled tokens (TRL's ``sampling/sampling_logp_difference``).

    ``old`` (N, R) from the trainer's forward, ``engine`` (N, R) the engine's own (``padded_rows``);
    positions the engine gave no number for (NaN) and masked ones are left out.
    """
    keep = mask.bool() & ~engine.isnan()
    diff = (old - engine).abs()[keep]
    if diff.numel() == 0:
        return {}
    return {"sampling/sampling_logp_difference/mean": diff.mean(), "sampling/sampling_logp_difference/max": diff.max()}
