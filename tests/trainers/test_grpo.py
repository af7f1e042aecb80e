"""GRPOTrainer on a tiny model: smoke, every loss type and ratio level, data formats, checkpoints, bad configs."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.config import ConfigError
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer, grpo_method
from tests.trainers.online_helpers import in_target, params_of, prompt_rows, small


def make(tokenizer, tmp_path, model=None, reward=in_target, rows=None, **overrides):
    model = model if model is not None else tiny_causal_lm("gpt2", tokenizer, hidden_size=32)
    return GRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(**small(tmp_path, **overrides)),
                       train_dataset=rows if rows is not None else prompt_rows(), processing_class=tokenizer)


def test_smoke_params_change_reference_frozen_and_round_trip(tokenizer, tmp_path):
    trainer = make(tokenizer, tmp_path, beta=0.1)
    before, ref_before = params_of(trainer.model), params_of(trainer.ref_model)
    history = trainer.train()
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    after = params_of(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.equal(ref_before[n], p) for n, p in trainer.ref_model.named_parameters())
    assert all(row.get("train/kl", 0.0) >= 0.0 for row in history)  # k3 is never negative
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert all(torch.equal(after[n], p) for n, p in loaded.named_parameters())
    assert (tmp_path / "README.md").exists()  # the model card


def test_logs_what_practitioners_watch(tokenizer, tmp_path):
    trainer = make(tokenizer, tmp_path, beta=0.05)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*rows)
    for key in ("reward", "reward_std", "reward_std_group", "frac_reward_zero_std", "rewards/in_target/mean",
                "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl", "entropy",
                "completions/mean_length", "completions/min_length", "completions/max_length",
                "completions/clipped_ratio", "sampling/logprob_diff_mean", "loss", "grad_norm", "learning_rate"):
        assert f"train/{key}" in keys, key
    # same weights, same inputs: the eval-mode scoring and the first training forward agree
    assert all(r["train/sampling/logprob_diff_mean"] < 1e-4 for r in rows if "train/sampling/logprob_diff_mean" in r)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_each_loss_type_and_level_trains(tokenizer, tmp_path, loss_type, level):
    trainer = make(tokenizer, tmp_path, loss_type=loss_type, importance_sampling_level=level, max_steps=1,
                   num_iterations=2, epsilon_high=0.28)
    before = params_of(trainer.model)
    history = trainer.train()
    assert torch.isfinite(torch.tensor(history[0]["train/loss"]))
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("estimator", ["rloo", "reinforce++", "reinforce++_baseline"])
def test_other_advantage_estimators_train(tokenizer, tmp_path, estimator):
    trainer = make(tokenizer, tmp_path, advantage_estimator=estimator, beta=0.05, max_steps=1)
    assert trainer.ref_model is not None  # reinforce++ puts beta * KL in the reward: it needs the reference
    history = trainer.train()
    assert torch.isfinite(torch.tensor(history[0]["train/loss"]))
    if estimator.startswith("reinforce++"):
        assert "train/kl_reward" in history[0] and "train/kl" not in history[0]  # KL in the reward, not the loss


def test_no_reference_without_beta(tokenizer, tmp_path):
    assert make(tokenizer, tmp_path).ref_model is None


def test_advantage_estimators_against_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    mask = torch.ones(8, 3)
    cfg = dict(output_dir="x", num_generations=4, per_device_train_batch_size=8)
    adv, metrics = grpo_method(GRPOConfig(**cfg, scale_rewards="none")).advantages(rewards, None, None, mask)
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))
    assert metrics["frac_reward_zero_std"].item() == 0.5
    adv, _ = grpo_method(GRPOConfig(**cfg, advantage_estimator="rloo")).advantages(rewards, None, None, mask)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0]))
    adv, _ = grpo_method(GRPOConfig(**cfg, advantage_estimator="reinforce++")).advantages(rewards, None, None, mask)
    assert adv.shape == (8, 3)  # token-level, whitened over the batch
    torch.testing.assert_close(adv.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_batch_scaling_divides_by_the_std_of_every_process(tmp_path):
    """scale_rewards=batch: the std comes from the gathered rewards (TRL gathers before scaling)."""
    rewards = torch.tensor([1.0, 0.0, 3.0, 0.0])
    other = torch.tensor([10.0, -10.0, 5.0, 5.0])  # another process's rewards
    method = grpo_method(GRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=4,
                                    scale_rewards="batch"))
    adv, _ = method.advantages(rewards, None, None, torch.ones(4, 2), lambda t: torch.cat([t, other]))
    std = torch.cat([rewards, other]).std()
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 1.5, -1.5]) / (std + 1e-4))
    alone, _ = method.advantages(rewards, None, None, torch.ones(4, 2))
    torch.testing.assert_close(alone, torch.tensor([0.5, -0.5, 1.5, -1.5]) / (rewards.std() + 1e-4))


def test_mask_truncated_completions_leaves_them_out(tokenizer, tmp_path):
    # min_new_tokens = max_completion_length: every completion is cut, so nothing is trained
    trainer = make(tokenizer, tmp_path, mask_truncated_completions=True, max_steps=1,
                   generation_kwargs={"min_new_tokens": 4})
    before = params_of(trainer.model)
    history = trainer.train()
    assert history[0]["train/completions/clipped_ratio"] == 1.0 and history[0]["train/num_tokens"] == 0.0
    assert history[0]["train/loss"] == 0.0
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_prompt_formats_and_columns_reach_the_reward(tokenizer, tmp_path):
    seen = {}

    def reward(prompts, completions, solution, completion_ids, **columns):
        seen.update(prompt=prompts[0], completion=completions[0], solution=solution[:4])
        return [0.0] * len(completions)

    rows = [{"prompt": [{"role": "user", "content": f"say {w}"}], "solution": w} for w in ("a", "b", "c", "d")]
    make(tokenizer, tmp_path, reward=reward, rows=rows, max_steps=1).train()
    assert seen["prompt"][0]["role"] == "user"
    assert isinstance(seen["completion"], list) and seen["completion"][0]["role"] == "assistant"
    assert seen["solution"] == [seen["solution"][0]] * 4  # one prompt's value for each of its 4 completions


@pytest.mark.parametrize("rows", [
    [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 2,
    [{"prompt": "the cat", "chosen": " sings", "rejected": " sleeps"}] * 2,
    [{"text": "the cat sings"}] * 2,
])
def test_every_prompt_format_trains(tokenizer, tmp_path, rows):
    assert len(make(tokenizer, tmp_path, rows=rows, max_steps=1).train()) == 1


def test_resume_is_exact(tokenizer, tmp_path):
    full = make(tokenizer, tmp_path / "full", max_steps=4, save_steps=2)
    full.train()
    assert (tmp_path / "full" / "checkpoint-2").is_dir() and (tmp_path / "full" / "checkpoint-4").is_dir()
    resumed = make(tokenizer, tmp_path / "full", max_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))
    steps = [json.loads(line)["step"] for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_lora_reference_is_the_disabled_adapter(tokenizer, tmp_path):
    from peft import LoraConfig

    trainer = GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target,
                          args=GRPOConfig(**small(tmp_path, beta=0.1, max_steps=1)), train_dataset=prompt_rows(),
                          processing_class=tokenizer,
                          peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False))
    assert trainer.ref_model is None  # the base weights with the adapter off
    base = {n: p.clone() for n, p in trainer.model.named_parameters() if "lora" not in n}
    history = trainer.train()
    assert history[0]["train/kl"] > 0  # the adapter (random init here) moves the policy away from the base
    assert all(torch.equal(base[n], p) for n, p in trainer.model.named_parameters() if "lora" not in n)
    assert (tmp_path / "adapter_model.safetensors").exists()
    with pytest.raises(ConfigError, match="sync_ref_model.*LoRA"):  # no reference weights of its own to refresh
        GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target,
                    args=GRPOConfig(**small(tmp_path / "sync", beta=0.1, sync_ref_model=True)),
                    train_dataset=prompt_rows(), processing_class=tokenizer,
                    peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))


def test_steps_per_generation_and_iterations_count_optimizer_steps(tokenizer, tmp_path):
    trainer = make(tokenizer, tmp_path, steps_per_generation=2, num_iterations=2, max_steps=4)
    assert trainer.loop.steps_per_cycle == 4 and trainer.loop.prompts_per_cycle == 4
    trainer.train()
    assert trainer.loop.cycles == 1 and trainer.loop.global_step == 4


@pytest.mark.parametrize("overrides, field", [
    (dict(num_generations=1), "num_generations"),
    (dict(num_generations=3), "num_generations"),  # does not divide 8 completions
    (dict(loss_type="ppo"), "loss_type"),
    (dict(scale_rewards="std"), "scale_rewards"),
    (dict(importance_sampling_level="word"), "importance_sampling_level"),
    (dict(advantage_estimator="gae"), "advantage_estimator"),
    (dict(delta=1.1), "delta"),
    (dict(beta=-1.0), "beta"),
    (dict(temperature=0.0), "temperature"),
    (dict(reward_funcs=["a:b"], reward_weights=[1.0, 2.0]), "reward_weights"),
    (dict(gradient_accumulation_steps=2, steps_per_generation=3, per_device_train_batch_size=4), "steps_per_generation"),
    (dict(generation_batch_size=6), "generation_batch_size"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        GRPOConfig(**small("out", **overrides))
    assert err.value.field == field


def test_scale_rewards_takes_trl_booleans():
    assert GRPOConfig(scale_rewards=True).scale_rewards == "group"
    assert GRPOConfig(scale_rewards="false").scale_rewards == "none"


def test_missing_reward_funcs_is_a_clear_error(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="reward_funcs"):
        make(tokenizer, tmp_path, reward=None)


def test_reward_weights_must_match_the_functions(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="reward_weights"):
        make(tokenizer, tmp_path, reward=[in_target, in_target], reward_weights=[1.0])


TWO_PROCESS_SCRIPT = r'''
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
out = sys.argv[1]
seen = []
def reward(prompts, completions, completion_ids, **columns):
    seen.extend(prompts)
    return [sum(i % 4 == 0 for i in ids) / len(ids) for ids in completion_ids]
tok = tiny_tokenizer()
rows = [{"prompt": f"p{i} x"} for i in range(16)]
cfg = GRPOConfig(output_dir=out, max_steps=2, num_generations=4, per_device_train_batch_size=8, max_completion_length=4,
                 learning_rate=1e-3, beta=0.1, report_to="none", disable_tqdm=True, seed=5, scale_rewards="batch",
                 top_entropy_quantile=0.5)  # the entropy quantile is taken over both ranks' tokens
trainer = GRPOTrainer(model=tiny_causal_lm("gpt2", tok, hidden_size=32), reward_funcs=reward, args=cfg,
                      train_dataset=rows, processing_class=tok)
advantages, real = [], trainer.loop.method.advantages
def spy(rewards, *args):
    adv, metrics = real(rewards, *args)
    advantages.append({"rewards": rewards.tolist(), "adv": adv.tolist()})
    return adv, metrics
trainer.loop.method.advantages = spy
pooled, real_gather = [], trainer.loop._gather_tokens
def gather_spy(values):
    every = real_gather(values)
    pooled.append([len(values), len(every)])
    return every
trainer.loop._gather_tokens = gather_spy
trainer.train()
rank = trainer.loop.accelerator.process_index
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, f"prompts-{rank}.json"), "w") as fh:
    json.dump({"prompts": seen, "advantages": advantages, "pooled": pooled}, fh)
'''


@pytest.mark.slow
def test_two_processes_train_disjoint_prompts(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531"]
    run = subprocess.run(launcher + [str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = (json.loads((tmp_path / "out" / f"prompts-{r}.json").read_text()) for r in (0, 1))
    pa, pb = a["prompts"], b["prompts"]
    assert len(pa) == len(pb) == 16 and not set(pa) & set(pb)  # 2 steps x 2 prompts x 4 completions each, no overlap
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    # top_entropy_quantile: each micro-batch's quantile pools the real tokens of both ranks
    assert a["pooled"] and [n for n, _ in a["pooled"]] and all(
        ta == tb == na + nb for (na, ta), (nb, tb) in zip(a["pooled"], b["pooled"]))
    # scale_rewards=batch: each rank divides by the std of both ranks' rewards of that generation
    for step_a, step_b in zip(a["advantages"], b["advantages"]):
        both = torch.tensor(step_a["rewards"] + step_b["rewards"])
        for step in (step_a, step_b):
            r = torch.tensor(step["rewards"]).view(-1, 4)
            expected = ((r - r.mean(1, keepdim=True)) / (both.std() + 1e-4)).reshape(-1)
            torch.testing.assert_close(torch.tensor(step["adv"]), expected)


def test_ctrl_c_checkpoints_a_cycle_boundary_and_never_a_half_cycle(tokenizer, tmp_path, capsys):
    """Two optimiser steps per generation: a Ctrl-C before a cycle's first update writes the
    boundary's checkpoint, one between its two updates writes none and names the last one."""
    def cut_at(call_no):
        trainer = make(tokenizer, tmp_path / f"cut{call_no}", max_steps=6, steps_per_generation=2,
                       per_device_train_batch_size=4)
        real, calls = trainer.loop._update, []

        def update(*args, **kwargs):
            calls.append(1)
            if len(calls) == call_no:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        trainer.loop._update = update
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
        return sorted(p.name for p in (tmp_path / f"cut{call_no}").glob("checkpoint-*"))

    assert cut_at(5) == ["checkpoint-4"]  # the 3rd cycle's first update: the weights are those of step 4
    full = make(tokenizer, tmp_path / "full", max_steps=6, steps_per_generation=2, per_device_train_batch_size=4)
    full.train()
    resumed = make(tokenizer, tmp_path / "cut5", max_steps=6, steps_per_generation=2, per_device_train_batch_size=4)
    resumed.train(resume_from_checkpoint="latest")
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))
    capsys.readouterr()
    assert cut_at(4) == []  # between the 2nd cycle's two updates: no exact state to save
    assert "inside a generation cycle" in capsys.readouterr().err


def test_sync_ref_model_mixes_the_policy_into_the_reference_and_resumes_exactly(tokenizer, tmp_path):
    """TR-DPO's refresh every ref_model_sync_steps steps: ref <- alpha * policy + (1 - alpha) * ref."""
    trainer = make(tokenizer, tmp_path / "one", beta=0.1, max_steps=2, sync_ref_model=True, ref_model_sync_steps=2,
                   ref_model_mixup_alpha=0.25)
    ref_before = params_of(trainer.ref_model)
    trainer.train()
    policy = dict(trainer.model.named_parameters())
    for name, ref in trainer.ref_model.named_parameters():  # one refresh, after step 2
        torch.testing.assert_close(ref, 0.75 * ref_before[name] + 0.25 * policy[name].detach(), rtol=1e-6, atol=1e-7)
    # the moved reference is part of the checkpoint: a resume is exact
    full = make(tokenizer, tmp_path / "full", beta=0.1, max_steps=4, save_steps=2, sync_ref_model=True,
                ref_model_sync_steps=2)
    full.train()
    resumed = make(tokenizer, tmp_path / "full", beta=0.1, max_steps=4, sync_ref_model=True, ref_model_sync_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(full.ref_model.parameters(), resumed.ref_model.parameters()))


def test_sync_ref_model_needs_a_reference(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="sync_ref_model.*beta > 0"):
        make(tokenizer, tmp_path, beta=0.0, sync_ref_model=True)
    with pytest.raises(ConfigError, match="ref_model_mixup_alpha"):
        GRPOConfig(ref_model_mixup_alpha=1.5)


def test_log_completions_writes_each_logged_generation_once(tokenizer, tmp_path):
    trainer = make(tokenizer, tmp_path, max_steps=4, logging_steps=2, log_completions=True, save_steps=2,
                   num_completions_to_print=5)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2] * 5 + [4] * 5
    row = rows[0]
    assert set(row) == {"step", "prompt", "completion", "reward", "rewards/in_target", "advantage"}
    assert row["reward"] == row["rewards/in_target"] and isinstance(row["completion"], str)
    # a resume from checkpoint-2 drops step 4's lines before writing them again
    again = make(tokenizer, tmp_path, max_steps=4, logging_steps=2, log_completions=True, num_completions_to_print=5)
    again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    rows_again = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert rows_again == rows  # the same completions: the resume is exact


def test_num_generations_eval(tokenizer, tmp_path):
    rows = prompt_rows(8)
    trainer = GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target,
                          args=GRPOConfig(**small(tmp_path, max_steps=1, num_generations_eval=3,
                                                  per_device_eval_batch_size=6)),
                          train_dataset=rows, eval_dataset=prompt_rows(4, seed=1), processing_class=tokenizer)
    calls = []
    real = trainer.loop._sample
    trainer.loop._sample = lambda prompts, cols, G: calls.append((len(prompts), G)) or real(prompts, cols, G)
    trainer.evaluate()
    assert calls == [(2, 3), (2, 3)]  # 6 completions per call: 2 prompts x 3


def test_top_entropy_quantile_trains_on_the_high_entropy_share(tokenizer, tmp_path):
    trainer = make(tokenizer, tmp_path, top_entropy_quantile=0.25, max_steps=2)
    before = params_of(trainer.model)
    history = trainer.train()
    fractions = [r["train/entropy_mask_fraction"] for r in history if "train/entropy_mask_fraction" in r]
    assert len(fractions) == 2 and all(0.2 <= f <= 0.5 for f in fractions)  # about a quarter (ties round up)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    with pytest.raises(ConfigError, match="top_entropy_quantile"):
        GRPOConfig(top_entropy_quantile=0.0)


def test_every_advantage_estimator_choice_is_an_algos_entry():
    from rlhfkit.algos import ADVANTAGE_ESTIMATORS
    from rlhfkit.trainers.grpo import GRPO_ESTIMATORS

    assert set(GRPO_ESTIMATORS) <= set(ADVANTAGE_ESTIMATORS)
    for name in GRPO_ESTIMATORS:  # beta sits in the loss exactly when the estimator's KL is not in the reward
        method = grpo_method(GRPOConfig(advantage_estimator=name, beta=0.1, num_generations=2))
        assert method.old_logprobs == (ADVANTAGE_ESTIMATORS[name]["kl"] == "reward")
