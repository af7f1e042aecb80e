"""PPOTrainer: smoke, invariants, bad input, opt-in tricks."""

import json
import math

import pytest
import torch
from transformers import AutoTokenizer

from rlhfkit import AutoModelForCausalLMWithValueHead, CriticModel, PPOConfig, PPOTrainer
from rlhfkit.trainers.ppo_batch import build_batch, forward_batch


def _make(tiny_dirs, arch="gpt2", ref=True, **cfg):
    path = tiny_dirs[arch]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    ref_model = AutoModelForCausalLMWithValueHead.from_pretrained(path) if ref else None
    cfg.setdefault("batch_size", 4)
    cfg.setdefault("mini_batch_size", 2)
    cfg.setdefault("learning_rate", 1e-3)
    return PPOTrainer(PPOConfig(**cfg), model, ref_model, tok), tok


def _rollouts(n=4, seed=0, qlens=(3, 5, 4, 6), rlens=(4, 2, 5, 3)):
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randint(10, 200, (qlens[i % len(qlens)],), generator=g) for i in range(n)]
    responses = [torch.randint(10, 200, (rlens[i % len(rlens)],), generator=g) for i in range(n)]
    scores = [torch.tensor(float(i) - 1.5) for i in range(n)]
    return queries, responses, scores


def _finite_scalars(stats):
    return all(math.isfinite(v) for v in stats.values() if isinstance(v, float))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_step_moves_policy_and_keeps_reference_bit_identical(tiny_dirs, arch):
    trainer, _ = _make(tiny_dirs, arch)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ref_before = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    stats = trainer.step(*_rollouts())
    assert stats["objective/kl"] == 0.0  # policy == reference before the first update
    assert _finite_scalars(stats)
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and "v_head.summary.weight" in changed
    assert all(torch.equal(v, ref_before[k]) for k, v in trainer.ref_model.state_dict().items())
    stats2 = trainer.step(*_rollouts(seed=1))
    assert stats2["objective/kl"] != 0.0 and _finite_scalars(stats2)


def test_ref_model_none_uses_frozen_copy(tiny_dirs):
    trainer, _ = _make(tiny_dirs, ref=False)
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    assert trainer.step(*_rollouts())["objective/kl"] == 0.0


def test_variable_lengths_in_one_batch_match_one_at_a_time(tiny_dirs):
    trainer, tok = _make(tiny_dirs, "llama")
    queries, responses, _ = _rollouts()
    model = trainer.model.eval()
    batch = build_batch(queries, responses, None, tok.pad_token_id)
    with torch.no_grad():
        logprobs, values, _ = forward_batch(model, batch)
        for i, (q, r) in enumerate(zip(queries, responses)):
            one = build_batch([q], [r], None, tok.pad_token_id)
            lp, v, _ = forward_batch(model, one)
            torch.testing.assert_close(logprobs[i, : len(r)], lp[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(values[i, : len(r)], v[0], rtol=1e-5, atol=1e-5)
    assert batch.mask.sum(1).tolist() == [float(len(r)) for r in responses]
    # a minibatch drops columns that are padding in all of its rows
    sub = batch.rows(torch.tensor([1, 3]))
    assert sub.response_length == max(len(responses[1]), len(responses[3]))
    assert sub.input_ids.shape[1] == max(len(queries[1]), len(queries[3])) + sub.response_length


@pytest.mark.parametrize("change, match", [
    (lambda q, r, s: (q[:3], r, s), "same length"),
    (lambda q, r, s: (q, r, s[:3] + [torch.tensor([1.0, 2.0])]), "scalar"),
    (lambda q, r, s: (q, r, s[:3] + [torch.tensor(float("nan"))]), "finite"),
    (lambda q, r, s: (q, r, s[:3] + [float("inf")]), "finite"),
    (lambda q, r, s: (q, r[:3] + [torch.tensor([], dtype=torch.long)], s), "empty"),
    (lambda q, r, s: (q[:3] + [torch.randint(5, 50, (300,))], r, s), "context"),
    (lambda q, r, s: (q[:3] + [torch.rand(3)], r, s), "integer token ids"),
    (lambda q, r, s: (q[:3] + [torch.ones(2, 2, dtype=torch.long)], r, s), "1-D"),
])
def test_bad_input_raises_clear_value_error(tiny_dirs, change, match):
    trainer, _ = _make(tiny_dirs)
    with pytest.raises(ValueError, match=match):
        trainer.step(*change(*_rollouts()))


def test_batch_size_mismatch_and_config_errors(tiny_dirs):
    trainer, _ = _make(tiny_dirs)
    q, r, s = _rollouts(n=2)
    with pytest.raises(ValueError, match="batch_size"):
        trainer.step(q, r, s)
    with pytest.raises(ValueError, match="multiple of mini_batch_size"):
        PPOConfig(batch_size=6, mini_batch_size=4)
    with pytest.raises(ValueError, match="kl_penalty"):
        PPOConfig(kl_penalty="bogus")
    with pytest.raises(ValueError, match="dual_clip"):
        PPOConfig(dual_clip=0.5)


def test_batch_of_one_with_one_token_response_has_no_nan(tiny_dirs):
    trainer, _ = _make(tiny_dirs, batch_size=1, mini_batch_size=1, use_score_scaling=True, use_score_norm=True,
                       whiten_rewards=True)
    stats = trainer.step([torch.tensor([11, 12])], [torch.tensor([13])], [torch.tensor(2.0)])
    assert _finite_scalars(stats), {k: v for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v)}


@pytest.mark.parametrize("kl_penalty", ["kl", "abs", "mse", "k3", "full"])
def test_kl_estimators_run(tiny_dirs, kl_penalty):
    trainer, _ = _make(tiny_dirs, kl_penalty=kl_penalty)
    trainer.step(*_rollouts())
    stats = trainer.step(*_rollouts(seed=1))
    assert _finite_scalars(stats) and stats["objective/kl"] != 0.0


def test_opt_in_tricks(tiny_dirs):
    trainer, tok = _make(tiny_dirs, dual_clip=3.0, entropy_coef=0.01, missing_eos_penalty=1.0, score_clip=0.5,
                         max_grad_norm=1.0, early_stopping=True, target_kl=0.01, mixed_precision="bf16")
    q, r, s = _rollouts()
    r[0] = torch.cat([r[0], torch.tensor([tok.eos_token_id])])
    stats = trainer.step(q, r, s)
    assert _finite_scalars(stats)
    raw = [float(x) for x in s]
    expected = [min(max(x - (0 if i == 0 else 1.0), -0.5), 0.5) for i, x in enumerate(raw)]
    assert stats["ppo/mean_scores"] == pytest.approx(sum(expected) / 4, abs=1e-6)


def test_separate_critic_and_critic_warmup(tiny_dirs):
    path = tiny_dirs["gpt2"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    critic = CriticModel.from_pretrained(tiny_dirs["reward"])
    cfg = PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-3, critic_learning_rate=5e-3,
                    critic_warmup_steps=1)
    trainer = PPOTrainer(cfg, model, None, tok, critic=critic)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-3, 5e-3]
    policy_before = {k: v.clone() for k, v in model.pretrained_model.state_dict().items()}
    critic_before = {k: v.clone() for k, v in critic.state_dict().items()}
    trainer.step(*_rollouts())  # warm-up: only the critic moves
    assert all(torch.equal(v, policy_before[k]) for k, v in model.pretrained_model.state_dict().items())
    assert any(not torch.equal(v, critic_before[k]) for k, v in critic.state_dict().items())
    trainer.step(*_rollouts(seed=1))
    assert any(not torch.equal(v, policy_before[k]) for k, v in model.pretrained_model.state_dict().items())


def _critic_run(tiny_dirs, optimizer=None, lr_critic=5e-3):
    """Two PPO steps with a separate critic; ``optimizer(model, critic)`` builds the optimiser(s) to pass."""
    torch.manual_seed(0)  # the value head's random initialisation
    tok = AutoTokenizer.from_pretrained(tiny_dirs["gpt2"])
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    critic = CriticModel.from_pretrained(tiny_dirs["reward"])
    cfg = PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-3, critic_learning_rate=lr_critic,
                    max_grad_norm=0.5)
    trainer = PPOTrainer(cfg, model, None, tok, critic=critic,
                         optimizer=optimizer(model, critic) if optimizer is not None else None)
    for seed in (0, 1):
        trainer.step(*_rollouts(seed=seed))
    return trainer, {**{f"p.{k}": v for k, v in model.state_dict().items()},
                     **{f"c.{k}": v for k, v in critic.state_dict().items()}}


def test_critic_with_one_optimiser_per_model_trains_as_one_optimiser(tiny_dirs, monkeypatch):
    """Under FSDP the critic is prepared apart from the policy with an optimiser of its own (built from the
    config, or the user's pair); the updates, clipped by the joint gradient norm, are those of one optimiser."""
    from rlhfkit.trainers.mechanics import Mechanics

    _, one = _critic_run(tiny_dirs)
    pair = lambda m, c: (torch.optim.Adam(m.parameters(), lr=1e-3), torch.optim.Adam(c.parameters(), lr=5e-3))
    single = lambda m, c: torch.optim.Adam([{"params": list(m.parameters()), "lr": 1e-3},
                                            {"params": list(c.parameters()), "lr": 5e-3}])
    _, user_one = _critic_run(tiny_dirs, single)
    _, user_pair = _critic_run(tiny_dirs, pair)  # a pair is taken without FSDP too
    monkeypatch.setattr(Mechanics, "sharded", property(lambda self: True))  # prepare() apart, as under FSDP
    split, apart = _critic_run(tiny_dirs)
    assert [g["lr"] for g in split.optimizer.param_groups] == [1e-3]
    assert [g["lr"] for g in split.critic_optimizer.param_groups] == [5e-3]
    for k, v in one.items():  # the default optimisers (fused Adam) ...
        torch.testing.assert_close(apart[k], v, rtol=1e-6, atol=1e-7, msg=k)
    for k, v in user_one.items():  # ... and the user's (torch's default Adam)
        torch.testing.assert_close(user_pair[k], v, rtol=1e-6, atol=1e-7, msg=k)
    with pytest.raises(ValueError, match=r"optimizer=\(policy_optimizer, critic_optimizer\)"):
        _critic_run(tiny_dirs, single)


def test_optimiser_pair_is_checked(tiny_dirs):
    with pytest.raises(ValueError, match="the critic optimiser updates parameters that are not the critic's"):
        _critic_run(tiny_dirs, lambda m, c: (torch.optim.Adam(m.parameters()), torch.optim.Adam(m.parameters())))
    with pytest.raises(ValueError, match="is for a separate critic="):
        trainer, tok = _make(tiny_dirs)
        PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2), trainer.model, None, tok,
                   optimizer=(torch.optim.Adam(trainer.model.parameters()),) * 2)


def test_critic_warmup_with_shared_head_moves_only_the_head(tiny_dirs):
    trainer, _ = _make(tiny_dirs, critic_warmup_steps=1)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.step(*_rollouts())
    changed = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"v_head.summary.weight", "v_head.summary.bias"}


def test_ptx_loss_is_mixed_in(tiny_dirs):
    path = tiny_dirs["gpt2"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    cfg = PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-3, ptx_coef=0.5, ptx_batch_size=2)
    trainer = PPOTrainer(cfg, model, None, tok, ptx_dataset=["the cat sings.", "a dog runs by the sea.", "we wait."])
    stats = trainer.step(*_rollouts())
    assert stats["ppo/loss/ptx"] > 0 and math.isfinite(stats["ppo/loss/ptx"])
    with pytest.raises(ValueError, match="ptx_dataset"):
        PPOTrainer(cfg, AutoModelForCausalLMWithValueHead.from_pretrained(path), None, tok)


def test_save_pretrained_round_trip(tiny_dirs, tmp_path):
    trainer, _ = _make(tiny_dirs)
    trainer.step(*_rollouts())
    trainer.save_pretrained(tmp_path)
    again = AutoModelForCausalLMWithValueHead.from_pretrained(tmp_path)
    for (k, v), (k2, v2) in zip(trainer.model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert AutoTokenizer.from_pretrained(tmp_path).eos_token_id == trainer.tokenizer.eos_token_id


def test_train_entry_point_checkpoints_and_resumes(tiny_dirs, tmp_path):
    prompts = ["the cat", "a dog", "we walk", "my friend"]

    def reward_fn(prompts, responses):
        return [float(len(r)) / 10 for r in responses]

    gen = dict(max_new_tokens=4)
    trainer, _ = _make(tiny_dirs, save_steps=2, output_dir=str(tmp_path / "run"), log_with="jsonl",
                       project_kwargs={"logging_dir": str(tmp_path / "run")})
    history = trainer.train(reward_fn, prompts, steps=2, generation_kwargs=gen, progress=False)
    assert [row["step"] for row in history] == [1, 2]
    ckpt = tmp_path / "run" / "checkpoint-2"
    assert (ckpt / "trainer_state.pt").exists() and (tmp_path / "run" / "final" / "value_head.safetensors").exists()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    # resume into a fresh trainer: same weights and optimiser state, and it continues counting
    fresh, _ = _make(tiny_dirs, output_dir=str(tmp_path / "run"))
    from rlhfkit.trainers.ppo_train import load_checkpoint

    load_checkpoint(fresh, ckpt)
    for (k, v), v2 in zip(trainer.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(v, v2), k
    assert fresh.current_step == 2 and fresh.kl_ctl.value == trainer.kl_ctl.value
    more = fresh.train(reward_fn, prompts, steps=3, generation_kwargs=gen, progress=False)
    assert [row["step"] for row in more] == [3]
    with pytest.raises(ValueError, match="not a PPO checkpoint"):
        load_checkpoint(fresh, tmp_path)


def test_ctrl_c_while_scoring_checkpoints_the_last_update_and_resumes_exactly(tiny_dirs, tmp_path):
    """Ctrl-C in the reward function (after generation drew from the RNG): checkpoint-2 is the state
    right after update 2, and a resume from it ends with the weights of an uninterrupted run."""
    prompts = ["the cat", "a dog", "we walk", "my friend", "the river"]
    calls = []

    def reward_fn(prompts, responses, interrupt_at=None):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return [float(len(r)) / 10 for r in responses]

    gen = dict(max_new_tokens=4)
    kw = dict(log_with="jsonl", disable_dropout=False)
    torch.manual_seed(0)  # the fresh value heads start equal
    full, _ = _make(tiny_dirs, output_dir=str(tmp_path / "full"), project_kwargs={"logging_dir": str(tmp_path / "full")},
                    **kw)
    full.train(reward_fn, prompts, steps=4, generation_kwargs=gen, progress=False)
    calls.clear()
    torch.manual_seed(0)
    cut, _ = _make(tiny_dirs, output_dir=str(tmp_path / "cut"), project_kwargs={"logging_dir": str(tmp_path / "cut")},
                   **kw)
    with pytest.raises(KeyboardInterrupt):
        cut.train(lambda p, r: reward_fn(p, r, interrupt_at=3), prompts, steps=4, generation_kwargs=gen,
                  progress=False)
    assert (tmp_path / "cut" / "checkpoint-2" / "trainer_state.pt").exists()
    torch.manual_seed(0)
    resumed, _ = _make(tiny_dirs, output_dir=str(tmp_path / "cut"), project_kwargs={"logging_dir": str(tmp_path / "cut")},
                       **kw)
    resumed.train(reward_fn, prompts, steps=4, generation_kwargs=gen, progress=False, resume_from_checkpoint="latest")
    for (k, v), v2 in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(v, v2), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_second_ctrl_c_inside_an_update_saves_nothing(tiny_dirs, tmp_path):
    trainer, _ = _make(tiny_dirs, output_dir=str(tmp_path / "run"))
    real_step = trainer.step

    def cut_step(*args, **kwargs):
        if trainer.current_step == 1:
            raise KeyboardInterrupt  # as the second Ctrl-C does, in the middle of an update
        return real_step(*args, **kwargs)

    trainer.step = cut_step
    with pytest.raises(KeyboardInterrupt):
        trainer.train(lambda p, r: [1.0] * len(r), ["the cat", "a dog"], steps=3,
                      generation_kwargs=dict(max_new_tokens=3), progress=False)
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_peft_policy_uses_adapter_disabled_base_as_reference(tiny_dirs):
    peft = pytest.importorskip("peft")
    path = tiny_dirs["llama"]
    tok = AutoTokenizer.from_pretrained(path)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path, peft_config=lora)
    trainer = PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-2), model, None, tok)
    assert trainer.ref_model is None and trainer.config.is_peft_model
    base_before = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k and "v_head" not in k}
    assert trainer.step(*_rollouts())["objective/kl"] == 0.0
    stats = trainer.step(*_rollouts(seed=1))
    assert stats["objective/kl"] != 0.0
    # only adapters and the value head trained; the base (= reference) is untouched
    assert all(torch.equal(v, base_before[k]) for k, v in model.state_dict().items() if k in base_before)
    # reference log-probs are the base model's
    batch = build_batch(*_rollouts()[:2], None, tok.pad_token_id)
    from rlhfkit.models import reference_context

    with torch.no_grad(), reference_context(model, None):
        ref_lp, _, _ = forward_batch(model.eval(), batch)
    with torch.no_grad():
        policy_lp, _, _ = forward_batch(model, batch)
    assert not torch.allclose(ref_lp, policy_lp)


def test_ratio_threshold_skips_the_update(tiny_dirs):
    trainer, _ = _make(tiny_dirs, ratio_threshold=0.5)  # every minibatch's mean ratio (about 1) exceeds it
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.step(*_rollouts())
    assert stats["ppo/policy/skipped"] == 1.0 and stats["ppo/loss/total"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_a_critic_with_its_own_optimiser_resumes_exactly(tiny_dirs, tmp_path):
    """With ``optimizer=(policy_optimizer, critic_optimizer)`` (as under FSDP2) the checkpoint also holds
    the critic optimiser's state: a resumed run ends with the uninterrupted run's policy and critic."""
    from safetensors.torch import load_file

    tok = AutoTokenizer.from_pretrained(tiny_dirs["gpt2"])

    def trainer():
        model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
        critic = CriticModel.from_pretrained(tiny_dirs["reward"])
        pair = (torch.optim.Adam(model.pretrained_model.parameters(), lr=1e-2),
                torch.optim.Adam(critic.parameters(), lr=1e-2))
        return PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2, seed=1), model, tokenizer=tok, optimizer=pair,
                          critic=critic)

    def reward(prompts, responses):
        return [float(len(r) % 3) for r in responses]

    prompts = [f"word{i} word{i + 1}" for i in range(8)]
    run = dict(steps=4, save_steps=2, progress=False, generation_kwargs={"max_new_tokens": 4})
    trainer().train(reward, prompts, output_dir=str(tmp_path / "a"), **run)
    assert "critic_optimizer" in torch.load(tmp_path / "a" / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    trainer().train(reward, prompts, output_dir=str(tmp_path / "b"), resume_from_checkpoint="latest", **run)
    for name in ("model.safetensors", "value_head.safetensors", "critic/model.safetensors"):
        one, two = load_file(tmp_path / "a" / "final" / name), load_file(tmp_path / "b" / "final" / name)
        assert all(torch.equal(one[k], two[k]) for k in one), name
