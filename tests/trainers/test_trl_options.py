"""TRL's training flags on the loop trainers and the online ones: strategies, optimisers, compile, names,
the split aliases, dataset configurations, the text column, assistant-only loss, bf16 by device."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit import SFTConfig, SFTTrainer
from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.config import ConfigError

ROWS = [{"prompt": f"{w} number {i}", "completion": f" sings {w} all night."}
        for i, w in enumerate(["the cat", "a dog", "we", "they", "the band", "a robot"])]  # 6 rows: 3 steps an epoch
CHAT = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Who sings {i}?"},
                      {"role": "assistant", "content": "the cat sings."}]} for i in range(4)]


def _trainer(tokenizer, out, rows=ROWS, **kw):
    cfg = dict(output_dir=str(out), num_train_epochs=2, learning_rate=1e-3, per_device_train_batch_size=2,
               report_to="jsonl", disable_tqdm=True, seed=3, eval_fraction=0.0)
    cfg.update(kw)
    return SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), args=SFTConfig(**cfg),
                      train_dataset=rows, processing_class=tokenizer, eval_dataset=kw.pop("eval", None))


def _steps(history, prefix):
    return [r["step"] for r in history if any(k.startswith(prefix) for k in r)]


# ---- strategies: TrainingArguments' meaning; "epoch" acts when an epoch ends ----
def test_epoch_strategies_act_at_every_epoch_end(tokenizer, tmp_path):
    trainer = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), processing_class=tokenizer,
                         train_dataset=ROWS, eval_dataset=ROWS[:2],
                         args=SFTConfig(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=2,
                                        report_to="jsonl", disable_tqdm=True, eval_strategy="epoch",
                                        save_strategy="epoch", logging_strategy="epoch"))
    history = trainer.train()
    assert trainer.loop.total_steps == 6
    assert _steps(history, "eval/") == [3, 6]  # once per epoch, not once more at the end
    assert _steps(history, "train/") == [3, 6]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    row = next(r for r in history if r["step"] == 3 and "train/epoch" in r)
    assert row["train/epoch"] == 1.0


def test_epoch_strategies_also_act_at_the_end_of_a_run_cut_mid_epoch(tokenizer, tmp_path):
    trainer = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), processing_class=tokenizer,
                         train_dataset=ROWS, eval_dataset=ROWS[:2],
                         args=SFTConfig(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2,
                                        report_to="jsonl", disable_tqdm=True, eval_strategy="epoch",
                                        logging_strategy="epoch"))
    history = trainer.train()
    assert _steps(history, "eval/") == [3, 4] and _steps(history, "train/") == [3, 4]


def test_no_strategies_log_evaluate_and_save_nothing(tokenizer, tmp_path):
    with pytest.warns(UserWarning, match=r"SFTConfig.eval_steps=2 has no effect: eval_strategy='no'"):
        config = SFTConfig(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, report_to="jsonl",
                           disable_tqdm=True, eval_strategy="no", save_strategy="no", logging_strategy="no",
                           eval_steps=2)
    assert config.eval_steps == 0  # the resolved config says what runs
    trainer = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), processing_class=tokenizer,
                         train_dataset=ROWS, eval_dataset=ROWS[:2], args=config)
    assert trainer.train() == [] and not list(tmp_path.glob("checkpoint-*"))
    assert not (tmp_path / "metrics.jsonl").exists() or not (tmp_path / "metrics.jsonl").read_text()
    assert trainer.loop._window == []  # nothing piles up for a log row that never comes
    assert "eval/loss" in trainer.evaluate()  # an explicit evaluation still runs


def test_steps_strategy_without_eval_steps_evaluates_every_logging_steps(tokenizer, tmp_path):
    config = SFTConfig(eval_strategy="steps", logging_steps=2)
    assert config.eval_steps == 2
    assert SFTConfig(**{**config.to_dict()}).eval_steps == 2  # the resolved config loads to the same
    trainer = SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), processing_class=tokenizer,
                         train_dataset=ROWS, eval_dataset=ROWS[:2],
                         args=SFTConfig(output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=2,
                                        report_to="jsonl", disable_tqdm=True, eval_strategy="steps", logging_steps=2))
    assert _steps(trainer.train(), "eval/") == [2, 4, 5]
    with pytest.raises(ConfigError, match=r"save_strategy: 'steps' needs save_steps > 0"):
        SFTConfig(save_strategy="steps")
    with pytest.raises(ConfigError, match=r"eval_strategy: must be one of no, steps, epoch, got 'sometimes'"):
        SFTConfig(eval_strategy="sometimes")


def test_resume_from_an_epoch_end_checkpoint_is_exact(tokenizer, tmp_path):
    import shutil

    straight = _trainer(tokenizer, tmp_path / "a", save_strategy="epoch", logging_steps=1)
    straight.train()
    state = json.loads((tmp_path / "a" / "checkpoint-3" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_in_epoch"]) == (0, 3)  # saved as the first epoch ended
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    resumed = _trainer(tokenizer, tmp_path / "b", save_strategy="epoch", logging_steps=1,
                       resume_from_checkpoint="latest")
    assert [r["step"] for r in resumed.train() if "train/loss" in r] == [4, 5, 6]
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- optimisers ----
@pytest.mark.parametrize("optim, cls", [("adamw_torch_fused", "AdamW"), ("adamw_torch", "AdamW"), ("sgd", "SGD"),
                                        ("adagrad", "Adagrad"), ("rmsprop", "RMSprop"), ("adafactor", "Adafactor")])
def test_each_optimiser_is_built_and_trains(tokenizer, tmp_path, optim, cls):
    trainer = _trainer(tokenizer, tmp_path, optim=optim, max_steps=2, weight_decay=0.1)
    opt = trainer.loop.optimizer.optimizer if hasattr(trainer.loop.optimizer, "optimizer") else trainer.loop.optimizer
    assert type(opt).__name__ == cls
    assert bool(opt.defaults.get("fused")) is (optim == "adamw_torch_fused")
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # none on biases and norms
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))


def test_optimiser_names_agree_and_unknown_ones_are_refused():
    from rlhfkit.trainers.config import OPTIMIZERS
    from rlhfkit.trainers.mechanics import OPTIMIZER_BUILDERS

    assert tuple(OPTIMIZER_BUILDERS) == OPTIMIZERS
    with pytest.raises(ConfigError, match=r"optim: must be one of adamw_torch_fused, .*; got 'lion9'"):
        SFTConfig(optim="lion9")
    with pytest.raises(ConfigError, match=r"'paged_adamw_8bit' needs the bitsandbytes package"):
        SFTConfig(optim="paged_adamw_8bit")
    with pytest.warns(UserWarning, match=r"SFTConfig.adam_beta2=0.9 has no effect: optim='sgd' is not AdamW"):
        SFTConfig(optim="sgd", adam_beta2=0.9)


def _compiled_training(tokenizer, out):
    trainer = _trainer(tokenizer, out, torch_compile=True, max_steps=2, logging_steps=1)
    assert trainer.loop.accelerator.unwrap_model(trainer.model)._compiled_call_impl is not None
    losses = [r["train/loss"] for r in trainer.train() if "train/loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert "transformer.wte.weight" in load_file(out / "model.safetensors")  # names as without compile


def test_torch_compile_compiles_the_model_in_place(tokenizer, tmp_path, monkeypatch):
    calls = []
    compile_module = torch.nn.Module.compile

    def eager_compile(self, *args, **kwargs):  # dynamo traces, without inductor's code generation (seconds on CPU)
        calls.append(type(self).__name__)
        return compile_module(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    _compiled_training(tokenizer, tmp_path)
    assert calls == ["GPT2LMHeadModel"]


@pytest.mark.slow
def test_torch_compile_trains_a_tiny_model_on_cpu(tokenizer, tmp_path):
    _compiled_training(tokenizer, tmp_path)  # inductor on CPU: about a minute on 2 cores


# ---- names: trackers, model card, hub ----
def test_run_name_names_the_run_in_the_trackers_and_the_model_card(tokenizer, tmp_path):
    from rlhfkit.trainers.mechanics import tracker_init_kwargs

    assert tracker_init_kwargs({"run_name": "lr-sweep-3"}) == {"wandb": {"name": "lr-sweep-3"},
                                                               "trackio": {"name": "lr-sweep-3"}}
    assert tracker_init_kwargs({"run_name": "x"}, {"wandb": {"name": "mine", "tags": ["a"]}})["wandb"] == \
        {"name": "mine", "tags": ["a"]}
    assert tracker_init_kwargs({"run_name": None}) == {}
    trainer = _trainer(tokenizer, tmp_path, max_steps=1, run_name="lr-sweep-3")
    trainer.train()
    assert "| run_name | lr-sweep-3 |" in (tmp_path / "README.md").read_text()


def test_hub_private_repo_reaches_the_push(tokenizer, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    created = {}

    class Url(str):
        repo_id = "me/sft"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: created.update(repo_id=repo_id, **kw) or Url("https://hub/me/sft"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: None)
    _trainer(tokenizer, tmp_path, max_steps=1, push_to_hub=True, hub_model_id="me/sft", hub_private_repo=True).train()
    assert created["repo_id"] == "me/sft" and created["private"] is True


# ---- bf16 follows the device when not set ----
def test_bf16_default_follows_the_device(monkeypatch):
    from rlhfkit.trainers import mechanics

    assert mechanics.native_bf16(lambda: (True, True)) is True
    assert mechanics.native_bf16(lambda: (True, False)) is False  # a GPU that only emulates bf16
    assert mechanics.native_bf16(lambda: (False, False)) is False
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    assert mechanics.native_bf16(lambda: (True, True)) is False
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setattr(mechanics, "native_bf16", lambda query=None: True)
    assert SFTConfig().mixed_precision == "bf16" and SFTConfig(bf16=False).mixed_precision == "no"
    assert SFTConfig(fp16=True).mixed_precision == "fp16"
    monkeypatch.setattr(mechanics, "native_bf16", lambda query=None: False)
    assert SFTConfig().mixed_precision == "no" and SFTConfig(bf16=True).mixed_precision == "bf16"


def test_cpu_default_has_no_autocast(tokenizer, tmp_path):
    trainer = _trainer(tokenizer, tmp_path, max_steps=1)
    if not torch.cuda.is_available():
        assert trainer.loop.mechanics.autocast_dtype is None


# ---- data: split aliases, hub configurations, the text column, assistant-only loss ----
def test_trl_split_names_set_rlhfkits_fields():
    config = SFTConfig(dataset_train_split="train_sft", dataset_test_split="test_sft")
    assert (config.dataset_split, config.eval_dataset_split) == ("train_sft", "test_sft")
    assert config.dataset_train_split is None and config.dataset_test_split is None  # one setting in config.yaml
    assert SFTConfig(**config.to_dict()).dataset_split == "train_sft"
    assert SFTConfig(dataset_split="a", dataset_train_split="a").dataset_split == "a"
    with pytest.raises(ConfigError, match=r"dataset_train_split: is TRL's name for dataset_split, which is set to "
                                          r"'a'; give one of them"):
        SFTConfig(dataset_split="a", dataset_train_split="b")


def test_dataset_config_is_refused_for_local_data(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset_config: 'main' selects a configuration of a hub dataset, but the "
                                          r"training data a list is local"):
        _trainer(tokenizer, tmp_path, dataset_config="main")


def test_dataset_config_goes_to_the_hub_load(tokenizer, tmp_path, monkeypatch):
    import datasets

    seen = []

    def fake_load_dataset(path, name=None, split=None):
        seen.append((path, name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), processing_class=tokenizer,
               args=SFTConfig(output_dir=str(tmp_path), dataset_name="owner/songs", dataset_config="short",
                              dataset_train_split="train_sft", dataset_test_split="test_sft", max_steps=1,
                              report_to="jsonl", disable_tqdm=True))
    assert seen == [("owner/songs", "short", "train_sft"), ("owner/songs", "short", "test_sft")]


def test_dataset_text_field_names_the_text_column(tokenizer, tmp_path):
    rows = [{"content": f"the cat sings number {i}.", "id": i} for i in range(4)]
    trainer = _trainer(tokenizer, tmp_path, rows=rows, dataset_text_field="content", max_steps=1)
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["input_ids"]).startswith("the cat sings number 0.")
    with pytest.raises(Exception, match=r"has no column 'content'"):
        _trainer(tokenizer, tmp_path, rows=ROWS, dataset_text_field="content")


def test_assistant_only_loss_masks_every_non_assistant_token(tokenizer, tmp_path):
    trainer = _trainer(tokenizer, tmp_path, rows=CHAT, assistant_only_loss=True, completion_only_loss=False,
                       max_steps=1)
    full = _trainer(tokenizer, tmp_path / "full", rows=CHAT, completion_only_loss=False, max_steps=1)
    for row, every in zip(trainer.train_dataset, full.train_dataset):
        labelled = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
        assert tokenizer.decode(labelled) == "the cat sings.<|eos|>"
        assert -100 not in every["labels"]
    assert trainer.train()[-1]["train/num_tokens"] == pytest.approx(len(tokenizer("the cat sings.<|eos|>")
                                                                         ["input_ids"]) * 2)
    with pytest.raises(ConfigError, match=r"assistant_only_loss: needs conversational data .* holds text rows"):
        _trainer(tokenizer, tmp_path, rows=ROWS, assistant_only_loss=True)


def test_quantization_needs_lora_and_refuses_both():
    with pytest.raises(ConfigError, match=r"load_in_4bit: needs use_peft"):
        SFTConfig(load_in_4bit=True)
    with pytest.raises(ConfigError, match=r"load_in_8bit: choose one of load_in_4bit and load_in_8bit"):
        SFTConfig(load_in_4bit=True, load_in_8bit=True, use_peft=True)


def test_defaults_warn_about_nothing():
    from rlhfkit.trainers import DPOConfig, GRPOConfig, KTOConfig, RewardConfig, RLOOConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cls in (SFTConfig, RewardConfig, DPOConfig, KTOConfig, GRPOConfig, RLOOConfig):
            cls(**cls().to_dict())


# ---- the online trainers: what their loop cannot do is refused, not ignored ----
@pytest.mark.parametrize("kwargs, message", [
    ({"eval_strategy": "epoch"}, r"eval_strategy: 'epoch' is not supported by the online trainers"),
    ({"save_strategy": "epoch"}, r"save_strategy: 'epoch' is not supported"),
    ({"logging_strategy": "no"}, r"logging_strategy: 'no' is not supported"),
    ({"optim": "sgd"}, r"optim: the online trainers \(GRPO, RLOO\) train with AdamW"),
    ({"torch_compile": True}, r"torch_compile: is not supported by the online trainers"),
])
def test_online_configs_refuse_what_their_loop_does_not_do(kwargs, message):
    from rlhfkit.trainers import GRPOConfig, RLOOConfig

    for cls in (GRPOConfig, RLOOConfig):
        with pytest.raises(ConfigError, match=message):
            cls(**kwargs)


def test_online_eval_strategy_no_loads_no_eval_prompts(tokenizer, tmp_path):
    from rlhfkit.trainers import GRPOConfig, GRPOTrainer

    prompts = [{"prompt": f"the cat {i}"} for i in range(4)]
    config = GRPOConfig(output_dir=str(tmp_path), max_steps=1, num_generations=2, per_device_train_batch_size=2,
                        max_completion_length=3, report_to="jsonl", disable_tqdm=True, eval_strategy="no",
                        eval_fraction=0.5, save_strategy="no")
    with pytest.warns(UserWarning, match=r"GRPOConfig.eval_fraction=0.5 has no effect: eval_strategy='no'"):
        trainer = GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), processing_class=tokenizer,
                              reward_funcs=lambda prompts, completions, **kw: [1.0] * len(completions),
                              train_dataset=prompts, args=config)
    assert not trainer.loop.eval_prompts and len(trainer.loop.prompts) == 4
    assert not any(k.startswith("eval/") for r in trainer.train() for k in r)
