"""Log-probs of the labelled completion tokens of a training batch: what DPO and KTO compare.

A batch holds ``input_ids``, ``attention_mask``, ``labels`` (``data.IGNORE_INDEX`` on prompt and
padding) and ``prompt_lengths``, as ``data.PairCollator`` (chosen rows then rejected rows) and
``data.UnpairedCollator`` (KTO's rows and their mismatched copies) lay it out. DPO's other
forwards of the same batch (prompt-once, padding-free) live in ``dpo.py`` and return what
:func:`completion_logps` returns.
"""

from __future__ import annotations

from .. import algos, data
from ..rollout import token_logprobs


def completion_logps(model, batch):
    """Summed log-probs of the completion tokens and their counts, (2B,) each, plus the per-token
    log-probs (2B, K) and mask (2B, K) for an SFT term, and mean logits per row (2B,).

    Only the positions from the shortest prompt on reach the LM head (``rollout.token_logprobs``).
    """
    labels = batch["labels"]  # (2B, T), -100 on prompt and padding
    T = labels.shape[1]
    K = T - int(batch["prompt_lengths"].min())  # position T-K-1 predicts the first completion token
    targets = labels[:, T - K:]  # (2B, K)
    out = token_logprobs(model, batch["input_ids"][:, :-1], targets.clamp_min(0),
                         attention_mask=batch["attention_mask"][:, :-1], where="the DPO forward")
    logits, logprobs = out.logits, out.logprobs  # (2B, K, V), (2B, K)
    mask = (targets != data.IGNORE_INDEX).float()
    n_tokens = mask.sum(-1)  # (2B,)
    mean_logits = (logits.detach().mean(-1) * mask).sum(-1) / n_tokens.clamp_min(1)  # (2B,)
    return algos.sequence_logprobs(logprobs, mask), n_tokens, logprobs, mask, mean_logits
