"""Did it get better? Sampling, reward, KL to a reference, win rate, length, RM accuracy.

Mostly pure functions on lists and tensors; the two that touch a model (``sample`` and
``response_logprobs``) run without gradients in batches.

- KL(pi || pi_ref) per response is the sum over its tokens of a per-token estimator on
  the log-probs of tokens sampled from pi (``rlhfkit.algos.kl_penalty``; k3 by default:
  unbiased and never negative, Schulman 2020). Sampling must be plain (temperature 1, no
  top-k / top-p) for the estimate to be of pi itself.
- Win rate of A over B: the share of paired samples (same prompt, same position) where
  A's score beats B's; ties count half.
- Reward-model accuracy on labelled pairs: the share with r(chosen) > r(rejected) (ties
  half); precision / recall / F1 treat "the first response is better" as the positive
  class after showing each pair in a seeded random order (so both classes occur).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .. import algos
from .. import rollout
from ..rollout import build_batch
from ..rollout.sampling import sample_responses
from ..trainers.reward import classification_metrics

Scorer = Callable[[list[str], list[str]], Sequence[float]]


@dataclass
class Samples:
    """Responses of one policy: ``prompts[k]`` answered by ``texts[k]`` (token ids in ``response_ids[k]``)."""

    prompts: list[str]
    query_ids: list[torch.Tensor]
    response_ids: list[torch.Tensor]
    texts: list[str]
    seconds: float = 0.0
    scores: dict[str, list[float]] = field(default_factory=dict)  # scorer name -> one score per sample

    @property
    def lengths(self) -> list[int]:
        return [len(r) for r in self.response_ids]


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], *, n_per_prompt: int = 1, max_new_tokens: int = 32,
           batch_size: int = 64, seed: int = 0, **generation_kwargs) -> Samples:
    """``n_per_prompt`` sampled responses per prompt, in the order ``[p0, p1, ..., p0, p1, ...]``.

    Plain sampling by default (temperature 1, no top-k/top-p); responses stop after EOS.
    The same ``seed`` and prompts give the same order for every policy, so samples of two
    policies pair up for a win rate.
    """
    if not prompts:
        raise ValueError("sample() needs at least one prompt")
    start = time.time()
    flat = [p for _ in range(n_per_prompt) for p in prompts]
    queries = [torch.tensor(tokenizer(p)["input_ids"], dtype=torch.long) for p in flat]
    device = next(model.parameters()).device
    queries = [q.to(device) for q in queries]
    kwargs = dict(do_sample=True, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, **generation_kwargs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(seed)
    responses, _, _ = sample_responses(model, queries, kwargs, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                                       batch_size=batch_size)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return Samples(flat, [q.cpu() for q in queries], [r.cpu() for r in responses], texts, time.time() - start)


@torch.no_grad()
def response_logprobs(model, query_ids: list[torch.Tensor], response_ids: list[torch.Tensor], pad_token_id: int,
                      batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of each response token under ``model`` (a plain causal LM): ``(N, R)``, and the mask ``(N, R)``.

    Same layout as PPO's rollouts (left-padded query, right-padded response); empty
    responses get an all-zero mask row.
    """
    device = next(model.parameters()).device
    R = max(1, max(len(r) for r in response_ids))
    logprobs = torch.zeros(len(response_ids), R)
    mask = torch.zeros(len(response_ids), R)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(query_ids), batch_size):
            idx = range(start, min(start + batch_size, len(query_ids)))
            # an empty response is laid out as one pad token and masked out
            resp = [response_ids[i] if len(response_ids[i]) else torch.tensor([pad_token_id]) for i in idx]
            batch = build_batch([query_ids[i].to(device) for i in idx], [r.to(device) for r in resp], None,
                                pad_token_id)
            r = batch.response_length
            lp = rollout.response_logprobs(model, batch)  # (b, r)
            m = batch.mask * torch.tensor([float(len(response_ids[i]) > 0) for i in idx], device=device)[:, None]
            logprobs[start:start + len(idx), :r] = lp.float().cpu()
            mask[start:start + len(idx), :r] = m.cpu()
    finally:
        model.train(was_training)
    return logprobs, mask


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                estimator: str = "k3") -> torch.Tensor:
    """Per-sequence KL estimate: ``sum_t mask_t * kl_penalty(logprobs, ref_logprobs)_t``.

    Shapes: (N, R), (N, R), (N, R) -> (N,). ``estimator``: a name in ``algos.KL_ESTIMATORS``.
    """
    return (algos.kl_penalty(logprobs, ref_logprobs, estimator) * mask).sum(-1)  # (N,)


def kl_to_reference(policy, reference, samples: Samples, pad_token_id: int, estimator: str = "k3",
                    batch_size: int = 64) -> list[float]:
    """Per-sample KL(policy || reference) of ``samples`` (which must come from ``policy``)."""
    lp, mask = response_logprobs(policy, samples.query_ids, samples.response_ids, pad_token_id, batch_size)
    ref_lp, _ = response_logprobs(reference, samples.query_ids, samples.response_ids, pad_token_id, batch_size)
    return sequence_kl(lp, ref_lp, mask, estimator).tolist()


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> float:
    """Share of paired samples where ``a`` beats ``b``; ties count half."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"win_rate needs two non-empty lists of equal length, got {len(scores_a)} and "
                         f"{len(scores_b)}")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b))
    return wins / len(scores_a)


def distribution(values: Sequence[float]) -> dict:
    """Mean, std, min, 10th / 50th / 90th percentile and max of ``values`` (population std)."""
    if not values:
        raise ValueError("distribution() of an empty list")
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    mean = sum(ordered) / n

    def pct(q: float) -> float:  # linear interpolation, as numpy's default
        pos = q * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in ordered) / n), "min": ordered[0],
            "p10": pct(0.1), "p50": pct(0.5), "p90": pct(0.9), "max": ordered[-1]}


def length_stats(lengths: Sequence[int]) -> dict:
    """``distribution`` of response lengths (tokens) plus the share of empty responses."""
    stats = distribution(lengths)
    stats["empty_share"] = sum(1 for n in lengths if n == 0) / len(lengths)
    return stats


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs with ``chosen > rejected``; ties count half."""
    return win_rate(chosen, rejected)


def pair_classification(chosen: Sequence[float], rejected: Sequence[float], threshold: float = 0.0,
                        seed: int = 0) -> dict:
    """Accuracy, precision, recall and F1 of a reward model on labelled pairs.

    Each pair is shown as (first, second) in a seeded random order; the label is "first is
    the chosen one" and the prediction is ``r(first) - r(second) > threshold``. Also
    returns ``pairwise_accuracy`` (order-free, ties half) and the number of pairs.
    """
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(f"need equal, non-empty lists of scores, got {len(chosen)} and {len(rejected)}")
    rng = random.Random(seed)
    flips = [rng.random() < 0.5 for _ in chosen]
    diff = torch.tensor([(r - c) if f else (c - r) for c, r, f in zip(chosen, rejected, flips)])
    truth = torch.tensor([not f for f in flips])
    metrics = classification_metrics(diff > threshold, truth)
    metrics["pairwise_accuracy"] = pairwise_accuracy(chosen, rejected)
    metrics["pairs"] = len(chosen)
    return metrics


def reward_model_scorer(model, tokenizer=None, append_eos: bool = True, batch_size: int = 64) -> Scorer:
    """A ``scorer(prompts, responses)`` from a reward model (path or ``RewardModel``).

    ``append_eos``: score ``prompt + response + eos``, the sequences ``RewardTrainer`` trained
    on (its pairs end with EOS and the classifier reads the last token); generated texts are
    decoded without special tokens, so the EOS must be put back.
    """
    from ..models import RewardModel

    rm = model if isinstance(model, RewardModel) else RewardModel(model, tokenizer, batch_size=batch_size)
    eos = rm.tokenizer.eos_token if append_eos and rm.tokenizer.eos_token else ""

    def score(prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        if eos:  # tokenized exactly as RewardTrainer trained (prompt, response + EOS)
            return rm(prompts, responses)
        return rm.score([p + r for p, r in zip(prompts, responses)], add_eos=False)

    score.reward_model = rm
    return score
