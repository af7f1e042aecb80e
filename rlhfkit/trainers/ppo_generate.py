"""``PPOTrainer.generate``: sample responses with Hugging Face ``generate``, the lean decode loop
(which also keeps the sampled tokens' log-probs and values for ``step``) or a rollout engine.

Plain functions of the trainer; ``PPOTrainer`` binds ``generate`` as its method.
"""

from __future__ import annotations

import torch

from ..rollout import generate_responses
from ..rollout.decode import generate_with_logprobs, lean_settings


def generate(trainer, query_tensor, length_sampler=None, batch_size: int = 4, return_prompt: bool = True,
             generate_ref_response: bool = False, remove_padding: bool = True, **generation_kwargs):
    """Sample responses. A list of 1-D queries gives a list of 1-D tensors (left-padded
    batches of ``batch_size``, cut after the first EOS); a single 1-D query gives a
    ``(1, L)`` tensor. With ``generate_ref_response`` also returns the reference's."""
    single = isinstance(query_tensor, torch.Tensor)
    if single and query_tensor.dim() != 1:
        raise ValueError(f"query_tensor must be a 1-D tensor or a list of 1-D tensors, got shape "
                         f"{tuple(query_tensor.shape)}; pass list(batch) for a batch")
    queries = [query_tensor] if single else list(query_tensor)
    if not queries:
        raise ValueError("generate() got an empty list of queries")
    queries = [q.to(trainer.accelerator.device) for q in queries]
    kwargs = dict(pad_token_id=trainer.pad_token_id, eos_token_id=trainer.tokenizer.eos_token_id,
                  batch_size=batch_size, return_prompt=return_prompt, remove_padding=remove_padding and not single,
                  length_sampler=length_sampler)
    model = trainer.accelerator.unwrap_model(trainer._train_model)
    if trainer.rollout_engine is not None and not generate_ref_response and length_sampler is None:
        from ..rollout.vllm import engine_generate_responses
        out = engine_generate_responses(trainer.rollout_engine, queries, generation_kwargs,
                                        eos_token_id=trainer.tokenizer.eos_token_id, return_prompt=return_prompt)
        return out[0].unsqueeze(0) if single else out
    lean = lean_generation(trainer, model, generation_kwargs, length_sampler, remove_padding and not single)
    with trainer.mechanics.autocast():
        if lean is not None:
            out, records = generate_with_logprobs(model, queries, lean, pad_token_id=trainer.pad_token_id,
                                                  eos_token_id=trainer.tokenizer.eos_token_id,
                                                  batch_size=batch_size, return_prompt=return_prompt)
            trainer._rollout_cache.store(trainer._policy_version, records)
        else:
            out = generate_responses(model, queries, **kwargs, generation_kwargs=generation_kwargs)
        ref = None
        if generate_ref_response:
            ref_model = trainer.ref_model if trainer.ref_model is not None else model
            ref = generate_responses(ref_model, queries, use_reference=trainer.ref_model is None, **kwargs,
                                     generation_kwargs=generation_kwargs)
    if single:
        out = out[0].unsqueeze(0)
        ref = ref[0].unsqueeze(0) if ref is not None else None
    return (out, ref) if generate_ref_response else out

# ------------------------------------------------------------------ the PPO step


def lean_generation(trainer, model, generation_kwargs, length_sampler, remove_padding: bool):
    """The generation config when ``generate`` may sample with ``rollout.decode`` and keep the
    sampled tokens' log-probs and values for ``step``; None to use Hugging Face generate."""
    cfg = trainer.config
    if (not trainer._reuse_rollouts or cfg.mixed_precision != "no" or trainer.is_encoder_decoder
            or trainer.critic is not None or trainer.is_peft_model or length_sampler is not None or not remove_padding
            or cfg.kl_penalty == "full"):
        return None  # bf16 numerics differ between cached decode and full forward; the others need more
    return lean_settings(model, dict(generation_kwargs, pad_token_id=generation_kwargs.get(
        "pad_token_id", trainer.pad_token_id)))
