"""PPO step statistics under their classic key names, and the ptx (SFT) data stream.

Stats are gathered as tensors during the step and moved to the host once at the end,
so a step costs one synchronisation, not one per minibatch.
"""

from __future__ import annotations

import itertools
import warnings

import torch
from torch.utils.data import DataLoader

from .. import algos
from ..rollout import token_logprobs


def _std(x: torch.Tensor) -> torch.Tensor:
    # Unbiased std, but 0 (not NaN) for a single value: a batch of one is legal.
    return x.std(correction=1 if x.numel() > 1 else 0)


def summarise_minibatches(minibatch_stats: list[dict]) -> dict:
    """Average each per-minibatch stat; flatten the per-token ones (advantages, ratio)."""
    out = {}
    for key in minibatch_stats[0]:
        values = [s[key] for s in minibatch_stats]
        if values[0].dim() == 0:
            out[key] = torch.stack(values).mean()
        else:
            out[key] = torch.cat([v.flatten() for v in values])
    return out


def record_step_stats(*, scores, raw_scores, logprobs, ref_logprobs, kl, non_score_reward, mask, kl_coef,
                      queries, responses, train_stats, to_host: bool = True) -> dict:
    """The classic ``step()`` stats dict: floats for scalars, numpy arrays for distributions
    (tensors with ``to_host=False``). Warns, as TRL, when the mean KL drops below -1."""
    mask = mask.to(kl.dtype)
    kl_per_seq = (kl * mask).sum(-1)  # (B,)
    query_lens = torch.tensor([len(q) for q in queries], dtype=torch.float32)
    response_lens = torch.tensor([len(r) for r in responses], dtype=torch.float32)
    stats = {
        "objective/kl": kl_per_seq.mean(),
        "objective/kl_dist": kl_per_seq,
        "objective/logprobs": logprobs,
        "objective/ref_logprobs": ref_logprobs,
        "objective/kl_coef": torch.tensor(float(kl_coef)),
        "objective/entropy": (-logprobs * mask).sum(-1).mean(),
        "ppo/mean_non_score_reward": algos.masked_mean(non_score_reward, mask),
        "ppo/mean_scores": scores.mean(),
        "ppo/std_scores": _std(scores),
        "ppo/mean_raw_scores": raw_scores.mean(),
        "tokens/queries_len_mean": query_lens.mean(),
        "tokens/queries_len_std": _std(query_lens),
        "tokens/queries_dist": query_lens,
        "tokens/responses_len_mean": response_lens.mean(),
        "tokens/responses_len_std": _std(response_lens),
        "tokens/responses_dist": response_lens,
    }
    for key, value in train_stats.items():
        stats[f"ppo/{key}"] = value
    returns_var = train_stats["returns/var"]
    stats["ppo/val/var_explained"] = 1 - train_stats["val/error"] / returns_var.clamp_min(1e-8)
    if not to_host:
        return stats
    # One host transfer for everything: scalars become floats, the rest numpy arrays.
    stats = {k: (v.detach().float().cpu().numpy() if v.dim() else float(v)) for k, v in stats.items()}
    if stats["objective/kl"] < -1.0:
        warnings.warn(f"KL divergence is starting to become negative: {stats['objective/kl']:.2f} - this might be a "
                      "precursor for failed training. Sometimes this happens because the generation kwargs are not "
                      "correctly set (e.g. top_k/min_length); please check them, or review your hyperparameters.",
                      stacklevel=3)
    return stats


class PTXStream:
    """An endless shuffled stream of pre-training / SFT batches for PPO-ptx (Ouyang et al. 2022, eq. 2).

    ``dataset`` items are strings, dicts with ``"text"``, or dicts with ``"input_ids"``.
    ``consumed`` counts the batches served so far: the stream's data position in a checkpoint.
    """

    def __init__(self, dataset, tokenizer, batch_size: int, seed: int, device):
        if len(dataset) == 0:
            raise ValueError("ptx_dataset is empty")
        self.tokenizer, self.device = tokenizer, device
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=self._collate,
                            generator=torch.Generator().manual_seed(seed))
        self._batches = itertools.chain.from_iterable(itertools.repeat(loader))
        self.consumed = 0

    def fast_forward(self, consumed: int) -> None:
        """Skip to where a stream of the same data and seed stood after ``consumed`` batches (a resume)."""
        if self.consumed > consumed:
            raise ValueError(f"this trainer's ptx stream has already served {self.consumed} batches, the checkpoint "
                             f"{consumed}; resume into a fresh PPOTrainer")
        # Re-collating the skipped batches costs tokenizer time only, no model calls.
        self._batches = itertools.islice(self._batches, consumed - self.consumed, None)
        self.consumed = consumed

    def _collate(self, items):
        if all(isinstance(x, str) for x in items):
            texts = items
        elif all(isinstance(x, dict) and "text" in x for x in items):
            texts = [x["text"] for x in items]
        elif all(isinstance(x, dict) and "input_ids" in x for x in items):
            ids = [torch.as_tensor(x["input_ids"]).long() for x in items]
            width = max(len(i) for i in ids)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, i in enumerate(ids):
                input_ids[row, : len(i)], attention_mask[row, : len(i)] = i, 1
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        else:
            raise ValueError("ptx_dataset items must be strings, dicts with 'text', or dicts with 'input_ids'")
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def loss(self, model) -> torch.Tensor:
        """Mean next-token cross-entropy of the policy on the next ptx batch (padding ignored)."""
        batch = {k: v.to(self.device) for k, v in next(self._batches).items()}
        self.consumed += 1
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        ids = batch["input_ids"]  # (b, T)
        logprobs = token_logprobs(model, ids[:, :-1], ids[:, 1:], attention_mask=batch["attention_mask"][:, :-1],
                                  where="the ptx loss").logprobs  # (b, T-1)
        return -algos.masked_mean(logprobs, (labels[:, 1:] != -100).float())

