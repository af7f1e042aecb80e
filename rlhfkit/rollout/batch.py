"""Rollouts as tensors: the layout every online method (PPO, GRPO, RLOO, REINFORCE++) and eval shares.

Layout. Queries are left-padded and responses right-padded, so every response starts in
the same column and the batch is ``[pad..query | response..pad]`` of width ``Lq + R``.
Position ids count real tokens only, so a padded row computes exactly what it would
alone. The forward pass (``logprobs.response_forward``) feeds all but the last column and
asks the model for logits at the last ``R`` positions only: those predict the ``R``
response tokens. Prompt positions never reach the LM head, which is most of the compute
with a large vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor       # (B, Lq + R) left-padded query, right-padded response
    attention_mask: torch.Tensor  # (B, Lq + R)
    position_ids: torch.Tensor    # (B, Lq + R)
    response_ids: torch.Tensor    # (B, R)
    mask: torch.Tensor            # (B, R) float: 1 on real (and unmasked) response tokens

    @property
    def response_length(self) -> int:
        return self.response_ids.shape[1]

    def rows(self, idx: torch.Tensor) -> "RolloutBatch":
        """A minibatch, with columns that are padding in every selected row cut off."""
        sub = RolloutBatch(*(t[idx] for t in (self.input_ids, self.attention_mask, self.position_ids,
                                               self.response_ids, self.mask)))
        R = self.response_length
        lead = int(sub.attention_mask[:, : sub.input_ids.shape[1] - R].sum(0).eq(0).cumprod(0).sum())
        keep_r = int(sub.attention_mask[:, -R:].sum(0).gt(0).nonzero().max()) + 1 if R else 0
        end = sub.input_ids.shape[1] - R + keep_r
        return RolloutBatch(sub.input_ids[:, lead:end], sub.attention_mask[:, lead:end], sub.position_ids[:, lead:end],
                            sub.response_ids[:, :keep_r], sub.mask[:, :keep_r])


def build_batch(queries, responses, response_masks, pad_token_id: int) -> RolloutBatch:
    """Lay out (query, response) pairs as described in the module docstring."""
    B, device = len(queries), queries[0].device
    Lq, R = max(len(q) for q in queries), max(len(r) for r in responses)
    input_ids = torch.full((B, Lq + R), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((B, Lq + R), dtype=torch.long, device=device)
    mask = torch.zeros((B, R), dtype=torch.float32, device=device)
    for i, (q, r) in enumerate(zip(queries, responses)):
        input_ids[i, Lq - len(q): Lq] = q
        input_ids[i, Lq: Lq + len(r)] = r
        attention_mask[i, Lq - len(q): Lq + len(r)] = 1
        mask[i, : len(r)] = 1.0 if response_masks is None else response_masks[i].float()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # (B, Lq + R)
    return RolloutBatch(input_ids, attention_mask, position_ids, input_ids[:, Lq:], mask)


@dataclass
class Seq2SeqRolloutBatch:
    """An encoder-decoder rollout: the query feeds the encoder, the response the decoder.

    A response is ``[decoder_start, t_1 .. t_n]`` (what ``generate`` returns); the decoder
    reads ``[start, t_1 .. t_{n-1}]`` and position j predicts ``t_{j+1}``: n actions.
    """
    input_ids: torch.Tensor               # (B, Lq) right-padded queries
    attention_mask: torch.Tensor          # (B, Lq)
    decoder_input_ids: torch.Tensor       # (B, R)
    decoder_attention_mask: torch.Tensor  # (B, R)
    response_ids: torch.Tensor            # (B, R) the actions t_1 .. t_n
    mask: torch.Tensor                    # (B, R) float

    @property
    def response_length(self) -> int:
        return self.response_ids.shape[1]

    def rows(self, idx: torch.Tensor) -> "Seq2SeqRolloutBatch":
        """A minibatch, with trailing columns that are padding in every selected row cut off."""
        sub = [t[idx] for t in (self.input_ids, self.attention_mask, self.decoder_input_ids,
                                self.decoder_attention_mask, self.response_ids, self.mask)]
        q = int(sub[1].sum(0).gt(0).nonzero().max()) + 1
        r = int(sub[3].sum(0).gt(0).nonzero().max()) + 1
        return Seq2SeqRolloutBatch(sub[0][:, :q], sub[1][:, :q], *(t[:, :r] for t in sub[2:]))


def build_seq2seq_batch(queries, responses, response_masks, pad_token_id: int,
                        decoder_start_token_id: int | None) -> Seq2SeqRolloutBatch:
    """Lay out (query, response) pairs for an encoder-decoder; a response that does not begin with
    the decoder start token gets it prepended (then all its tokens are actions)."""
    B, device = len(queries), queries[0].device
    fixed, masks = [], []
    for i, r in enumerate(responses):
        m = response_masks[i].float() if response_masks is not None else torch.ones(len(r), device=device)
        if decoder_start_token_id is not None and int(r[0]) != decoder_start_token_id:
            r, m = torch.cat([r.new_tensor([decoder_start_token_id]), r]), torch.cat([m.new_ones(1), m])
        if len(r) < 2:
            raise ValueError(f"responses[{i}] has no token after the decoder start token; drop the sample")
        fixed.append(r)
        masks.append(m[1:])
    Lq, R = max(len(q) for q in queries), max(len(r) for r in fixed) - 1
    enc = torch.full((B, Lq), pad_token_id, dtype=torch.long, device=device)
    enc_mask = torch.zeros_like(enc)
    dec = torch.full((B, R), pad_token_id, dtype=torch.long, device=device)
    dec_mask, labels = torch.zeros_like(dec), torch.full_like(dec, pad_token_id)
    mask = torch.zeros((B, R), dtype=torch.float32, device=device)
    for i, (q, r) in enumerate(zip(queries, fixed)):
        n = len(r) - 1
        enc[i, :len(q)], enc_mask[i, :len(q)] = q, 1
        dec[i, :n], dec_mask[i, :n], labels[i, :n], mask[i, :n] = r[:-1], 1, r[1:], masks[i]
    return Seq2SeqRolloutBatch(enc, enc_mask, dec, dec_mask, labels, mask)
