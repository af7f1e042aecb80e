"""KTOTrainer: both losses, the loss against a naive forward, references (copy, PEFT, precomputed),
learning, data shapes and bad input, the CLI command."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import rlhfkit.cli
from rlhfkit.algos.kto import kto_kl, kto_loss
from rlhfkit.data import DataError
from rlhfkit.testing import hidden_rule_preferences, tiny_causal_lm
from rlhfkit.trainers.logps import completion_logps
from rlhfkit.trainers.kto import KTOConfig, KTOTrainer

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "data"


def _cfg(out, **kw):
    base = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                report_to="jsonl", disable_tqdm=True, max_length=64, max_prompt_length=32)
    base.update(kw)
    return KTOConfig(**base)


def unpaired(n, seed=0):
    """Hidden-rule pairs as unpaired rows, interleaved: desirable, undesirable, desirable, ..."""
    rows = []
    for pair in hidden_rule_preferences(n, seed):
        rows += [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                 {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_each_loss_trains_keeps_reference_frozen_and_saves(tokenizer, tmp_path, loss_type):
    trainer = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path, loss_type=loss_type),
                         train_dataset=unpaired(8), processing_class=tokenizer)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ref_before = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    history = trainer.train()
    row = [r for r in history if "train/loss" in r][-1]
    assert torch.isfinite(torch.tensor(row["train/loss"]))
    assert {"train/kl", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins",
            "train/logps/chosen", "train/logps/rejected", "train/logits/chosen", "train/logits/rejected"} <= set(row)
    assert history[0]["train/kl"] == 0.0 and history[0]["train/rewards/margins"] == 0.0  # policy == reference
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(v, ref_before[k]) for k, v in trainer.ref_model.state_dict().items())
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, trainer.model.state_dict()[k], rtol=0, atol=0)
    assert (tmp_path / "README.md").is_file() and (tmp_path / "metrics.jsonl").is_file()


def naive_logps(model, prompt_ids, completion_ids):
    """Summed log-probs of a completion after its prompt: one unpadded sequence, the full LM head."""
    ids = torch.tensor([prompt_ids + completion_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)  # (T-1, V)
    return sum(logp[t - 1, ids[0, t]] for t in range(len(prompt_ids), ids.shape[1]))


def test_loss_equals_kto_on_naive_log_probs(tokenizer, tmp_path):
    """Policy and reference differ, so the reference point z0 is non-zero; every row is scored on its own."""
    trainer = KTOTrainer(model=tiny_causal_lm("llama", tokenizer, seed=2),
                         ref_model=tiny_causal_lm("llama", tokenizer, seed=1),
                         args=_cfg(tmp_path, beta=0.5, desirable_weight=1.5, undesirable_weight=0.7),
                         train_dataset=unpaired(4, seed=3), processing_class=tokenizer)
    rows = [trainer.train_dataset[i] for i in (0, 1, 2, 5, 7)]  # 3 desirable, 2 undesirable
    model, ref = trainer.model.eval(), trainer.ref_model
    with torch.no_grad():
        loss, rewards, logps, _, _, labels, z0 = trainer._forward(model, trainer._collate(rows))
        prompts, completions = [r["prompt_ids"] for r in rows], [r["completion_ids"] for r in rows]
        shifted = completions[-1:] + completions[:-1]  # prompt i with the completion of row i - 1
        pol = torch.stack([naive_logps(model, p, c) for p, c in zip(prompts, completions)])
        pol_ref = torch.stack([naive_logps(ref, p, c) for p, c in zip(prompts, completions)])
        kl = kto_kl(torch.stack([naive_logps(model, p, c) for p, c in zip(prompts, shifted)]),
                    torch.stack([naive_logps(ref, p, c) for p, c in zip(prompts, shifted)]))
        expected, exp_rewards, exp_z0 = kto_loss(pol, pol_ref, torch.tensor([r["label"] for r in rows]), kl, 0.5,
                                                 1.5, 0.7)
    assert z0.item() > 0  # the non-clamped branch
    torch.testing.assert_close(logps.double(), pol, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z0.double(), exp_z0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rewards.double(), exp_rewards, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), expected.mean(), rtol=1e-5, atol=1e-6)
    assert labels.tolist() == [True, False, True, False, False]


def test_a_batch_without_one_class_has_no_metric_for_it(tokenizer, tmp_path):
    trainer = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path), train_dataset=unpaired(4),
                         processing_class=tokenizer)
    good = [r for r in (trainer.train_dataset[i] for i in range(8)) if r["label"]]
    loss, metrics = trainer._losses(trainer.model, trainer._collate(good))
    assert torch.isfinite(loss) and torch.isfinite(metrics["rewards/chosen"])
    assert torch.isnan(metrics["rewards/rejected"]) and torch.isnan(metrics["rewards/margins"])  # dropped from logs
    batch = trainer._collate(good)
    with torch.no_grad():  # logits/<class>: the mean logit over the class's completion tokens, as TRL 1.16
        seq, n, _, _, mean_logits = completion_logps(trainer.model, batch)
    assert metrics["logits/chosen"].item() == pytest.approx(((mean_logits * n).sum() / n.sum()).item(), rel=1e-5)


def test_precomputed_reference_is_cached_and_gives_the_live_loss(tokenizer, tmp_path):
    rows = unpaired(6)
    pre = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / "pre", precompute_ref_log_probs=True),
                     train_dataset=rows, processing_class=tokenizer)
    live = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / "live"), train_dataset=rows,
                      processing_class=tokenizer)
    assert pre.ref_model is None and list((tmp_path / "pre" / "ref_logps").glob("kto-train-*.safetensors"))
    batch_rows = [pre.train_dataset[i] for i in range(5)]
    assert all(r["kl_completion_ids"] != r["completion_ids"] for r in batch_rows)  # a fixed OTHER row's completion
    # the live trainer scores the very same mismatched pairs with its reference model
    plain = [{k: v for k, v in r.items() if not k.startswith("ref_")} for r in batch_rows]
    for model in (pre.model, live.model):
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight.mul_(1.5)  # the same move away from the reference
    with torch.no_grad():
        out_pre = pre._forward(pre.model, pre._collate(batch_rows))
        out_live = live._forward(live.model, live._collate(plain))
    for a, b in zip(out_pre, out_live):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    again = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / "pre", precompute_ref_log_probs=True),
                       train_dataset=rows, processing_class=tokenizer)  # reads the cache
    assert again.train_dataset["ref_logps"] == pre.train_dataset["ref_logps"]
    again.train()


def test_peft_reference_is_the_adapter_disabled_base(tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_causal_lm("llama", tokenizer),
                                peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainer = KTOTrainer(model=model, args=_cfg(tmp_path, max_steps=3, learning_rate=1e-2),
                         train_dataset=unpaired(6), processing_class=tokenizer)
    assert trainer.ref_model is None
    history = trainer.train()
    first = [r for r in history if "train/rewards/chosen" in r][0]
    assert abs(first["train/rewards/chosen"]) < 1e-6 and first["train/kl"] == 0.0
    assert abs([r for r in history if "train/loss" in r][-1]["train/rewards/margins"]) > 0


def test_kto_learns_to_prefer_the_desirable_completions(tokenizer, tmp_path):
    trainer = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32),
                         args=_cfg(tmp_path, max_steps=16, per_device_train_batch_size=16, learning_rate=3e-3,
                                   beta=0.5, logging_steps=4),
                         train_dataset=unpaired(96, 0), eval_dataset=unpaired(32, 1), processing_class=tokenizer)
    before = trainer.evaluate()["eval/rewards/margins"]
    history = trainer.train()
    after = [r for r in history if "eval/rewards/margins" in r][-1]
    assert before == 0.0
    # held-out desirable completions' log-ratio rises, the undesirable ones' falls (measured: +1.36 / -1.56)
    assert after["eval/rewards/margins"] > 1.5, after
    assert after["eval/rewards/chosen"] > 0.5 and after["eval/rewards/rejected"] < -0.5, after
    assert max(r["train/kl"] for r in history if "train/kl" in r) > 0  # the reference point was in play


@pytest.mark.parametrize("name", ["preference_explicit.jsonl", "preference_chat.jsonl"])
def test_preference_pairs_become_unpaired_rows(tokenizer, tmp_path, name):
    trainer = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path, max_steps=1, max_length=128),
                         train_dataset=str(DATA / name), processing_class=tokenizer)
    labels = trainer.train_dataset["label"]
    assert sum(labels) * 2 == len(labels)
    trainer.train()


def test_unpaired_csv_with_text_labels(tokenizer, tmp_path):
    path = tmp_path / "feedback.csv"
    path.write_text("prompt,completion,label\n" + "".join(f"q{i} , answer {i},{'true' if i % 2 else 'False'}\n"
                                                          for i in range(8)))
    trainer = KTOTrainer(model=tiny_causal_lm("gpt2", tokenizer), args=_cfg(tmp_path / "out", max_steps=1),
                         train_dataset=str(path), processing_class=tokenizer)
    assert trainer.train_dataset["label"] == [False, True] * 4


def test_bad_input(tokenizer, tmp_path):
    model = tiny_causal_lm("gpt2", tokenizer)
    with pytest.raises(DataError, match="cannot make unpaired"):  # no label column: prompt-completion data
        KTOTrainer(model=model, args=_cfg(tmp_path), processing_class=tokenizer,
                   train_dataset=write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "completion": " c"}] * 4))
    bad = [{"prompt": "p", "completion": " c", "label": v} for v in (1, 0, 1)]  # 0/1 is not a boolean
    with pytest.raises(DataError, match=r"b\.jsonl line 1 \(row 0\): field 'label' must be true or false, found int 1"):
        KTOTrainer(model=model, args=_cfg(tmp_path), processing_class=tokenizer,
                   train_dataset=write_jsonl(tmp_path / "b.jsonl", bad))
    bad = [{"prompt": "p", "completion": " c", "label": v} for v in ("true", "yes", "false")]
    with pytest.raises(DataError, match="line 2 .*'label' must be true or false, found str 'yes'"):
        KTOTrainer(model=model, args=_cfg(tmp_path), processing_class=tokenizer,
                   train_dataset=write_jsonl(tmp_path / "c.jsonl", bad))
    with pytest.raises(DataError, match="line 2 .*'completion' is empty"):
        KTOTrainer(model=model, args=_cfg(tmp_path), processing_class=tokenizer,
                   train_dataset=write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": " c", "label": True},
                                                                    {"prompt": "p", "completion": "", "label": False}]))
    only_good = [r for r in unpaired(4) if r["label"]]
    with pytest.warns(UserWarning, match="all 4 rows are desirable; there are no undesirable"):
        KTOTrainer(model=model, args=_cfg(tmp_path), train_dataset=only_good, processing_class=tokenizer)
    lopsided = unpaired(4) + only_good * 2
    with pytest.warns(UserWarning, match=r"12 desirable and 4 undesirable rows.*undesirable_weight in \[2\.26, 3\.0\]"):
        KTOTrainer(model=model, args=_cfg(tmp_path), train_dataset=lopsided, processing_class=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        KTOTrainer(model=model, args=_cfg(tmp_path, undesirable_weight=2.5), train_dataset=lopsided,
                   processing_class=tokenizer)
    with pytest.raises(ValueError, match="very model"):
        KTOTrainer(model=model, ref_model=model, args=_cfg(tmp_path), train_dataset=unpaired(2),
                   processing_class=tokenizer)


def test_reference_from_a_folder_is_a_frozen_separate_model(tiny_dirs, tokenizer, tmp_path):
    for kw in (dict(ref_model=str(tiny_dirs["llama"])), dict(ref_model_name_or_path=str(tiny_dirs["llama"]))):
        trainer = KTOTrainer(model=tiny_causal_lm("llama", tokenizer), ref_model=kw.get("ref_model"),
                             args=_cfg(tmp_path, ref_model_name_or_path=kw.get("ref_model_name_or_path")),
                             train_dataset=unpaired(2), processing_class=tokenizer)
        saved = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).state_dict()
        assert not trainer.ref_model.training and not any(p.requires_grad for p in trainer.ref_model.parameters())
        assert all(torch.equal(v, saved[k]) for k, v in trainer.ref_model.state_dict().items())


def test_trainer_methods_are_its_own():
    for name, value in vars(KTOTrainer).items():
        if callable(value) and hasattr(value, "__qualname__"):
            assert value.__qualname__ == f"KTOTrainer.{name}", (name, value.__qualname__)


def test_bad_config():
    assert all(text.strip() for text in KTOConfig.field_help().values())  # the --help text of every field
    with pytest.raises(ValueError, match="loss_type"):
        KTOConfig(loss_type="sigmoid")
    with pytest.raises(ValueError, match="per_device_train_batch_size: must be >= 2"):
        KTOConfig(per_device_train_batch_size=1)
    KTOConfig(per_device_train_batch_size=1, per_device_eval_batch_size=1, loss_type="apo_zero_unpaired")
    with pytest.raises(ValueError, match="max_prompt_length: must be < max_length"):
        KTOConfig(max_length=64, max_prompt_length=64)
    with pytest.raises(ValueError, match="truncation_mode"):
        KTOConfig(truncation_mode="middle")
    with pytest.raises(ValueError, match="both 0"):
        KTOConfig(desirable_weight=0.0, undesirable_weight=0.0)


TWO_PROCESS_SCRIPT = """
import json, os, sys
from rlhfkit.testing import hidden_rule_preferences, tiny_causal_lm, tiny_tokenizer
from rlhfkit.trainers.kto import KTOConfig, KTOTrainer
tok = tiny_tokenizer()
rows = []
for p in hidden_rule_preferences(16, 0):
    rows += [dict(prompt=p["prompt"], completion=p["chosen"], label=True),
             dict(prompt=p["prompt"], completion=p["rejected"], label=False)]
args = KTOConfig(output_dir=sys.argv[1], max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                 report_to="none", disable_tqdm=True, max_length=64, max_prompt_length=32, seed=3)
trainer = KTOTrainer(model=tiny_causal_lm("gpt2", tok, hidden_size=32), args=args, train_dataset=rows,
                     processing_class=tok)
seen, losses = [], trainer._losses
def spy(model, batch):
    loss, metrics = losses(model, batch)
    seen.append([metrics["kl"].item(), batch["input_ids"].tolist()])
    return loss, metrics
trainer.loop.step_fn = spy
trainer.train()
rank = trainer.loop.accelerator.process_index
open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w").write(json.dumps(seen))
"""


def test_two_processes_share_one_reference_point(tmp_path):
    """Under `accelerate launch` each rank scores its own batch, but z0 is the mean over ranks (TRL's gather)."""
    script = tmp_path / "train.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541"]
    run = subprocess.run(launcher + [str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(a) == len(b) == 3
    assert all(x[1] != y[1] for x, y in zip(a, b))  # different rows on the two ranks
    assert [x[0] for x in a] == [y[0] for y in b] and max(x[0] for x in a) > 0  # one z0, and not only 0


def test_cli_runs_the_example(tiny_dirs, tmp_path):
    assert rlhfkit.cli.TRAINERS["kto"] == ("KTOConfig", "KTOTrainer")
    out = tmp_path / "run"
    assert rlhfkit.cli.main(["kto", "--config", str(ROOT / "examples" / "kto.yaml"),
                             "--model_name_or_path", str(tiny_dirs["gpt2"]),
                             "--dataset_name", write_jsonl(tmp_path / "fb.jsonl", unpaired(8)),
                             "--eval_dataset_name", write_jsonl(tmp_path / "fb_eval.jsonl", unpaired(4, 1)),
                             "--output_dir", str(out), "--max_steps", "2", "--disable_tqdm"]) == 0
    AutoModelForCausalLM.from_pretrained(out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/rewards/margins" in r for r in rows) and any("train/kl" in r for r in rows)
