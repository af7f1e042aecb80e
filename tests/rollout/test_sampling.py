"""GRPO / RLOO sampling through a rollout engine (vLLM's surface, faked: no GPU or vLLM here).

The fake engine (``tests/rollout/test_vllm.py``) samples with the tiny HF model it is given, so
the trainer really trains on what the "engine" returned; its log-probs are made up (-0.5, -1.5,
...), which makes the trainer-vs-engine gap metric non-zero and checkable.
"""

import importlib.util
import json

import pytest
import torch

from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.config import ConfigError
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.rollout.sampling import build_engine, engine_gap, padded_rows
from rlhfkit.trainers.rloo import RLOOConfig, RLOOTrainer
from tests.rollout.test_vllm import FakeLLM, engine
from tests.trainers.online_helpers import in_target, params_of, prompt_rows, small


def test_grpo_samples_with_the_engine_and_pushes_each_update_before_the_next_generation(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32)
    llm = FakeLLM(hf_model=model)
    trainer = GRPOTrainer(model=model, reward_funcs=in_target, args=GRPOConfig(**small(tmp_path, max_steps=3)),
                          train_dataset=prompt_rows(), processing_class=tokenizer, rollout_engine=engine(llm))
    assert len(llm.inner.loaded) == 1  # synced at construction: the engine may have loaded other weights
    trainer.train()
    # 3 generations (one per optimiser step), 8 completions each; a push before generations 2 and 3
    assert [len(prompts) for prompts, _params, _lora in llm.calls] == [8, 8, 8]
    assert len(llm.inner.loaded) == 3
    params = llm.calls[0][1]
    assert (params.max_tokens, params.temperature, params.stop_token_ids) == (4, 1.0, [tokenizer.eos_token_id])
    # the last push holds the weights after step 2 (step 3's update has no generation after it)
    assert not all(torch.equal(llm.inner.loaded[0][k], v) for k, v in llm.inner.loaded[-1].items())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    gaps = [r["train/sampling/sampling_logp_difference/mean"] for r in rows
            if "train/sampling/sampling_logp_difference/mean" in r]
    assert len(gaps) == 3 and all(g > 0 for g in gaps)  # the fake's log-probs are not the model's


def test_rloo_trains_on_the_engine_completions(tokenizer, tmp_path):
    eos = tokenizer.eos_token_id
    scripted = [4, 8, 5, eos]
    llm = FakeLLM(scripted=scripted)
    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32)
    before = params_of(model)
    trainer = RLOOTrainer(model=model, reward_funcs=in_target, args=RLOOConfig(**small(tmp_path, beta=0.0)),
                          train_dataset=prompt_rows(), processing_class=tokenizer, rollout_engine=engine(llm))
    history = trainer.train()
    expected = in_target(None, None, [scripted])[0]
    assert [r["train/reward"] for r in history if "train/reward" in r] == pytest.approx([expected] * 2)
    assert all(r["train/completions/mean_length"] == 4 for r in history if "train/completions/mean_length" in r)
    assert len(llm.calls) == 2
    # identical completions: every group has zero reward spread, RLOO's advantages are 0 and (no weight
    # decay) not one weight moves; completions sampled from the model itself would have moved them
    assert all(r["train/frac_reward_zero_std"] == 1.0 for r in history if "train/frac_reward_zero_std" in r)
    after = params_of(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_engine_gap_skips_masked_and_unknown_positions():
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    lps = [torch.tensor([-1.5, float("nan"), -9.0]), torch.tensor([-0.25, -1.5])]
    gap = engine_gap(old, padded_rows(lps, old), mask)
    # kept: |(-1) - (-1.5)| = 0.5, |(-0.5) - (-0.25)| = 0.25, |(-0.5) - (-1.5)| = 1.0
    torch.testing.assert_close(gap["sampling/sampling_logp_difference/mean"], torch.tensor(1.75 / 3))
    torch.testing.assert_close(gap["sampling/sampling_logp_difference/max"], torch.tensor(1.0))
    assert engine_gap(old, padded_rows([torch.tensor([float("nan")])] * 2, old), mask) == {}


def test_generation_kwargs_the_engine_cannot_honour_fail_before_training(tokenizer, tmp_path):
    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32)
    with pytest.raises(ValueError, match=r"\['num_beams'\]"):
        GRPOTrainer(model=model, reward_funcs=in_target,
                    args=GRPOConfig(**small(tmp_path, generation_kwargs={"num_beams": 2})),
                    train_dataset=prompt_rows(), processing_class=tokenizer, rollout_engine=engine(FakeLLM(scripted=[1])))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_use_vllm_without_vllm_names_the_fix_before_loading_the_model(tmp_path):
    # the model path does not exist: the ImportError must come first (nothing heavy is loaded)
    with pytest.raises(ImportError, match="pip install vllm"):
        GRPOTrainer(model=str(tmp_path / "no-such-model"), reward_funcs=in_target,
                    args=GRPOConfig(**small(tmp_path / "out", use_vllm=True)), train_dataset=prompt_rows())


def test_vllm_settings_are_checked():
    with pytest.raises(ConfigError, match="vllm_mode.*server"):
        GRPOConfig(vllm_mode="server")
    with pytest.raises(ConfigError, match="vllm_gpu_memory_utilization"):
        RLOOConfig(vllm_gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError, match="vllm_sync_timeout_s"):
        GRPOConfig(vllm_sync_timeout_s=0)


def test_an_in_memory_model_cannot_start_vllm(tokenizer):
    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32)
    model.config._name_or_path = ""
    with pytest.raises(ValueError, match="save_pretrained"):
        build_engine(GRPOConfig(), model)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_cli_use_vllm_without_vllm_is_one_line(tiny_dirs, tmp_path, capsys):
    from rlhfkit.cli import main

    (tmp_path / "p.jsonl").write_text("".join(json.dumps(row) + "\n" for row in prompt_rows()))
    with pytest.raises(SystemExit) as err:
        main(["grpo", "--model_name_or_path", str(tiny_dirs["gpt2"]), "--dataset_name", str(tmp_path / "p.jsonl"),
              "--output_dir", str(tmp_path / "o"), 'reward_funcs=["tests.trainers.online_helpers:in_target"]',
              "use_vllm=true"])
    assert err.value.code == 2 and "pip install vllm" in capsys.readouterr().err


def test_grpo_weights_engine_samples_by_the_trainer_engine_ratio(tokenizer, tmp_path):
    """vllm_importance_sampling_correction (TRL's default): the loss is weighted by exp(trainer - engine),
    bounded per vllm_importance_sampling_mode; off, nothing is weighted."""
    def run(out, **kw):
        torch.manual_seed(0)
        model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32)
        trainer = GRPOTrainer(model=model, reward_funcs=in_target, args=GRPOConfig(**small(out, logging_steps=5, **kw)),
                              train_dataset=prompt_rows(), processing_class=tokenizer,
                              rollout_engine=engine(FakeLLM(hf_model=model)))
        trainer.train()
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    rows = run(tmp_path / "on", vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=2.0)
    key = "train/sampling/importance_sampling_ratio/max"
    assert all(key in r and 0.0 <= r[key] <= 2.0 for r in rows)  # old log-probs computed on every step
    off = run(tmp_path / "off", vllm_importance_sampling_correction=False)
    assert not any(key in r for r in off)
    with pytest.raises(ConfigError, match="vllm_importance_sampling_mode"):
        GRPOConfig(vllm_importance_sampling_mode="tis")
    with pytest.raises(ConfigError, match="vllm_importance_sampling_clip_min"):
        GRPOConfig(vllm_importance_sampling_clip_min=4.0)
