"""The prompt-once forward equals the concatenated forward (values and gradients)."""

import logging

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhfkit.data.collate import PairCollator
from rlhfkit.models import shared_prompt_forward, supports_shared_prompt
from rlhfkit.models.compat import enable_checkpointing
from rlhfkit.testing import tiny_causal_lm, tiny_config


def _batch(tokenizer, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for p_len, c_len, r_len in [(5, 3, 6), (2, 4, 1), (7, 2, 2)]:  # ragged prompts and completions
        prompt = torch.randint(5, 60, (p_len,), generator=g).tolist()
        rows.append({"chosen_input_ids": prompt + torch.randint(5, 60, (c_len,), generator=g).tolist(),
                     "rejected_input_ids": prompt + torch.randint(5, 60, (r_len,), generator=g).tolist(),
                     "prompt_length": p_len})
    return PairCollator(tokenizer.pad_token_id, split_prompt=True)(rows)


def _split(batch):
    return (batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["completion_input_ids"],
            batch["completion_attention_mask"])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reward_scores_and_gradients_match_concatenated_forward(tokenizer, arch):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(arch, tokenizer, num_labels=1)).double()
    model.config.pad_token_id = tokenizer.pad_token_id
    batch = _batch(tokenizer)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    _, out = shared_prompt_forward(model, *_split(batch))
    shared = out.logits.squeeze(-1)
    torch.testing.assert_close(shared, full, rtol=0, atol=1e-10)
    params = [p for p in model.parameters()]
    g_full = torch.autograd.grad((full * torch.arange(1.0, 7.0, dtype=full.dtype)).sum(), params, allow_unused=True)
    g_shared = torch.autograd.grad((shared * torch.arange(1.0, 7.0, dtype=full.dtype)).sum(), params,
                                   allow_unused=True)
    for a, b in zip(g_full, g_shared):
        if a is not None:  # llama's rotary tables are float32 even in a float64 model: 1e-7 differences
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_causal_lm_completion_logits_match(tokenizer):
    model = tiny_causal_lm("gpt2", tokenizer).double()
    batch = _batch(tokenizer)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    _, out = shared_prompt_forward(model, *_split(batch))
    lengths = batch["prompt_lengths"]
    for row in range(full.shape[0]):
        n = int(batch["completion_attention_mask"][row].sum())
        start = int(lengths[row])
        torch.testing.assert_close(out.logits[row, :n], full[row, start:start + n], rtol=0, atol=1e-10)


def test_support_check(tokenizer, caplog):
    model = tiny_causal_lm("gpt2", tokenizer)
    assert supports_shared_prompt(model)
    enable_checkpointing(model)
    with caplog.at_level(logging.WARNING, logger="rlhfkit"):
        assert not supports_shared_prompt(model, where="test-probe")  # checkpointing turns the cache off
        assert not supports_shared_prompt(model, where="test-probe")
    said = [r.getMessage() for r in caplog.records if "test-probe" in r.getMessage()]
    assert len(said) == 1 and "gradient checkpointing" in said[0]  # logged once, with the reason


def test_rows_must_match_prompts(tokenizer):
    model = tiny_causal_lm("gpt2", tokenizer)
    p_ids, p_mask, c_ids, c_mask = _split(_batch(tokenizer))
    with pytest.raises(ValueError, match="completion rows"):
        shared_prompt_forward(model, p_ids, p_mask, c_ids[:-1], c_mask[:-1])
