"""padding_free: DPO, GRPO/RLOO and PPO compute with packed batches what they compute with padded ones
(fp32 rounding: rtol 1e-5, atol 1e-6), on sequences of very different lengths."""

import random

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, AutoTokenizer, OPTConfig

from rlhfkit import AutoModelForCausalLMWithValueHead, DPOConfig, DPOTrainer, PPOConfig, PPOTrainer
from rlhfkit.rollout import build_batch
from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.trainers.online import Rollout
from rlhfkit.trainers.rloo import RLOOConfig, RLOOTrainer
from tests.trainers.online_helpers import in_target, prompt_rows, small

FP32 = dict(rtol=1e-5, atol=1e-6)
WORDS = "the cat a dog my friend sings we walk they band plays robot river moon night".split()


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _same_grads(packed: dict, padded: dict) -> None:
    assert packed.keys() == padded.keys()
    for name, g in padded.items():
        assert_close(packed[name], g, **FP32, msg=name)


# ---------------------------------------------------------------- DPO


def varied_pairs(n: int, seed: int = 0) -> list[dict]:
    """Prompts of 1-6 words and completions of 1-20 words: lengths vary several-fold inside a batch."""
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"prompt": words(rng.randint(1, 6)) + " ", "chosen": words(rng.randint(1, 20)),
             "rejected": words(rng.randint(1, 20))} for _ in range(n)]


def _dpo(tokenizer, tmp_path, arch="gpt2", **kw):
    fields = dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=6, learning_rate=1e-3,
                  report_to="jsonl", disable_tqdm=True, max_length=64, logging_steps=1)
    args = DPOConfig(**{**fields, **kw})
    return DPOTrainer(model=tiny_causal_lm(arch, tokenizer), args=args, train_dataset=varied_pairs(12),
                      processing_class=tokenizer)


@pytest.mark.parametrize("arch,loss_type,max_packed_length", [("gpt2", "sigmoid", None), ("llama", "ipo", 64),
                                                               ("qwen2", "sigmoid", 40)])
def test_dpo_loss_metrics_and_gradients_equal_padded(tokenizer, tmp_path, arch, loss_type, max_packed_length):
    results = []
    for padding_free in (False, True):
        extra = dict(padding_free=True, max_packed_length=max_packed_length) if padding_free else {}
        extra["max_length"] = max_packed_length or 64
        trainer = _dpo(tokenizer, tmp_path / str(padding_free), arch, loss_type=loss_type, rpo_alpha=0.5, **extra)
        rows = [trainer.train_dataset[i] for i in range(6)]
        batch = trainer._collate(rows)
        assert ("completion_input_ids" in batch) is (not padding_free)  # the prompt-once layout is not used
        loss, metrics = trainer._losses(trainer.model, batch)
        loss.backward()
        results.append((loss.detach(), {k: v.detach() for k, v in metrics.items()}, _grads(trainer.model)))
    (loss_a, m_a, g_a), (loss_b, m_b, g_b) = results
    lengths = batch["attention_mask"].sum(-1)
    assert lengths.max() >= 3 * lengths.min()  # the batch really mixes short and long sequences
    assert_close(loss_b, loss_a, **FP32)
    for k in m_a:
        assert_close(m_b[k], m_a[k], **FP32, msg=k)
    _same_grads(g_b, g_a)


def test_dpo_padding_free_training_run_matches_padded(tokenizer, tmp_path):
    # losses only: Adam turns the float noise of gradients that are 0 in exact arithmetic (GPT-2's key bias)
    # into steps of the learning rate's size, which change no output
    losses = []
    for padding_free in (False, True):
        trainer = _dpo(tokenizer, tmp_path / str(padding_free), padding_free=padding_free, max_steps=3)
        losses.append(torch.tensor([r["train/loss"] for r in trainer.train() if "train/loss" in r]))
    assert len(losses[0]) == 3
    assert_close(losses[1], losses[0], **FP32)


def test_dpo_refuses_a_model_that_cannot_pack(tokenizer, tmp_path):
    opt = AutoModelForCausalLM.from_config(OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                     ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32,
                                                     pad_token_id=tokenizer.pad_token_id))
    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, max_length=64, report_to="jsonl")
    with pytest.raises(ValueError, match=r"padding_free=True cannot be used with OPTForCausalLM"):
        DPOTrainer(model=opt, args=args, train_dataset=varied_pairs(4), processing_class=tokenizer)


# ---------------------------------------------------------------- GRPO / RLOO


def _hand_rollout(trainer, N=8, seed=0):
    """A rollout with prompts of 2-9 and completions of 1-30 tokens, old and reference log-probs and
    advantages, so the update sees every input it sees in training."""
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randint(4, 300, (int(n),), generator=g) for n in torch.randint(2, 10, (N,), generator=g)]
    responses = [torch.randint(4, 300, (int(n),), generator=g) for n in torch.randint(1, 31, (N,), generator=g)]
    batch = build_batch(queries, responses, None, trainer.tokenizer.pad_token_id)
    run = trainer.loop
    with torch.no_grad():  # as rollout() computes them
        old = run._forward_logprobs(run.model, batch, 4) + 0.05 * torch.randn(batch.mask.shape, generator=g)
        ref = run._forward_logprobs(run.model, batch, 4) - 0.1
    advantages = torch.randn(N, generator=g)
    return Rollout(batch, advantages, old, ref, {})


@pytest.mark.parametrize("method,loss_type", [("grpo", "dapo"), ("grpo", "grpo"), ("grpo", "bnpo"), ("rloo", None)])
def test_online_update_loss_metrics_and_gradients_equal_padded(tokenizer, tmp_path, method, loss_type):
    cls, cfg_cls = (GRPOTrainer, GRPOConfig) if method == "grpo" else (RLOOTrainer, RLOOConfig)
    extra = dict(loss_type=loss_type, top_entropy_quantile=0.5) if method == "grpo" else {}
    trainer = cls(model=tiny_causal_lm("llama", tokenizer), reward_funcs=in_target, train_dataset=prompt_rows(),
                  args=cfg_cls(**small(tmp_path, beta=0.1, max_completion_length=30, **extra)),
                  processing_class=tokenizer)
    run = trainer.loop
    rollout = _hand_rollout(trainer)
    idx = torch.tensor([6, 1, 3, 0, 7, 2, 5, 4])
    results = []
    for padding_free, max_packed_length in ((False, None), (True, None), (True, 48)):
        run.config.padding_free, run.config.max_packed_length = padding_free, max_packed_length
        with torch.no_grad():
            scored = run._forward_logprobs(run.model, rollout.batch, 3)  # the pass of old / reference log-probs
        run.model.zero_grad()
        loss, metrics = run._update(run.model, rollout.chunk(idx), num_items=40.0, first_pass=True)
        loss.backward()
        results.append((scored * rollout.batch.mask, loss.detach(), metrics, _grads(run.model)))
    lengths = rollout.batch.attention_mask.sum(-1)
    assert lengths.max() >= 3 * lengths.min()
    for scored, loss, metrics, grads in results[1:]:
        assert_close(scored, results[0][0], **FP32)
        assert_close(loss, results[0][1], **FP32)
        for k, v in results[0][2].items():
            assert_close(metrics[k], v, **FP32, msg=k)
        _same_grads(grads, results[0][3])


def test_online_padding_free_training_runs(tokenizer, tmp_path):
    trainer = GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target,
                          args=GRPOConfig(**small(tmp_path, padding_free=True, max_packed_length=16, max_prompt_length=8,
                                                  max_steps=1, beta=0.1)),
                          train_dataset=prompt_rows(), processing_class=tokenizer)
    history = trainer.train()
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in history if "train/loss" in r)


# ---------------------------------------------------------------- PPO


def _ppo(tiny_dirs, **cfg):
    path = tiny_dirs["gpt2"]
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)  # the fresh value head: the same in both runs
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    # plain SGD: the weights then differ as the gradients do (Adam would scale float noise up to its step size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    return PPOTrainer(PPOConfig(batch_size=6, mini_batch_size=3, seed=0, **cfg), model, None, tok,
                      optimizer=optimizer), tok


def _ppo_rollouts(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    qlens, rlens = (2, 9, 4, 3, 7, 5), (1, 24, 6, 17, 3, 11)
    queries = [torch.randint(10, 200, (qlens[i],), generator=g) for i in range(n)]
    responses = [torch.randint(10, 200, (rlens[i],), generator=g) for i in range(n)]
    return queries, responses, [torch.tensor(float(i) - 2.5) for i in range(n)]


@pytest.mark.parametrize("kl_penalty", ["kl", "full"])
def test_ppo_logprobs_values_and_step_equal_padded(tiny_dirs, kl_penalty):
    queries, responses, scores = _ppo_rollouts()
    outs = []
    for padding_free in (False, True):
        trainer, _ = _ppo(tiny_dirs, padding_free=padding_free, kl_penalty=kl_penalty, entropy_coef=0.01,
                          ppo_epochs=2, max_packed_length=32 if padding_free else None)
        batch = build_batch(queries, responses, None, trainer.pad_token_id)
        forward = trainer._rollout_forward(batch)  # old log-probs, values, reference log-probs, full KL
        stats = trainer.step(queries, responses, scores)
        outs.append((batch.mask, forward, stats, {n: p.detach() for n, p in trainer.model.named_parameters()}))
    mask = outs[0][0]
    for a, b in zip(outs[0][1], outs[1][1]):
        if a is not None:
            assert_close(b * mask, a * mask, **FP32)
    for key in ("ppo/loss/policy", "ppo/loss/value", "ppo/policy/entropy", "objective/kl"):
        assert_close(torch.as_tensor(outs[1][2][key]), torch.as_tensor(outs[0][2][key]), rtol=1e-5, atol=1e-5,
                     msg=key)
    for name, p in outs[0][3].items():
        assert_close(outs[1][3][name], p, **FP32, msg=name)
