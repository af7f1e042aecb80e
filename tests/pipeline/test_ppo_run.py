"""`rlhfkit ppo`: a policy folder, a reward model and/or reward functions, prompts from a file."""

import json
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2ForSequenceClassification

from rlhfkit.cli import main
from rlhfkit.pipeline.ppo_run import PPORunConfig, run_ppo
from rlhfkit.testing import save_tiny, tiny_tokenizer
from rlhfkit.trainers.config import ConfigError

PROMPTS = ["the band", "all night", "a robot", "my friend", "under the moon", "they", "the river", "we sing",
           "a quiet town", "the old man", "she said", "in the morning"]


def targets(tok) -> torch.Tensor:
    """A hidden quarter of the vocabulary the reward model likes."""
    return torch.arange(len(tok.all_special_ids), len(tok), 4)


def counting_reward_model(path, tok):
    """A one-block GPT-2 reward model, set by hand: uniform attention averages the (normalised)
    token embeddings, whose first coordinate is large for target tokens only, and the score
    head reads that coordinate. Its score rises with the share of target tokens in the text."""
    E = 32
    cfg = GPT2Config(vocab_size=len(tok), n_embd=E, n_layer=1, n_head=2, n_positions=128, num_labels=1,
                     pad_token_id=tok.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(cfg)
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        wte = model.transformer.wte.weight
        wte.normal_(0.0, 0.02)
        wte[targets(tok)] = 0.0
        wte[targets(tok), 0] = 1.0
        block = model.transformer.h[0]
        block.attn.c_attn.weight.zero_()
        block.attn.c_attn.bias.zero_()
        block.attn.c_attn.weight[:, 2 * E:] = torch.eye(E)  # q = k = 0: uniform attention; v = x
        block.attn.c_proj.weight.copy_(torch.eye(E))
        block.attn.c_proj.bias.zero_()
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        model.score.weight.zero_()
        model.score.weight[0, 0] = 1.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def target_share(prompts, completions, **_):
    """A rule reward for the reward_funcs path: share of completion words that are 'moon'."""
    return [sum(w == "moon" for w in c.split()) / max(1, len(c.split())) for c in completions]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo-run")
    tok = tiny_tokenizer()
    policy = save_tiny(root / "policy", hidden_size=32, seed=1)
    rm = counting_reward_model(root / "rm", tok)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "topic": i % 3}) + "\n" for i, p in enumerate(PROMPTS)))
    return {"root": root, "policy": policy, "rm": rm, "prompts": prompts, "tok": tok}


def test_the_hand_made_reward_model_counts_target_tokens(folders):
    from rlhfkit.models import RewardModel

    tok = folders["tok"]
    rm = RewardModel(str(folders["rm"]))
    hits = tok.decode(targets(tok)[:6])
    misses = tok.decode(targets(tok)[:6] + 1)
    low, high = rm(["the band"] * 2, [misses, hits])
    assert high > low + 0.5


def _args(folders, out, *extra):
    return ["ppo", f"model_name_or_path={folders['policy']}", f"dataset_name={folders['prompts']}",
            f"output_dir={out}", "per_device_train_batch_size=4", "mini_batch_size=2", "num_ppo_epochs=1",
            "max_new_tokens=4", "learning_rate=1e-3", *extra]


def test_cli_run_writes_model_metrics_evals_samples_and_resumes(folders, tmp_path, capsys):
    out = tmp_path / "run"
    funcs = "tests.pipeline.test_ppo_run:target_share"
    code = main(_args(folders, out, f"reward_model_path={folders['rm']}", f"reward_funcs={funcs}",
                      "reward_weights=1.0,0.5", "max_steps=2", "eval_fraction=0.25", "eval_steps=1", "save_steps=1",
                      "critic_from_reward_model=true", "critic_warmup_steps=1"))
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and len(summary["evals"]) == 2
    assert {"eval/reward_mean", "eval/kl", "eval/length_mean", "eval/truncated"} <= set(summary["evals"][0])
    assert summary["evals"][0]["eval/prompts"] == 3  # a quarter of 12 held out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/reward_mean" in r for r in rows) and any("ppo/loss/total" in r for r in rows)
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all(s["prompt"] in PROMPTS for s in samples)
    assert "reward_funcs: tests.pipeline.test_ppo_run:target_share" in (out / "config.yaml").read_text()
    final = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    start = AutoModelForCausalLM.from_pretrained(folders["policy"]).state_dict()
    assert final.keys() == start.keys() and any(not torch.equal(final[k], start[k]) for k in start)  # trained policy
    assert (out / "final" / "critic").is_dir() and (out / "checkpoint-1").is_dir()
    # resume from the last checkpoint and go two steps further
    assert main(_args(folders, out, f"reward_model_path={folders['rm']}", f"reward_funcs={funcs}",
                      "reward_weights=1.0,0.5", "max_steps=3", "eval_fraction=0.25", "critic_from_reward_model=true",
                      "resume_from_checkpoint=latest")) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3


def test_rule_reward_only_with_lora_and_chat_prompts(folders, tmp_path, capsys):
    tok = folders["tok"]
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p}]}) + "\n" for p in PROMPTS[:6]))
    seen = []

    def spy(prompts, completions, **columns):
        seen.append((prompts[0], completions[0]))
        return [0.0] * len(prompts)

    config = PPORunConfig(model_name_or_path=str(folders["policy"]), dataset_name=str(chat), reward_funcs="x:y",
                          output_dir=str(tmp_path / "lora"), per_device_train_batch_size=2, mini_batch_size=2,
                          num_ppo_epochs=1, max_steps=1, max_new_tokens=3, use_peft=True, lora_target_modules="c_attn",
                          report_to="none")
    import rlhfkit.rollout.rewards as rf

    real = rf.load_reward_funcs
    rf.load_reward_funcs = lambda specs, tokenizer=None, device=None: real([spy], tokenizer=tokenizer)
    try:
        summary = run_ppo(config, progress=False)
    finally:
        rf.load_reward_funcs = real
    assert summary["steps"] == 1
    prompt, completion = seen[0]
    assert prompt[0]["role"] == "user"  # reward functions get the conversation, as TRL
    assert completion[0]["role"] == "assistant" and isinstance(completion[0]["content"], str)
    assert (tmp_path / "lora" / "final" / "adapter_config.json").is_file()
    del tok


@pytest.mark.parametrize("extra, message", [
    ([], "--reward_model_path and/or --reward_funcs is required"),
    (["reward_funcs=no_such_module:f"], "cannot import module 'no_such_module'"),
    (["reward_funcs=a:b,c:d", "reward_weights=1"], "has 1 weights for 2 reward sources"),
    (["reward_model_path=/nope/rm"], "reward_model_path"),
    (["reward_funcs=a:b", "ptx_coef=0.5"], "ptx_coef"),
    (["reward_funcs=a:b", "critic_from_reward_model=true"], "critic_from_reward_model"),
])
def test_bad_input_is_one_line_and_exit_2(folders, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as err:
        main(_args(folders, out, *extra))
    assert err.value.code == 2
    assert message in capsys.readouterr().err
    assert not (out / "config.yaml").exists()


def test_config_checks_name_the_field():
    with pytest.raises(ConfigError, match="temperature"):
        PPORunConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="eval_fraction"):
        PPORunConfig(eval_fraction=1.0)


def test_ppo_run_raises_the_reward_models_score_on_held_out_prompts(folders, tmp_path):
    """The learning test: PPO against the hand-made reward model, measured on prompts it never trained on."""
    config = PPORunConfig(model_name_or_path=str(folders["policy"]), dataset_name=str(folders["prompts"]),
                          reward_model_path=str(folders["rm"]), output_dir=str(tmp_path / "learn"),
                          per_device_train_batch_size=16, mini_batch_size=8, num_ppo_epochs=2, learning_rate=1e-2,
                          kl_coef=0.01, adap_kl_ctrl=False,
                          max_steps=20, max_new_tokens=6, eval_fraction=0.25, eval_steps=10, eval_prompts=3,
                          report_to="none", seed=0)
    config_first = replace(config, max_steps=1, output_dir=str(tmp_path / "base"), learning_rate=1e-12)
    before = run_ppo(config_first, progress=False)["evals"][-1]["eval/reward_mean"]
    after = run_ppo(config, progress=False)["evals"][-1]["eval/reward_mean"]
    print(f"held-out reward-model score {before:.3f} -> {after:.3f}")
    assert after > before + 1.5, f"held-out reward-model score did not rise: {before:.3f} -> {after:.3f}"


def test_example_yaml_runs_on_tiny_folders(folders, tmp_path, capsys):
    """examples/ppo.yaml names the demo's folders; pointed at tiny ones it runs as written."""
    from pathlib import Path

    import yaml

    example = Path(__file__).resolve().parents[2] / "examples" / "ppo.yaml"
    assert PPORunConfig(**yaml.safe_load(example.read_text())).critic_from_reward_model
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    code = main(["ppo", "--config", str(example), f"model_name_or_path={folders['policy']}",
                 f"reward_model_path={folders['rm']}", f"dataset_name={prompts}", f"eval_dataset_name={prompts}",
                 f"output_dir={tmp_path / 'out'}", "max_steps=1", "per_device_train_batch_size=4", "mini_batch_size=2",
                 "num_ppo_epochs=1", "max_new_tokens=3", "eval_prompts=2"])
    assert code == 0 and json.loads(capsys.readouterr().out)["evals"][-1]["eval/prompts"] == 2


def test_docs_table_lists_every_field_with_its_help():
    """docs/ppo_cli.md's table is every field of the command line with its help text and default."""
    from pathlib import Path

    from rlhfkit.trainers.config import config_markdown

    page = (Path(__file__).resolve().parents[2] / "docs" / "ppo_cli.md").read_text()
    assert config_markdown(PPORunConfig) in page, \
        "paste rlhfkit.trainers.config.config_markdown(PPORunConfig) into docs/ppo_cli.md"


def test_evaluation_does_not_move_the_training_rng(folders, tmp_path):
    """Evaluating every step or only at the end trains the same weights, bit for bit (docs/ppo_cli.md)."""
    from safetensors.torch import load_file

    def final(eval_steps, name):
        config = PPORunConfig(model_name_or_path=str(folders["policy"]), dataset_name=str(folders["prompts"]),
                              reward_model_path=str(folders["rm"]), output_dir=str(tmp_path / name),
                              per_device_train_batch_size=4, mini_batch_size=2, num_ppo_epochs=1, max_steps=2,
                              max_new_tokens=4, eval_fraction=0.25,
                              eval_steps=eval_steps, report_to="none", learning_rate=1e-3)
        run_ppo(config, progress=False)
        return load_file(tmp_path / name / "final" / "model.safetensors")

    every, end = final(1, "every"), final(0, "end")
    assert every.keys() == end.keys() and all(torch.equal(every[k], end[k]) for k in every)


def test_use_vllm_samples_with_the_engine_and_pushes_every_step(folders, tmp_path, monkeypatch):
    """`use_vllm=true` wires a VLLMRollout into the run (vLLM faked: it is not installed here)."""
    from rlhfkit.models import AutoModelForCausalLMWithValueHead
    from rlhfkit.rollout import vllm as rv
    from tests.rollout.test_vllm import FakeLLM, engine

    made = {}

    def fake_from_pretrained(path, **kwargs):
        made.update(path=path, **kwargs)
        made["llm"] = FakeLLM(hf_model=AutoModelForCausalLMWithValueHead.from_pretrained(path).pretrained_model)
        return engine(made["llm"], sync_timeout_s=kwargs["sync_timeout_s"])

    monkeypatch.setattr(rv, "require_vllm", lambda: None)
    monkeypatch.setattr(rv.VLLMRollout, "from_pretrained", staticmethod(fake_from_pretrained))
    config = PPORunConfig(model_name_or_path=str(folders["policy"]), dataset_name=str(folders["prompts"]),
                          reward_model_path=str(folders["rm"]), output_dir=str(tmp_path / "v"),
                          per_device_train_batch_size=4, mini_batch_size=2, num_ppo_epochs=1, max_steps=2,
                          max_new_tokens=3, report_to="none",
                          use_vllm=True, vllm_gpu_memory_utilization=0.4, vllm_sync_timeout_s=60)
    assert run_ppo(config, progress=False)["steps"] == 2
    llm = made["llm"]
    assert (made["path"], made["gpu_memory_utilization"], made["enable_lora"]) == (str(folders["policy"]), 0.4, False)
    assert len(llm.calls) == 2 and all(len(prompts) == 4 for prompts, _p, _l in llm.calls)
    assert llm.calls[0][1].max_tokens == 3
    assert len(llm.inner.loaded) == 3  # at construction, then after each of the 2 steps


def test_use_vllm_without_vllm_is_one_line_before_loading(folders, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(SystemExit) as err:
        main(_args(folders, tmp_path / "nv", f"reward_model_path={folders['rm']}", "use_vllm=true"))
    assert err.value.code == 2 and "pip install vllm" in capsys.readouterr().err
