"""Prompts -> responses -> scores -> tensors: what every method that samples shares (PPO, GRPO, RLOO, eval).

``prompts``: the one prompt reader (``load_prompts``, ``.txt`` included) and the seeded prompt sampler.
``sampling``: ``sample_responses``, the one dispatcher over the three ways to sample: ``generate``
(Hugging Face ``generate``), ``decode`` (a lean sampling loop that keeps each token's log-prob and
value) and ``vllm`` (the optional vLLM engine, imported only when used).
``rewards``: reward functions and reward-model scoring with TRL's contract (``load_reward_funcs``, ``score``).
``batch``: the typed rollout (``RolloutBatch``, ``build_batch``) and its layout. ``logprobs``: token
log-probs over a region (``token_logprobs``, PPO's ``forward_batch``), with the package's one
``logits_to_keep`` check; ``packing``: the same log-probs from padding-free (packed) forward passes.
``evaluate``: held-out evaluation of a policy (``evaluate_policy``) and the
sample-and-score step training shares with it.
``agents``: multi-turn episodes (model turns, tool results, environment observations) with a
policy mask; ``tools``: tool schemas, the call format and calls with a timeout.
"""

from .batch import RolloutBatch, Seq2SeqRolloutBatch, build_batch, build_seq2seq_batch
from .decode import RolloutCache, generate_with_logprobs, lean_settings
from .evaluate import evaluate_policy, sample_and_score
from .generate import generate_responses, left_pad, truncate_after_eos
from .logprobs import (RegionOutput, forward_batch, keep_kwargs, response_forward, response_logprobs,
                       token_logprobs)
from .packing import (PackedLayout, PackedRegion, pack_layout, pack_rows, packed_forward_batch,
                      packed_response_forward, packed_token_logprobs, require_padding_free)
from .vllm import EngineRollout, SamplingSettings, VLLMRollout

__all__ = ["EngineRollout", "PackedLayout", "PackedRegion", "RegionOutput", "RolloutBatch", "RolloutCache",
           "SamplingSettings", "VLLMRollout", "evaluate_policy", "generate_with_logprobs", "lean_settings", "Seq2SeqRolloutBatch", "build_batch",
           "build_seq2seq_batch", "forward_batch", "generate_responses", "keep_kwargs", "left_pad",
           "pack_layout", "pack_rows", "packed_forward_batch", "packed_response_forward", "packed_token_logprobs",
           "require_padding_free", "response_forward", "response_logprobs", "sample_and_score", "token_logprobs",
           "truncate_after_eos"]
