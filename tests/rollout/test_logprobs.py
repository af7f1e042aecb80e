"""The one region forward: equal to a naive full-logits computation, and the LM head sees only the
scored positions for a plain, a LoRA and a value-head model, from every caller in the package."""

import logging

import pytest
import torch

from rlhfkit import algos
from rlhfkit.models import AutoModelForCausalLMWithValueHead
from rlhfkit.rollout import build_batch, forward_batch, response_logprobs, token_logprobs
from rlhfkit.testing import tiny_causal_lm

peft = pytest.importorskip("peft")
V = 97


def _lora(model):
    return peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))


MODELS = {
    "plain": lambda: tiny_causal_lm(vocab_size=V),
    "lora": lambda: _lora(tiny_causal_lm(vocab_size=V)),
    "value-head": lambda: AutoModelForCausalLMWithValueHead(tiny_causal_lm(vocab_size=V)),
    "value-head-lora": lambda: AutoModelForCausalLMWithValueHead(_lora(tiny_causal_lm(vocab_size=V))),
}


def _lm_head(model):
    inner = model.pretrained_model if hasattr(model, "pretrained_model") else model
    return inner.get_output_embeddings()


class _HeadSpy:
    """Records how many positions each call of the LM head computes."""

    def __init__(self, model):
        self.widths = []
        self.handle = _lm_head(model).register_forward_hook(lambda m, args, out: self.widths.append(args[0].shape[1]))


def _rollout(seed=0):
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randint(3, V, (n,), generator=g) for n in (5, 2, 7)]
    responses = [torch.randint(3, V, (n,), generator=g) for n in (3, 6, 1)]
    return build_batch(queries, responses, None, pad_token_id=0)


def _naive(model, batch):
    """Full logits of each row alone (no padding), log-softmax, gather the response tokens."""
    rows = []
    for i in range(len(batch.input_ids)):
        ids = batch.input_ids[i][batch.attention_mask[i].bool()]
        n = int(batch.mask[i].sum())
        out = model(input_ids=ids[None])
        logits = (out[0] if isinstance(out, tuple) else out.logits)[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None])[:, 0]
        rows.append(torch.nn.functional.pad(lp[-n:], (0, batch.response_length - n)))
    return torch.stack(rows)


@pytest.mark.parametrize("kind", list(MODELS))
def test_response_logprobs_match_naive_and_cut_the_head(kind):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    batch = _rollout()
    spy = _HeadSpy(model)
    with torch.no_grad():
        lp = response_logprobs(model, batch)
    assert spy.widths == [batch.response_length]  # prompt positions never reached the LM head
    with torch.no_grad():
        expected = _naive(model, batch)
    torch.testing.assert_close(lp * batch.mask, expected, rtol=1e-5, atol=1e-5)


def test_temperature_divides_logits_before_the_log_softmax():
    model = tiny_causal_lm(vocab_size=V).eval()
    batch = _rollout(1)
    with torch.no_grad():
        lp, logits = response_logprobs(model, batch, temperature=0.7, with_logits=True)
        _, raw = response_logprobs(model, batch, with_logits=True)
    torch.testing.assert_close(logits, raw / 0.7)
    torch.testing.assert_close(lp, algos.logprobs_from_logits(raw / 0.7, batch.response_ids))


def test_value_head_values_come_back_for_the_region():
    model = AutoModelForCausalLMWithValueHead(tiny_causal_lm(vocab_size=V)).eval()
    batch = _rollout(2)
    with torch.no_grad():
        lp, values, logits = forward_batch(model, batch)
        _, _, full_values = model(input_ids=batch.input_ids[:, :-1], attention_mask=batch.attention_mask[:, :-1],
                                  position_ids=batch.position_ids[:, :-1])
    R = batch.response_length
    assert lp.shape == values.shape == (3, R) and logits.shape == (3, R, V)
    torch.testing.assert_close(values, full_values[:, -R:].float())


def test_a_model_without_logits_to_keep_gives_the_same_numbers_and_says_so(caplog):
    # its own class name: the message is logged once per class name per process, and
    # tests/models/test_compat.py checks that with a class called NoKeep
    class NoKeepRollout(torch.nn.Module):  # forward without logits_to_keep: computes every position
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    inner = tiny_causal_lm(vocab_size=V).eval()
    batch = _rollout(3)
    with caplog.at_level(logging.WARNING, logger="rlhfkit"), torch.no_grad():
        slow = response_logprobs(NoKeepRollout(inner), batch)
        fast = response_logprobs(inner, batch)
    torch.testing.assert_close(slow, fast)
    assert "NoKeepRollout.forward takes no `logits_to_keep`" in caplog.text


@pytest.mark.parametrize("kind", ["plain", "lora"])
def test_every_caller_keeps_prompt_positions_out_of_the_head(kind):
    """SFT's loss, DPO's forward, eval's log-probs and PPO's ptx loss all go through token_logprobs."""
    from rlhfkit import data
    from rlhfkit.eval.metrics import response_logprobs as eval_logprobs
    from rlhfkit.trainers.logps import completion_logps
    from rlhfkit.trainers.sft import causal_lm_loss

    torch.manual_seed(0)
    model = MODELS[kind]()
    spy = _HeadSpy(model)
    T, prompt = 9, 4
    ids = torch.randint(3, V, (2, T))
    labels = ids.clone()
    labels[:, :prompt] = data.IGNORE_INDEX
    causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    assert spy.widths[-1] == T - prompt  # positions prompt-1 .. T-2 predict the labelled tokens
    completion_logps(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                             "prompt_lengths": torch.tensor([prompt, prompt + 1])})
    assert spy.widths[-1] == T - prompt
    eval_logprobs(model, [ids[0, :prompt]], [ids[0, prompt:]], pad_token_id=0, batch_size=2)
    assert spy.widths[-1] == T - prompt
