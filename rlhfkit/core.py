"""``trl.core`` of TRL <= 0.11: the helpers classic PPO scripts import, with the same names.

``from trl.core import LengthSampler, respond_to_batch`` becomes
``from rlhfkit.core import LengthSampler, respond_to_batch``. The tensor math is not a
second copy: the statistics, log-probs and entropy are ``rlhfkit.algos`` functions under
TRL's names and argument conventions (``axis=``, ``gather=``), so a script gets the same
numbers as with TRL and the same fixes as rlhfkit's trainer (``docs/ppo.md``).

Left out: ``top_k_top_p_filtering`` is kept for ``respond_to_batch`` (Transformers' own
warpers do the work), ``randn_tensor`` (a diffusers helper unrelated to PPO) is not.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers import TopKLogitsWarper, TopPLogitsWarper

from . import algos

WANDB_PADDING = -1  # fill value of stack_dicts, as TRL (W&B histograms skip it)

__all__ = ["LengthSampler", "PPODecorators", "WANDB_PADDING", "add_suffix", "average_torch_dicts", "clip_by_value",
           "convert_to_scalar", "entropy_from_logits", "flatten_dict", "logprobs_from_logits", "masked_mean",
           "masked_var", "masked_whiten", "respond_to_batch", "set_seed", "stack_dicts", "stats_to_np",
           "top_k_top_p_filtering", "whiten"]


# ---------------------------------------------------------------- tensor math (rlhfkit.algos under TRL names)
def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor | None, gather: bool = True) -> torch.Tensor:
    """Log-probabilities of ``labels``: logits (B, T, V), labels (B, T) -> (B, T).

    ``gather=False`` returns the full ``log_softmax(logits)`` (B, T, V), as TRL.
    """
    if not gather:
        return F.log_softmax(logits, dim=-1)
    return algos.logprobs_from_logits(logits, labels)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """``sum(values * mask) / sum(mask)`` over ``axis`` (all when None)."""
    return algos.masked_mean(values, mask, dim=axis)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Masked variance (Bessel-corrected when ``unbiased``); one valid element gives 0, not NaN."""
    if unbiased and mask.sum() == 0:  # TRL's error, so scripts that caught it still do
        raise ValueError("The sum of the mask is zero, which can happen when `mini_batch_size=1`; "
                         "try increase the `mini_batch_size` or `gradient_accumulation_steps`")
    return algos.masked_var(values, mask, unbiased)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean, unit variance over the valid elements (the mean is kept if not ``shift_mean``)."""
    return algos.masked_whiten(values, mask, shift_mean=shift_mean)


def whiten(values: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``masked_whiten`` with every element valid (TRL's unmasked ``whiten``)."""
    return algos.masked_whiten(values, torch.ones_like(values), shift_mean=shift_mean)


def clip_by_value(x: torch.Tensor, tensor_min, tensor_max) -> torch.Tensor:
    """``min(max(x, tensor_min), tensor_max)`` with tensor (or number) bounds."""
    lo = torch.as_tensor(tensor_min, dtype=x.dtype, device=x.device)
    hi = torch.as_tensor(tensor_max, dtype=x.dtype, device=x.device)
    return torch.max(torch.min(x, hi), lo)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: (B, T, V) -> (B, T)."""
    return algos.entropy_from_logits(logits)


# ---------------------------------------------------------------- stats dicts
def flatten_dict(nested: dict, sep: str = "/") -> dict:
    """``{"a": {"b": 1}} -> {"a/b": 1}``; a key containing ``sep`` is an error."""
    flat = {}

    def recurse(nest: Mapping, prefix: str) -> None:
        for k, v in nest.items():
            if sep in k:
                raise ValueError(f"separator '{sep}' not allowed to be in key '{k}'")
            if isinstance(v, Mapping):
                recurse(v, prefix + k + sep)
            else:
                flat[prefix + k] = v

    recurse(nested, "")
    return flat


def convert_to_scalar(stats: dict) -> dict:
    """Tensors and arrays of one element become Python numbers (for TensorBoard); the rest is kept."""
    out = {}
    for k, v in stats.items():
        if isinstance(v, (torch.Tensor, np.ndarray)) and (v.ndim == 0 or (v.ndim == 1 and v.shape[0] == 1)):
            v = v.item()
        out[k] = v
    return out


def stack_dicts(stats_dicts: list[dict]) -> dict:
    """Stack each key's (flattened) tensors into (N, L), padding short ones with ``WANDB_PADDING``."""
    return {k: pad_sequence([torch.flatten(d[k]) for d in stats_dicts], batch_first=True, padding_value=WANDB_PADDING)
            for k in stats_dicts[0]}


def average_torch_dicts(list_of_dicts: list[dict]) -> dict:
    """Element-wise mean of each key's tensors over the dicts."""
    return {k: torch.mean(torch.stack([d[k] for d in list_of_dicts]), dim=0) for k in list_of_dicts[0]}


def add_suffix(input_dict: dict, suffix: str) -> dict:
    """Append ``suffix`` to every key."""
    return {k + suffix: v for k, v in input_dict.items()}


def stats_to_np(stats_dict: dict) -> dict:
    """Tensors become numpy arrays (bf16 via float32); numpy / Python scalars become floats."""
    out = {}
    for k, v in stats_dict.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            v = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
        out[k] = float(v) if np.isscalar(v) and isinstance(v, (int, float, np.number)) else v  # TRL: float('x') raised
    return out


# ---------------------------------------------------------------- sampling and seeding
def top_k_top_p_filtering(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0,
                          filter_value: float = -float("inf"), min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Set logits outside the top-k and outside the nucleus (top-p) to ``filter_value``; (B, V) -> (B, V)."""
    if top_k > 0:
        logits = TopKLogitsWarper(top_k=top_k, filter_value=filter_value, min_tokens_to_keep=min_tokens_to_keep)(
            None, logits)
    if 0 <= top_p <= 1.0:
        logits = TopPLogitsWarper(top_p=top_p, filter_value=filter_value, min_tokens_to_keep=min_tokens_to_keep)(
            None, logits)
    return logits


@torch.no_grad()
def respond_to_batch(model, queries: torch.Tensor, txt_len: int = 20, top_k: int = 0,
                     top_p: float = 1.0) -> torch.Tensor:
    """Sample ``txt_len`` tokens after each query without a cache: queries (B, L) -> (B, txt_len).

    ``model(input_ids)[0]`` must be the logits (a value-head model or a plain causal LM).
    """
    input_ids = queries
    for _ in range(txt_len):
        out = model(input_ids)
        logits = out[0] if isinstance(out, (tuple, list)) else out.logits
        next_logits = top_k_top_p_filtering(logits[:, -1, :].float(), top_k=top_k, top_p=top_p)  # (B, V)
        next_token = torch.multinomial(F.softmax(next_logits, dim=-1), num_samples=1)  # (B, 1)
        input_ids = torch.cat([input_ids, next_token], dim=-1)
    return input_ids[:, -txt_len:]


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA (and other accelerators) too


class LengthSampler:
    """Draw a length uniformly from ``[min_value, max_value)`` with NumPy's global generator (as TRL)."""

    def __init__(self, min_value: int, max_value: int):
        if max_value <= min_value:
            raise ValueError(f"LengthSampler needs min_value < max_value (the range excludes max_value), "
                             f"got {min_value} and {max_value}")
        self.values = list(range(min_value, max_value))

    def __call__(self) -> int:
        return int(np.random.choice(self.values))


class PPODecorators:
    """``with PPODecorators.empty_device_cache():`` frees the accelerator cache on exit when
    ``PPODecorators.optimize_device_cache`` is True (``PPOTrainer`` sets it from the config)."""

    optimize_device_cache = False

    @classmethod
    @contextmanager
    def empty_device_cache(cls):
        yield
        if cls.optimize_device_cache:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            elif hasattr(torch, "xpu") and torch.xpu.is_available():
                torch.xpu.empty_cache()
            gc.collect()
