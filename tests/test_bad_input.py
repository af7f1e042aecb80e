"""Bad input through the real entry point ``rlhfkit.cli.main``: one table, one assertion per row.

The table covers every command: sft, reward, dpo, kto, grpo, rloo, ppo, ppo-example, control, eval,
compare, demo, tiny-model and every ``rlhfkit feedback`` sub-command. Each case must: exit with code 2
(a usage error), print ONE line (argparse's usage block and progress bars aside) naming where the
problem is (flag, file and line, field, reward function) that matches the case's pattern, print no
traceback, and leave a previous run's ``output_dir`` exactly as it was (config.yaml included).
Rows run in-process against tiny models built once. A second table checks that options accepted
for compatibility but without effect warn when set, and only then.
"""

from __future__ import annotations

import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "data"
SENTINEL = "previous_run: true\nlearning_rate: 0.5\n"


@dataclass
class Ctx:
    root: Path
    lm: str
    rm: str
    db: str

    @property
    def out(self) -> str:
        return str(self.root / "previous-run")

    def file(self, name: str, content: str | bytes) -> str:
        path = self.root / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def folder(self, name: str, files: dict[str, str] | None = None) -> str:
        path = self.root / "inputs" / name
        path.mkdir(parents=True, exist_ok=True)
        for fname, content in (files or {}).items():
            (path / fname).write_text(content)
        return str(path)

    def sft(self, *flags: str) -> list[str]:
        return ["sft", "--model_name_or_path", self.lm, "--dataset_name", str(FIXTURES / "sft.jsonl"),
                "--output_dir", self.out, "--max_steps", "1", "--report_to", "none", *flags]

    def reward(self, *flags: str) -> list[str]:
        return ["reward", "--model_name_or_path", self.rm, "--dataset_name", str(FIXTURES / "preference_explicit.jsonl"),
                "--output_dir", self.out, "--max_steps", "1", "--report_to", "none", *flags]

    def dpo(self, *flags: str) -> list[str]:
        return ["dpo", "--model_name_or_path", self.lm, "--dataset_name", str(FIXTURES / "preference_explicit.jsonl"),
                "--output_dir", self.out, "--max_steps", "1", "--report_to", "none", *flags]

    def eval(self, *flags: str) -> list[str]:
        return ["eval", "--output_dir", self.out, *flags]

    def compare(self, *flags: str) -> list[str]:
        return ["compare", "--policy", self.lm, "--reward_model", self.rm,
                "--pairs", str(FIXTURES / "preference_explicit.jsonl"), "--output_dir", self.out, "--quiet", *flags]

    def kto(self, *flags: str) -> list[str]:
        return ["kto", "--model_name_or_path", self.lm, "--dataset_name", str(FIXTURES / "preference_explicit.jsonl"),
                "--output_dir", self.out, "--max_steps", "1", "--report_to", "none", *flags]

    def online(self, command: str, *flags: str, reward: bool = True) -> list[str]:
        return [command, "--model_name_or_path", self.lm, "--dataset_name", str(FIXTURES / "prompts.jsonl"),
                "--output_dir", self.out, "--max_steps", "1", "--report_to", "none", "--num_generations", "2",
                "--per_device_train_batch_size", "2", "--max_completion_length", "4",
                *(["--reward_funcs", self.reward_fn] if reward else []), *flags]

    def grpo(self, *flags: str) -> list[str]:
        return self.online("grpo", *flags)

    def grpo_no_flag(self, *flags: str) -> list[str]:
        """grpo without --reward_funcs (a flag would override the YAML file or override under test)."""
        return self.online("grpo", *flags, reward=False)

    def rloo(self, *flags: str) -> list[str]:
        return self.online("rloo", *flags)

    def ppo(self, *flags: str) -> list[str]:
        return ["ppo", "--model_name_or_path", self.lm, "--dataset_name", str(FIXTURES / "prompts.jsonl"),
                "--reward_model_path", self.rm, "--output_dir", self.out, "--max_steps", "1",
                "--per_device_train_batch_size", "2", "--mini_batch_size", "2", "--report_to", "none", *flags]

    def control(self, *flags: str) -> list[str]:
        return ["control", "--output_dir", self.out, "--total_timesteps", "16", "--num_envs", "1", "--num_steps",
                "16", "--num_minibatches", "1", "--tensorboard", "false", "--progress", "false", *flags]

    def fb(self, *words: str) -> list[str]:
        return ["feedback", *words, "--db", self.db]

    @property
    def run_dir(self) -> str:
        """A run folder that has logged two steps (for rlhfkit plot)."""
        return self.folder("logged-run", {"metrics.jsonl": '{"step": 1, "train/loss": 2.0, "train/learning_rate": 0.1}\n'
                                                           '{"step": 2, "train/loss": 1.5, "train/learning_rate": 0.1}\n'})

    @property
    def reward_fn(self) -> str:
        """A reward function that imports: 'file.py:function'."""
        return str(self.root / "rewards_ok.py") + ":length"


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    expect: str  # regex the error line must match
    missing: tuple[str, ...] = ()  # modules made unimportable for the case (an optional package not installed)


BAD_JSON_57 = "".join('{"prompt": "p%d", "chosen": " a", "rejected": " b"}\n' % i for i in range(56)) + "{oops\n"
GOOD_PREFS = '{"prompt": "p", "chosen": " a", "rejected": " b"}\n'

CASES = [
    # ---- model paths ----
    Case("model-missing-path", lambda c: c.sft("--model_name_or_path", "runs/nope/tiny"),
         r"--model_name_or_path: no such folder 'runs/nope/tiny'.*rlhfkit tiny-model"),
    Case("model-missing-one-slash", lambda c: c.sft("--model_name_or_path", "no_such_dir_xyz/tiny"),
         r"--model_name_or_path: no such folder 'no_such_dir_xyz/tiny'.*HF_HUB_OFFLINE"),
    Case("model-folder-not-a-model", lambda c: c.sft("--model_name_or_path", c.folder("empty")),
         r"--model_name_or_path: folder .* is not a model folder \(no config.json\)"),
    Case("model-is-a-file", lambda c: c.sft("--model_name_or_path", str(FIXTURES / "sft.jsonl")),
         r"--model_name_or_path: .*sft.jsonl' is a file"),
    Case("model-from-yaml-missing", lambda c: ["sft", "--config", c.file("m.yaml", "model_name_or_path: runs/q/tiny\n"
                                                                                 f"dataset_name: {FIXTURES / 'sft.jsonl'}\n"),
                                               "--output_dir", c.out],
         r"m.yaml line 1: model_name_or_path: no such folder 'runs/q/tiny'"),
    Case("model-bad-hub-id", lambda c: c.sft("--model_name_or_path", "bad id!!"),
         r"--model_name_or_path: 'bad id!!' is neither a local folder nor a valid hub id"),
    Case("reward-model-missing", lambda c: c.reward("--model_name_or_path", "./runs/tiny-rm"),
         r"--model_name_or_path: no such folder './runs/tiny-rm'"),
    Case("dpo-ref-missing", lambda c: c.dpo("--ref_model_name_or_path", "runs/x/ref"),
         r"--ref_model_name_or_path: no such folder 'runs/x/ref'"),
    Case("required-model", lambda c: ["sft", "--dataset_name", str(FIXTURES / "sft.jsonl"), "--output_dir", c.out],
         r"--model_name_or_path is required"),
    Case("required-dataset", lambda c: ["dpo", "--model_name_or_path", c.lm, "--output_dir", c.out],
         r"--dataset_name is required"),
    # ---- data files ----
    Case("data-missing", lambda c: c.sft("--dataset_name", "data/none.jsonl"),
         r"--dataset_name: no such file or folder 'data/none.jsonl'"),
    Case("data-bad-json-line", lambda c: c.dpo("--dataset_name", c.file("p57.jsonl", BAD_JSON_57)),
         r"p57.jsonl line 57 \(row 56\): malformed JSON"),
    Case("data-not-utf8", lambda c: c.sft("--dataset_name", c.file("latin.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')),
         r"latin.jsonl line 2: byte 0xe9 at offset 28 is not UTF-8"),
    Case("data-sft-wrong-columns", lambda c: c.sft("--dataset_name", c.file("qa.jsonl", '{"prompt": "q", "answer": "a"}\n')),
         r"qa.jsonl: columns \['answer', 'prompt'\] are prompt_only data.*\['answer'\].*rename it to 'completion'"),
    Case("data-pref-question-column", lambda c: c.reward("--dataset_name", c.file(
        "q.jsonl", '{"question": "q", "chosen": " a", "rejected": " b"}\n')),
         r"q.jsonl line 1 \(row 0\).*\['question'\]; if one of them holds the prompt, rename it to 'prompt'"),
    Case("data-empty-file", lambda c: c.sft("--dataset_name", c.file("empty.jsonl", "\n")),
         r"empty.jsonl: contains no records"),
    Case("data-row-not-object", lambda c: c.sft("--dataset_name", c.file("list.jsonl", '{"text": "a"}\n[1, 2]\n')),
         r"list.jsonl line 2 \(row 1\): expected a JSON object"),
    Case("data-csv-cells", lambda c: c.sft("--dataset_name", c.file("pc.csv", "prompt,completion\na,b\nc,d,e\n")),
         r"pc.csv line 3 \(row 1\): 3 cells"),
    Case("data-extension", lambda c: c.sft("--dataset_name", c.file("data.txt", "hello\n")),
         r"data.txt: unknown file extension '.txt'"),
    Case("data-empty-completion", lambda c: c.sft("--dataset_name", c.file(
        "ec.jsonl", '{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": ""}\n')),
         r"ec.jsonl line 2 \(row 1\).*'completion'"),
    Case("data-folder-no-split", lambda c: c.sft("--dataset_name", c.folder("only-train", {"train.jsonl": '{"text": "a"}\n'}),
                                                 "--dataset_split", "validation"),
         r"only-train: has no split 'validation'; its data files give the splits \['train'\]"),
    Case("data-folder-unnamed-file", lambda c: c.sft("--dataset_name", c.folder(
        "mixed", {"train.jsonl": '{"text": "a"}\n', "extra.jsonl": '{"text": "b"}\n'})),
         r"mixed: cannot tell the split of \['extra.jsonl'\]"),
    Case("data-type-clash", lambda c: c.reward("--dataset_name", c.file(
        "clash.jsonl", '{"prompt": "p", "chosen": " a", "rejected": " b", "margin": 1}\n'
                       '{"prompt": "p", "chosen": " a", "rejected": " b", "margin": "big"}\n')),
         r"clash.jsonl line 2 \(row 1\).*margin"),
    Case("data-eval-missing", lambda c: c.sft("--eval_dataset_name", "data/eval-none.jsonl"),
         r"--eval_dataset_name: no such file or folder"),
    Case("data-max-length-too-small", lambda c: c.sft("--dataset_name", c.file(
        "long.jsonl", '{"prompt": "one two three four five six seven eight", "completion": " nine"}\n'),
        "--max_length", "2"),
         r"long.jsonl line 1 \(row 0\): no completion token is left after truncating to max_length=2"),
    # ---- flag values ----
    Case("flag-int-text", lambda c: c.sft("--max_steps", "ten"), r"--max_steps: expected an integer, got 'ten'"),
    Case("flag-float-text", lambda c: c.reward("--learning_rate", "fast"),
         r"--learning_rate: expected a number, got 'fast'"),
    Case("flag-lr-negative", lambda c: c.sft("--learning_rate", "-1"), r"--learning_rate: must be > 0, got -1.0"),
    Case("flag-dash-form", lambda c: c.sft("--learning-rate", "0"), r"--learning_rate: must be > 0, got 0.0"),
    Case("flag-bool-maybe", lambda c: c.sft("--packing", "maybe"), r"--packing: expected true or false, got 'maybe'"),
    Case("flag-epochs-zero", lambda c: c.sft("--num_train_epochs", "0"), r"--num_train_epochs: must be > 0"),
    Case("flag-batch-zero", lambda c: c.sft("--per_device_train_batch_size", "0"),
         r"--per_device_train_batch_size: must be >= 1, got 0"),
    Case("flag-int-fraction", lambda c: c.sft("--max_length", "2.5"), r"--max_length: expected an integer, got '2.5'"),
    Case("flag-eval-fraction", lambda c: c.sft("--eval_fraction", "1.5"), r"--eval_fraction: must be in \[0.0, 1.0\)"),
    Case("flag-scheduler", lambda c: c.sft("--lr_scheduler_type", "cosin"),
         r"--lr_scheduler_type: must be one of linear"),
    Case("flag-report-to", lambda c: c.sft("--report_to", "tensorbord"), r"--report_to: must be a comma-separated list"),
    Case("report-to-wandb-missing", lambda c: c.sft("--report_to", "wandb"),
         r"--report_to: wandb is requested but the wandb package is not installed; pip install wandb", ("wandb",)),
    Case("report-to-tensorboard-missing", lambda c: c.dpo("--report_to", "jsonl,tensorboard"),  # the default, given
         r"--report_to: tensorboard is requested but the tensorboard package is not installed; pip install "
         r"tensorboard", ("tensorboard", "tensorboardX")),
    Case("report-to-trackio-missing", lambda c: c.sft("--report_to", "trackio"),
         r"--report_to: trackio is requested but the trackio package is not installed; pip install trackio",
         ("trackio",)),
    Case("report-to-wandb-missing-grpo", lambda c: c.grpo("--report_to", "wandb"),
         r"--report_to: wandb is requested .* pip install wandb", ("wandb",)),
    Case("report-to-from-yaml-missing", lambda c: ["sft", "--config", c.file("wandb.yaml", f"model_name_or_path: {c.lm}\n"
                                                                                         "report_to: wandb\n"),
                                                   "--dataset_name", str(FIXTURES / "sft.jsonl"), "--output_dir", c.out],
         r"wandb.yaml line 2: report_to: wandb is requested .* pip install wandb", ("wandb",)),
    Case("report-to-tensorboard-only-missing", lambda c: c.kto("--report_to", "tensorboard"),
         r"--report_to: tensorboard is requested .* pip install tensorboard", ("tensorboard", "tensorboardX")),
    Case("ppo-report-to-tensorboard-missing", lambda c: c.ppo("--report_to", "tensorboard"),  # the default, given
         r"--report_to: tensorboard is requested .* pip install tensorboard", ("tensorboard", "tensorboardX")),
    Case("ppo-report-to-wandb-missing", lambda c: c.ppo("--report_to", "wandb"),
         r"--report_to: wandb is requested but the wandb package is not installed; pip install wandb", ("wandb",)),
    Case("ppo-report-to-unknown", lambda c: c.ppo("--report_to", "tensorbord"),
         r"--report_to: must be a comma-separated list"),
    Case("flag-bf16-fp16", lambda c: c.sft("--bf16", "--fp16"), r"--fp16: choose one of bf16 and fp16"),
    Case("flag-dtype", lambda c: c.sft("--dtype", "float8"), r"--dtype: must be one of auto, float32"),
    Case("flag-attn", lambda c: c.sft("--attn_implementation", "fast"), r"--attn_implementation: must be one of eager"),
    Case("flag-lora-r", lambda c: c.sft("--use_peft", "--lora_r", "0"), r"--lora_r: must be >= 1, got 0"),
    Case("flag-lora-dropout", lambda c: c.sft("--lora_dropout", "1"), r"--lora_dropout: must be in \[0.0, 1.0\)"),
    Case("flag-warmup-ratio", lambda c: c.sft("--warmup_ratio", "2"), r"--warmup_ratio: must be in \[0.0, 1.0\]"),
    Case("flag-adam-beta", lambda c: c.sft("--adam_beta2", "1"), r"--adam_beta2: must be in \[0.0, 1.0\)"),
    Case("flag-save-limit", lambda c: c.sft("--save_total_limit", "0"), r"--save_total_limit: must be >= 1"),
    Case("flag-grad-norm", lambda c: c.sft("--max_grad_norm", "-1"), r"--max_grad_norm: must be > 0"),
    Case("flag-not-none", lambda c: c.sft("--learning_rate", "none"), r"--learning_rate: expected a number, got 'none'"),
    # ---- TRL 1.16 flags ----
    Case("flag-eval-strategy", lambda c: c.sft("--eval_strategy", "sometimes"),
         r"--eval_strategy: must be one of no, steps, epoch, got 'sometimes'"),
    Case("flag-logging-strategy", lambda c: c.dpo("--logging_strategy", "hourly"),
         r"--logging_strategy: must be one of no, steps, epoch, got 'hourly'"),
    Case("flag-save-strategy-no-steps", lambda c: c.sft("--save_strategy", "steps"),
         r"--save_strategy: 'steps' needs save_steps > 0"),
    Case("flag-optim-unknown", lambda c: c.sft("--optim", "lion9"),
         r"--optim: must be one of adamw_torch_fused, adamw_torch, adafactor, sgd, adagrad, rmsprop; got 'lion9'"),
    Case("flag-optim-other-package", lambda c: c.reward("--optim", "paged_adamw_8bit"),
         r"--optim: must be one of .*; 'paged_adamw_8bit' needs the bitsandbytes package"),
    Case("flag-4bit-without-lora", lambda c: c.sft("--load_in_4bit"), r"--load_in_4bit: needs use_peft"),
    Case("flag-4bit-and-8bit", lambda c: c.sft("--use_peft", "--load_in_4bit", "--load_in_8bit"),
         r"--load_in_8bit: choose one of load_in_4bit and load_in_8bit"),
    Case("flag-4bit-no-bitsandbytes", lambda c: c.sft("--use_peft", "--load_in_4bit"),
         r"--load_in_4bit: quantized loading needs the bitsandbytes package, which is not installed", ("bitsandbytes",)),
    Case("flag-8bit-no-bitsandbytes-dpo", lambda c: c.dpo("--use_peft", "--load_in_8bit"),
         r"--load_in_8bit: quantized loading needs the bitsandbytes package", ("bitsandbytes",)),
    Case("flag-4bit-no-bitsandbytes-grpo", lambda c: c.grpo("--use_peft", "--load_in_4bit"),
         r"--load_in_4bit: quantized loading needs the bitsandbytes package", ("bitsandbytes",)),
    Case("flag-quant-type", lambda c: c.sft("--bnb_4bit_quant_type", "nf8"),
         r"--bnb_4bit_quant_type: must be one of nf4, fp4, got 'nf8'"),
    Case("flag-dataset-config-local", lambda c: c.sft("--dataset_config", "main"),
         r"--dataset_config: 'main' selects a configuration of a hub dataset, but the training data .*sft.jsonl' is "
         r"local"),
    Case("flag-split-alias-clash", lambda c: c.sft("--dataset_split", "a", "--dataset_train_split", "b"),
         r"--dataset_train_split: is TRL's name for dataset_split, which is set to 'a'"),
    Case("flag-text-field-missing", lambda c: c.sft("--dataset_text_field", "content"),
         r"sft.jsonl: has no column 'content' \(dataset_text_field\); its columns are \['text'\]"),
    Case("flag-assistant-only-text", lambda c: c.sft("--assistant_only_loss"),
         r"--assistant_only_loss: needs conversational data .*sft.jsonl holds text rows"),
    Case("flag-modules-to-save", lambda c: c.sft("--use_peft", "--lora_modules_to_save", "no_such_head"),
         r"--lora_modules_to_save: no module of the model is named no_such_head"),
    Case("flag-model-revision-empty", lambda c: c.sft("--model_revision", " "), r"--model_revision: is empty"),
    Case("flag-hub-private-maybe", lambda c: c.sft("--hub_private_repo", "maybe"),
         r"--hub_private_repo: expected true or false or none, got 'maybe'"),
    Case("grpo-eval-strategy-epoch", lambda c: c.grpo("--eval_strategy", "epoch"),
         r"--eval_strategy: 'epoch' is not supported by the online trainers \(GRPO, RLOO\)"),
    Case("grpo-optim", lambda c: c.grpo("--optim", "sgd"), r"--optim: the online trainers \(GRPO, RLOO\) train with AdamW"),
    Case("rloo-torch-compile", lambda c: c.rloo("--torch_compile"),
         r"--torch_compile: is not supported by the online trainers"),
    Case("flag-missing-value", lambda c: c.sft("--max_steps"),
         r"argument --max_steps/--max-steps: expected one argument"),
    Case("flag-unknown-typo", lambda c: c.sft("--learnig_rate", "1e-3"),
         r"unknown flag --learnig_rate; did you mean --learning_rate\?"),
    Case("flag-positional-junk", lambda c: c.sft("foo"), r"unexpected argument 'foo'"),
    Case("output-dir-is-file", lambda c: c.sft("--output_dir", str(FIXTURES / "sft.jsonl")),
         r"--output_dir: '.*sft.jsonl' is a file"),
    Case("output-dir-under-file", lambda c: c.sft("--output_dir", str(FIXTURES / "sft.jsonl" / "run")),
         r"--output_dir: '.*sft.jsonl' is a file, so"),
    Case("resume-missing", lambda c: c.sft("--resume_from_checkpoint", "runs/none/checkpoint-5"),
         r"--resume_from_checkpoint: 'runs/none/checkpoint-5' is not a checkpoint folder"),
    Case("resume-latest-none", lambda c: c.sft("--resume_from_checkpoint", "latest"),
         r"--resume_from_checkpoint: 'latest', but .* has no checkpoint"),
    Case("push-offline", lambda c: c.sft("--push_to_hub"), r"--push_to_hub: HF_HUB_OFFLINE is set"),
    Case("hub-model-id", lambda c: c.sft("--hub_model_id", "a/b/c"), r"--hub_model_id: must look like 'owner/name'"),
    # ---- overrides ----
    Case("override-typo", lambda c: c.sft("learnig_rate=1e-3"),
         r"override 'learnig_rate=1e-3': unknown SFTConfig field.*did you mean 'learning_rate'"),
    Case("override-type", lambda c: c.sft("max_steps=ten"), r"override max_steps=ten: expected an integer"),
    Case("override-range", lambda c: c.dpo("beta=0"), r"override beta=0: must be > 0"),
    # ---- YAML configs ----
    Case("yaml-syntax", lambda c: c.sft("--config", c.file("syntax.yaml", "max_steps: 2\nlearning_rate: [1e-3\n")),
         r"syntax.yaml line 3 column 1: YAML syntax error"),
    Case("yaml-not-mapping", lambda c: c.sft("--config", c.file("list.yaml", "- max_steps\n- 2\n")),
         r"list.yaml: expected a mapping of config fields"),
    Case("yaml-unknown-key", lambda c: c.sft("--config", c.file("typo.yaml", "max_steps: 2\nlearnig_rate: 0.1\n")),
         r"typo.yaml line 2: unknown SFTConfig field 'learnig_rate'; did you mean 'learning_rate'"),
    Case("yaml-int-text", lambda c: c.sft("--config", c.file("ten.yaml", "max_steps: ten\n")),
         r"ten.yaml line 1: max_steps: expected an integer, got 'ten'"),
    Case("yaml-float-text", lambda c: c.sft("--config", c.file("fast.yaml", "seed: 1\nlearning_rate: fast\n")),
         r"fast.yaml line 2: learning_rate: expected a number, got 'fast'"),
    Case("yaml-negative-lr", lambda c: c.sft("--config", c.file("neg.yaml", "learning_rate: -0.001\n")),
         r"neg.yaml line 1: learning_rate: must be > 0"),
    Case("yaml-bool-maybe", lambda c: c.dpo("--config", c.file("maybe.yaml", "precompute_ref_log_probs: maybe\n")),
         r"maybe.yaml line 1: precompute_ref_log_probs: expected true or false, got 'maybe'"),
    Case("yaml-duplicate", lambda c: c.sft("--config", c.file("dup.yaml", "seed: 1\nmax_steps: 2\nseed: 3\n")),
         r"dup.yaml line 3: 'seed' is given twice \(first on line 1\)"),
    Case("yaml-not-utf8", lambda c: c.sft("--config", c.file("latin.yaml", b"seed: 1\noutput_dir: caf\xe9\n")),
         r"latin.yaml line 2: byte 0xe9 .* not UTF-8"),
    Case("yaml-missing-file", lambda c: c.sft("--config", "configs/none.yaml"),
         r"--config: no such file 'configs/none.yaml'"),
    Case("yaml-null-required", lambda c: c.sft("--config", c.file("null.yaml", "max_length: null\n")),
         r"null.yaml line 1: max_length: expected an integer, got null"),
    Case("yaml-list-for-text", lambda c: c.sft("--config", c.file("lst.yaml", "dataset_split: [train, test]\n")),
         r"lst.yaml line 1: dataset_split: expected text"),
    # ---- DPO and reward fields ----
    Case("dpo-label-smoothing", lambda c: c.dpo("--label_smoothing", "0.7"),
         r"--label_smoothing: must be in \[0.0, 0.5\)"),
    Case("dpo-smoothing-ignored", lambda c: c.dpo("--loss_type", "ipo", "--label_smoothing", "0.1"),
         r"--label_smoothing: is used by loss_type sigmoid, robust, simpo only"),
    Case("dpo-loss-type", lambda c: c.dpo("--loss_type", "dpo"), r"--loss_type: must be one of"),
    Case("dpo-beta", lambda c: c.dpo("--beta", "-0.1"), r"--beta: must be > 0"),
    Case("reward-ratings-as", lambda c: c.reward("--ratings_as", "regresion"),
         r"--ratings_as: must be one of pairs, regression"),
    Case("reward-regression-needs-ratings", lambda c: c.reward("--ratings_as", "regression"),
         r"preference_explicit.jsonl: ratings_as='regression' needs ratings rows"),
    # ---- eval ----
    Case("eval-nothing", lambda c: c.eval(), r"nothing to evaluate"),
    Case("eval-policy-missing", lambda c: c.eval("--policies", "a=runs/no/policy", "--prompts", c.file("p.txt", "hi\n"),
                                                 "--reward_model", c.rm),
         r"--policies \(a\): no such folder 'runs/no/policy'"),
    Case("eval-prompts-not-utf8", lambda c: c.eval("--policies", c.lm, "--prompts", c.file("p8.txt", b"hi\ncaf\xe9\n"),
                                                   "--reward_model", c.rm),
         r"p8.txt line 2: byte 0xe9"),
    Case("eval-pairs-line-57", lambda c: c.eval("--pairs", c.file("e57.jsonl", BAD_JSON_57), "--reward_model", c.rm),
         r"e57.jsonl line 57 \(row 56\): malformed JSON"),
    Case("eval-samples-zero", lambda c: c.eval("--samples_per_prompt", "0"), r"--samples_per_prompt: must be >= 1"),
    Case("eval-kl-estimator", lambda c: c.eval("--kl_estimator", "k4"), r"--kl_estimator: must be one of"),
    Case("eval-reward-fn-form", lambda c: c.eval("--reward_fn", "notafunction"),
         r"--reward_fn: must look like 'package.module:function'"),
    Case("eval-reward-fn-import", lambda c: c.eval("--policies", c.lm, "--prompts", c.file("p.txt", "hi\n"),
                                                   "--reward_fn", "no_such_module_q:fn"),
         r"--reward_fn: cannot import module 'no_such_module_q' for 'no_such_module_q:fn'"),
    Case("eval-baseline", lambda c: c.eval("--policies", f"a={c.lm}", "--prompts", c.file("p.txt", "hi\n"),
                                           "--reward_model", c.rm, "--baseline", "b"),
         r"--baseline: 'b' is not one of the policies \['a'\]"),
    Case("eval-pairs-need-rm", lambda c: c.eval("--pairs", str(FIXTURES / "preference_explicit.jsonl")),
         r"--pairs: pairs need a reward_model"),
    # ---- compare / demo / helpers ----
    Case("compare-pairs-line-57", lambda c: c.compare("--pairs", c.file("c57.jsonl", BAD_JSON_57)),
         r"c57.jsonl line 57 \(row 56\): malformed JSON"),
    Case("compare-policy-missing", lambda c: c.compare("--policy", "runs/demo-none/sft"),
         r"--policy: no such folder 'runs/demo-none/sft'"),
    Case("compare-mini-batch", lambda c: c.compare("--ppo_mini_batch_size", "5"),
         r"--ppo_mini_batch_size: must divide ppo_batch_size"),
    Case("compare-prompts-missing", lambda c: c.compare("--prompts", "data/no-prompts.txt"), r"--prompts: no such file"),
    Case("demo-heads", lambda c: ["demo", "--output_dir", c.out, "--hidden_size", "30"],
         r"num_heads: must divide hidden_size \(30\)"),
    Case("demo-budget-text", lambda c: ["demo", "--output_dir", c.out, "budget=ten"],
         r"override budget=ten: expected an integer"),
    Case("demo-share", lambda c: ["demo", "--output_dir", c.out, "--pretrain_rock_share", "2"],
         r"--pretrain_rock_share: must be in \[0.0, 1.0\]"),
    Case("demo-output-file", lambda c: ["demo", "--output_dir", str(FIXTURES / "sft.jsonl")],
         r"--output_dir: .* is a file"),
    Case("tiny-arch", lambda c: ["tiny-model", "--output_dir", c.out, "--arch", "gpt3"],
         r"--arch: must be one of gpt2, llama"),
    Case("tiny-size", lambda c: ["tiny-model", "--output_dir", c.out, "--hidden_size", "0"],
         r"--hidden_size: must be >= 1"),
    Case("tiny-output-file", lambda c: ["tiny-model", "--output_dir", str(FIXTURES / "sft.jsonl")],
         r"--output_dir: .* is a file"),
    Case("tiny-no-output", lambda c: ["tiny-model"], r"output_dir: is required"),
    Case("ppo-override-type", lambda c: ["ppo-example", "--output_dir", c.out, "learning_rate=fast"],
         r"override learning_rate=fast: expected a number"),
    Case("ppo-unknown-field", lambda c: ["ppo-example", "--output_dir", c.out, "mini_batchsize=4"],
         r"unknown PPOConfig field 'mini_batchsize'; did you mean 'mini_batch_size'"),
    Case("ppo-steps", lambda c: ["ppo-example", "--output_dir", c.out, "--steps", "0"], r"--steps: must be >= 1"),
    Case("ppo-yaml-syntax", lambda c: ["ppo-example", "--output_dir", c.out, "--config", c.file("ppo.yaml", "batch_size: : 4\n")],
         r"ppo.yaml line 1 column \d+: YAML syntax error"),
    Case("command-typo", lambda c: ["sftt"], r"unknown command 'sftt'; did you mean 'sft'"),
    # ---- policies and reward models swapped, reward functions that fail to import (sft/dpo/eval/compare) ----
    Case("sft-model-is-reward-model", lambda c: c.sft("--model_name_or_path", c.rm),
         r"--model_name_or_path: .*rm' is a reward model \(GPT2ForSequenceClassification\), not a causal language"),
    Case("dpo-ref-is-reward-model", lambda c: c.dpo("--ref_model_name_or_path", c.rm),
         r"--ref_model_name_or_path: .* is a reward model"),
    Case("eval-rm-is-causal-lm", lambda c: c.eval("--pairs", str(FIXTURES / "preference_explicit.jsonl"),
                                                  "--reward_model", c.lm),
         r"--reward_model: .*lm' is a causal language model \(GPT2LMHeadModel\), not a reward model"),
    Case("eval-policy-is-reward-model", lambda c: c.eval("--policies", f"a={c.rm}", "--prompts", c.file("p.txt", "hi\n"),
                                                         "--reward_model", c.rm),
         r"--policies \(a\): .* is a reward model"),
    Case("eval-reward-fn-syntax", lambda c: c.eval("--policies", c.lm, "--prompts", c.file("p.txt", "hi\n"),
                                                   "--reward_fn", str(c.root / "rewards_syntax.py") + ":length"),
         r"--reward_fn: importing .*rewards_syntax.py line 2: SyntaxError"),
    Case("compare-policy-is-reward-model", lambda c: c.compare("--policy", c.rm), r"--policy: .* is a reward model"),
    Case("compare-rm-is-causal-lm", lambda c: c.compare("--reward_model", c.lm),
         r"--reward_model: .* not a reward model"),
    Case("compare-reward-fn-missing", lambda c: c.compare("--reward_fn", "nosuchmodule_q:fn"),
         r"--reward_fn: cannot import module 'nosuchmodule_q'"),
    Case("compare-unknown-key", lambda c: c.compare("--config", c.file("cmp.yaml", "dpo_los_type: ipo\n")),
         r"cmp.yaml line 1: unknown CompareConfig field 'dpo_los_type'; did you mean 'dpo_loss_type'"),
    Case("demo-unknown-flag", lambda c: ["demo", "--output_dir", c.out, "--hiden_size", "64"],
         r"unknown flag --hiden_size; did you mean --hidden_size"),
    Case("demo-yaml-type", lambda c: ["demo", "--output_dir", c.out, "--config", c.file("demo.yaml", "sft_steps: many\n")],
         r"demo.yaml line 1: sft_steps: expected an integer, got 'many'"),
    Case("reward-csv-cells", lambda c: c.reward("--dataset_name", c.file("r.csv", "prompt,chosen,rejected\np,a,b\nq,c\n")),
         r"r.csv line 3 \(row 1\): 2 cells"),
    # ---- kto ----
    Case("kto-model-missing", lambda c: c.kto("--model_name_or_path", "runs/none/kto"),
         r"--model_name_or_path: no such folder 'runs/none/kto'"),
    Case("kto-ref-missing", lambda c: c.kto("--ref_model_name_or_path", "runs/none/ref"),
         r"--ref_model_name_or_path: no such folder 'runs/none/ref'"),
    Case("kto-loss-type", lambda c: c.kto("--loss_type", "sigmoid"), r"--loss_type: must be one of"),
    Case("kto-beta-zero", lambda c: c.kto("--beta", "0"), r"--beta: must be > 0"),
    Case("kto-weights-zero", lambda c: c.kto("--desirable_weight", "0", "--undesirable_weight", "0"),
         r"undesirable_weight: and desirable_weight are both 0"),
    Case("kto-weight-negative", lambda c: c.kto("--desirable_weight", "-1"), r"--desirable_weight: must be >= 0"),
    Case("kto-prompt-length", lambda c: c.kto("--max_prompt_length", "2048"),
         r"--max_prompt_length: must be < max_length"),
    Case("kto-truncation-mode", lambda c: c.kto("--truncation_mode", "middle"), r"--truncation_mode: must be one of"),
    Case("kto-label-text", lambda c: c.kto("--dataset_name", c.file(
        "kl.jsonl", '{"prompt": "p", "completion": " a", "label": true}\n{"prompt": "p", "completion": " b", "label": "yes"}\n')),
         r"kl.jsonl line 2 \(row 1\): field 'label' is str 'yes'"),
    Case("kto-no-label", lambda c: c.kto("--dataset_name", str(FIXTURES / "sft.jsonl")),
         r"sft.jsonl: cannot make unpaired \(KTO\) rows from 'language_modeling' data"),
    Case("kto-yaml-unknown", lambda c: c.kto("--config", c.file("kto.yaml", "desirable_weigth: 1.0\n")),
         r"kto.yaml line 1: unknown KTOConfig field 'desirable_weigth'; did you mean 'desirable_weight'"),
    Case("kto-data-folder-empty", lambda c: c.kto("--dataset_name", c.folder("no-data", {"README.md": "hi\n"})),
         r"no-data.*no data files"),
    # ---- grpo: tools and environments ----
    Case("grpo-tool-no-attribute", lambda c: c.grpo("--tools", "os.path:no_such_tool"),
         r"--tools\[0\]: module 'os.path' has no attribute 'no_such_tool'"),
    Case("grpo-tool-not-callable", lambda c: c.grpo("--tools", "os:sep"),
         r"--tools\[0\]: 'os:sep' is a str, not a tool function"),
    Case("grpo-env-not-a-class", lambda c: c.grpo("--environment_factory", "os:sep"),
         r"--environment_factory: 'os:sep' is a str, not an environment class or a dict of them"),
    Case("grpo-max-tool-iterations", lambda c: c.grpo("--max_tool_calling_iterations", "-1"),
         r"max_tool_calling_iterations.*-1"),
    # ---- grpo: reward functions ----
    Case("grpo-rf-no-module", lambda c: c.grpo("--reward_funcs", "nosuchmodule_q.fn"),
         r"--reward_funcs: cannot import module 'nosuchmodule_q'.*PYTHONPATH"),
    Case("grpo-rf-no-attribute", lambda c: c.grpo("--reward_funcs", "os.path:no_such_fn"),
         r"--reward_funcs: module 'os.path' has no attribute 'no_such_fn'"),
    Case("grpo-rf-not-callable", lambda c: c.grpo("--reward_funcs", str(c.root / "rewards_ok.py") + ":NOT_A_FUNCTION"),
         r"--reward_funcs: .*NOT_A_FUNCTION' is an int, not a function"),
    Case("grpo-rf-syntax-error", lambda c: c.grpo("--reward_funcs", str(c.root / "rewards_syntax.py") + ":length"),
         r"--reward_funcs: .*rewards_syntax.py line 2: SyntaxError"),
    Case("grpo-rf-module-syntax-error", lambda c: c.grpo("--reward_funcs", "rewards_syntax:length"),
         r"--reward_funcs: .*rewards_syntax.py line 2: SyntaxError"),
    Case("grpo-rf-import-inside", lambda c: c.grpo("--reward_funcs", str(c.root / "rewards_raises.py") + ":f"),
         r"--reward_funcs: .*rewards_raises.py.*No module named 'no_such_dependency_q'"),
    Case("grpo-rf-file-missing", lambda c: c.grpo("--reward_funcs", "runs/none/rewards.py:fn"),
         r"--reward_funcs: no such file 'runs/none/rewards.py'"),
    Case("grpo-rf-py-without-function", lambda c: c.grpo("--reward_funcs", str(c.root / "rewards_ok.py")),
         r"--reward_funcs: .*rewards_ok.py' is a Python file; name the function in it"),
    Case("grpo-rf-rm-missing", lambda c: c.grpo("--reward_funcs", "runs/no/rm"),
         r"--reward_funcs: no such folder 'runs/no/rm'"),
    Case("grpo-rf-rm-not-model", lambda c: c.grpo("--reward_funcs", c.folder("empty")),
         r"--reward_funcs: folder .* is not a model folder \(no config.json\)"),
    Case("grpo-rf-rm-causal-lm", lambda c: c.grpo("--reward_funcs", c.lm),
         r"--reward_funcs: .* is a causal language model \(GPT2LMHeadModel\), not a reward model"),
    Case("grpo-rf-rm-data-file", lambda c: c.grpo("--reward_funcs", str(FIXTURES / "sft.jsonl")),
         r"--reward_funcs: .*sft.jsonl' is a file"),
    Case("grpo-rf-second-bad", lambda c: c.grpo("--reward_funcs", c.reward_fn, "nosuchmodule_q:fn"),
         r"--reward_funcs\[1\]: cannot import module 'nosuchmodule_q'"),
    Case("grpo-rf-yaml", lambda c: c.grpo_no_flag("--config", c.file("rf.yaml", "seed: 1\nreward_funcs: [nosuchmodule_q.fn]\n")),
         r"rf.yaml line 2: reward_funcs: cannot import module 'nosuchmodule_q'"),
    Case("grpo-rf-override", lambda c: c.grpo_no_flag("reward_funcs=[os.path:no_such_fn]"),
         r"override reward_funcs=\[os.path:no_such_fn\]: module 'os.path' has no attribute 'no_such_fn'"),
    Case("grpo-rf-bad-form", lambda c: c.grpo("--reward_funcs", "justaname"),
         r"--reward_funcs: no such folder 'justaname' \(looked in .*\), and HF_HUB_OFFLINE is set"),
    Case("grpo-rf-none", lambda c: c.grpo("--reward_funcs", "none"), r"--reward_funcs: no reward function"),
    # ---- grpo: other fields ----
    Case("grpo-weights-count", lambda c: c.grpo("--reward_weights", "1", "2"), r"--reward_weights: has 2 weights for 1"),
    Case("grpo-weights-text", lambda c: c.grpo("--reward_weights", "heavy"),
         r"--reward_weights: expected a list of numbers or none, got 'heavy'"),
    Case("grpo-num-generations-one", lambda c: c.grpo("--num_generations", "1"), r"--num_generations: must be >= 2"),
    Case("grpo-num-generations-divide", lambda c: c.grpo("--num_generations", "3"), r"--num_generations: must divide"),
    Case("grpo-loss-type", lambda c: c.grpo("--loss_type", "ppo"), r"--loss_type: must be one of"),
    Case("grpo-temperature-zero", lambda c: c.grpo("--temperature", "0"), r"--temperature: must be > 0"),
    Case("grpo-top-p", lambda c: c.grpo("--top_p", "1.5"), r"--top_p: must be in"),
    Case("grpo-epsilon-negative", lambda c: c.grpo("--epsilon", "-0.1"), r"--epsilon: must be > 0"),
    Case("grpo-vllm-mode", lambda c: c.grpo("--vllm_mode", "server"), r"--vllm_mode: must be colocate"),
    Case("grpo-vllm-missing", lambda c: c.grpo("--use_vllm"), r"vLLM is not installed: `pip install vllm`"),
    Case("grpo-vllm-share", lambda c: c.grpo("--vllm_gpu_memory_utilization", "1.5"),
         r"--vllm_gpu_memory_utilization: must be in \(0, 1\]"),
    Case("grpo-generation-kwargs", lambda c: c.grpo("--generation_kwargs", "[1, 2]"),
         r"--generation_kwargs: expected a mapping"),
    Case("grpo-generation-batch-both", lambda c: c.grpo("--generation_batch_size", "6", "--steps_per_generation", "2"),
         r"--generation_batch_size: set generation_batch_size or steps_per_generation, not both"),
    Case("grpo-scale-rewards", lambda c: c.grpo("--scale_rewards", "sometimes"), r"--scale_rewards: must be one of"),
    Case("grpo-importance-level", lambda c: c.grpo("--importance_sampling_level", "word"),
         r"--importance_sampling_level: must be one of"),
    Case("grpo-advantage-estimator", lambda c: c.grpo("--advantage_estimator", "gae"),
         r"--advantage_estimator: must be one of"),
    Case("grpo-top-entropy", lambda c: c.grpo("--top_entropy_quantile", "1.5"), r"--top_entropy_quantile: must be in"),
    Case("grpo-completions-to-print", lambda c: c.grpo("--log_completions", "--num_completions_to_print", "0"),
         r"--num_completions_to_print: must be >= 1, got 0"),
    Case("ppo-completions-to-print", lambda c: c.ppo("--log_completions", "true", "--num_completions_to_print", "0"),
         r"--num_completions_to_print: must be >= 1, got 0"),
    Case("ppo-log-completions-text", lambda c: c.ppo("--log_completions", "often"), r"--log_completions: expected"),
    Case("grpo-sync-ref-no-beta", lambda c: c.grpo("--sync_ref_model", "--beta", "0"),
         r"--sync_ref_model: needs beta > 0"),
    Case("grpo-data-missing", lambda c: c.grpo("--dataset_name", "data/none-prompts.jsonl"),
         r"--dataset_name: no such file or folder 'data/none-prompts.jsonl'"),
    Case("grpo-data-no-prompt", lambda c: c.grpo("--dataset_name", c.file("np.jsonl", '{"question": "q"}\n')),
         r"np.jsonl: columns \['question'\] match no known format.*prompt_only: prompt"),
    Case("grpo-data-bad-json", lambda c: c.grpo("--dataset_name", c.file("g57.jsonl", BAD_JSON_57)),
         r"g57.jsonl line 57 \(row 56\): malformed JSON"),
    Case("grpo-model-missing", lambda c: c.grpo("--model_name_or_path", "runs/none/sft"),
         r"--model_name_or_path: no such folder 'runs/none/sft'"),
    Case("grpo-yaml-unknown", lambda c: c.grpo("--config", c.file("g.yaml", "num_generation: 4\n")),
         r"g.yaml line 1: unknown GRPOConfig field 'num_generation'; did you mean 'num_generations'"),
    Case("grpo-flag-typo", lambda c: c.grpo("--reward_func", "x:y"),
         r"unknown flag --reward_func; did you mean --reward_funcs"),
    # ---- rloo ----
    Case("rloo-rf-no-module", lambda c: c.rloo("--reward_funcs", "nosuchmodule_q.fn"),
         r"--reward_funcs: cannot import module 'nosuchmodule_q'"),
    Case("rloo-rf-no-attribute", lambda c: c.rloo("--reward_funcs", str(c.root / "rewards_ok.py") + ":lenght"),
         r"--reward_funcs: .*rewards_ok.py' has no attribute 'lenght'.*did you mean 'length'"),
    Case("rloo-rf-syntax-error", lambda c: c.rloo("--reward_funcs", str(c.root / "rewards_syntax.py") + ":length"),
         r"--reward_funcs: .*rewards_syntax.py line 2: SyntaxError"),
    Case("rloo-rf-rm-missing", lambda c: c.rloo("--reward_funcs", "./runs/none-rm"),
         r"--reward_funcs: no such folder './runs/none-rm'"),
    Case("rloo-rf-rm-causal-lm", lambda c: c.rloo("--reward_funcs", c.lm), r"--reward_funcs: .* not a reward model"),
    Case("rloo-rf-hub-offline", lambda c: c.rloo("--reward_funcs", "someone/reward-model"),
         r"--reward_funcs: no such folder 'someone/reward-model' \(looked in .*\), and HF_HUB_OFFLINE is set"),
    Case("rloo-clip-range-order", lambda c: c.rloo("--reward_clip_range", "1", "-1"),
         r"--reward_clip_range: must be two numbers \[min, max\] with min <= max"),
    Case("rloo-clip-range-one", lambda c: c.rloo("--reward_clip_range", "1"),
         r"--reward_clip_range: must be two numbers"),
    Case("rloo-beta-negative", lambda c: c.rloo("--beta", "-1"), r"--beta: must be >= 0"),
    Case("rloo-num-generations", lambda c: c.rloo("--num_generations", "1"), r"--num_generations: must be >= 2"),
    Case("rloo-sync-steps", lambda c: c.rloo("--ref_model_sync_steps", "0"), r"--ref_model_sync_steps: must be >= 1"),
    Case("rloo-yaml-unknown", lambda c: c.rloo("--config", c.file("r.yaml", "normalise_advantages: true\n")),
         r"r.yaml line 1: unknown RLOOConfig field 'normalise_advantages'; did you mean 'normalize_advantages'"),
    Case("rloo-data-missing", lambda c: c.rloo("--dataset_name", "data/none.jsonl"), r"--dataset_name: no such file"),
    Case("rloo-output-file", lambda c: c.rloo("--output_dir", str(FIXTURES / "sft.jsonl")),
         r"--output_dir: .* is a file"),
    # ---- ppo ----
    Case("ppo-rf-no-module", lambda c: c.ppo("--reward_funcs", "nosuchmodule_q.fn"),
         r"--reward_funcs: cannot import module 'nosuchmodule_q'"),
    Case("ppo-rf-syntax-error", lambda c: c.ppo("--reward_funcs", str(c.root / "rewards_syntax.py") + ":length"),
         r"--reward_funcs: .*rewards_syntax.py line 2: SyntaxError"),
    Case("ppo-rf-no-attribute", lambda c: c.ppo("--reward_funcs", "os.path:no_such_fn"),
         r"--reward_funcs: module 'os.path' has no attribute 'no_such_fn'"),
    Case("ppo-rf-second-bad", lambda c: c.ppo("--reward_funcs", f"{c.reward_fn},nosuchmodule_q:f"),
         r"--reward_funcs\[1\]: cannot import module 'nosuchmodule_q'"),
    Case("ppo-rm-missing", lambda c: c.ppo("--reward_model_path", "runs/no/rm"),
         r"--reward_model_path: no such folder 'runs/no/rm'"),
    Case("ppo-rm-causal-lm", lambda c: c.ppo("--reward_model_path", c.lm),
         r"--reward_model_path: .* not a reward model"),
    Case("ppo-rm-empty-folder", lambda c: c.ppo("--reward_model_path", c.folder("empty")),
         r"--reward_model_path: folder .* is not a model folder"),
    Case("ppo-no-reward", lambda c: c.ppo("--reward_model_path", "none"),
         r"--reward_model_path and/or --reward_funcs is required"),
    Case("ppo-model-missing", lambda c: c.ppo("--model_name_or_path", "runs/none/sft"),
         r"--model_name_or_path: no such folder 'runs/none/sft'"),
    Case("ppo-model-is-reward-model", lambda c: c.ppo("--model_name_or_path", c.rm),
         r"--model_name_or_path: .* is a reward model"),
    Case("ppo-data-missing", lambda c: c.ppo("--dataset_name", "data/none.jsonl"),
         r"--dataset_name: no such file or folder 'data/none.jsonl'"),
    Case("ppo-data-bad-json", lambda c: c.ppo("--dataset_name", c.file("p57.jsonl", BAD_JSON_57)),
         r"p57.jsonl line 57 \(row 56\): malformed JSON"),
    Case("ppo-eval-data-missing", lambda c: c.ppo("--eval_dataset_name", "data/none-eval.jsonl"),
         r"--eval_dataset_name: no such file or folder"),
    Case("ppo-ptx-needs-data", lambda c: c.ppo("--ptx_coef", "0.5"), r"--ptx_coef: > 0 needs ptx_dataset_name"),
    Case("ppo-ptx-data-missing", lambda c: c.ppo("--ptx_coef", "0.5", "--ptx_dataset_name", "data/none-sft.jsonl"),
         r"--ptx_dataset_name: no such file or folder"),
    Case("ppo-batch-multiple", lambda c: c.ppo("--per_device_train_batch_size", "3"),
         r"--per_device_train_batch_size: must be a multiple of mini_batch_size \* gradient_accumulation_steps = "
         r"2 \* 1 = 2, got 3"),
    Case("ppo-batch-zero", lambda c: c.ppo("--per_device_train_batch_size", "0"),
         r"--per_device_train_batch_size: must be >= 1, got 0"),
    Case("ppo-epochs-zero", lambda c: c.ppo("num_ppo_epochs=0"), r"override num_ppo_epochs=0: must be >= 1, got 0"),
    Case("ppo-max-steps-zero", lambda c: c.ppo("--max_steps", "0"), r"--max_steps: must be >= 1, got 0"),
    Case("ppo-kl-penalty", lambda c: c.ppo("--kl_penalty", "k4"), r"--kl_penalty: must be one of"),
    Case("ppo-bf16-fp16", lambda c: c.ppo("--bf16", "--fp16"), r"--fp16: choose one of bf16 and fp16"),
    Case("ppo-attn", lambda c: c.ppo("--attn_implementation", "fast"), r"--attn_implementation: must be one of eager"),
    Case("ppo-push-offline", lambda c: c.ppo("--push_to_hub"), r"--push_to_hub: HF_HUB_OFFLINE is set"),
    Case("ppo-hub-model-id", lambda c: c.ppo("--hub_model_id", "a/b/c"), r"--hub_model_id: must look like 'owner/name'"),
    # classic PPOConfig names: the TrainingArguments / TRL 1.x name to use instead
    Case("ppo-classic-steps", lambda c: c.ppo("--steps", "5"),
         r"--steps is PPOConfig's classic name; on the command line use --max_steps$"),
    Case("ppo-classic-batch-size", lambda c: c.ppo("--batch-size=4"),
         r"--batch_size is PPOConfig's classic name; on the command line use --per_device_train_batch_size$"),
    Case("ppo-classic-ppo-epochs", lambda c: c.ppo("--ppo_epochs", "2"), r"on the command line use --num_ppo_epochs$"),
    Case("ppo-classic-init-kl-coef", lambda c: c.ppo("--init_kl_coef", "0.1"), r"on the command line use --kl_coef$"),
    Case("ppo-classic-log-with", lambda c: c.ppo("--log_with", "wandb"), r"on the command line use --report_to$"),
    Case("ppo-classic-mixed-precision", lambda c: c.ppo("--mixed_precision", "bf16"),
         r"--mixed_precision is PPOConfig's classic name; on the command line use --bf16 or --fp16$"),
    Case("ppo-classic-exp-name", lambda c: c.ppo("--exp_name", "x"), r"on the command line use --run_name$"),
    Case("ppo-classic-yaml", lambda c: c.ppo("--config", c.file("classic.yaml", "seed: 1\ninit_kl_coef: 0.1\n")),
         r"classic.yaml line 2: init_kl_coef is PPOConfig's classic name; use kl_coef$"),
    Case("ppo-classic-override", lambda c: c.ppo("steps=3"),
         r"override 'steps=3': steps is PPOConfig's classic name; use max_steps$"),
    Case("ppo-computed-flag", lambda c: c.ppo("--world_size", "2"), r"unknown flag --world_size"),
    Case("ppo-computed-yaml", lambda c: c.ppo("--config", c.file("computed.yaml", "backward_batch_size: 2\n")),
         r"computed.yaml line 1: unknown PPORunConfig field 'backward_batch_size'"),
    Case("ppo-label-reward-model", lambda c: c.ppo("--reward_model", "gpt2-rm"),
         r"unknown flag --reward_model; did you mean --reward_model_path\?"),
    Case("ppo-dual-clip", lambda c: c.ppo("--dual_clip", "0.5"), r"--dual_clip: must be > 1"),
    Case("ppo-optimizer", lambda c: c.ppo("--optimizer", "sgd"), r"--optimizer: must be 'adam' or 'adamw'"),
    Case("ppo-dtype", lambda c: c.ppo("--dtype", "float8"), r"--dtype: must be one of"),
    Case("ppo-weights-count", lambda c: c.ppo("--reward_weights", "1,2"),
         r"--reward_weights: has 2 weights for 1 reward source"),
    Case("ppo-weights-text", lambda c: c.ppo("--reward_weights", "heavy"),
         r"--reward_weights: must be comma-separated numbers"),
    Case("ppo-critic-needs-rm", lambda c: c.ppo("--reward_model_path", "none", "--reward_funcs", c.reward_fn,
                                                "--critic_from_reward_model"),
         r"--critic_from_reward_model: needs reward_model_path"),
    Case("ppo-eval-both", lambda c: c.ppo("--eval_dataset_name", str(FIXTURES / "prompts.jsonl"), "--eval_fraction", "0.5"),
         r"--eval_fraction: set eval_dataset_name or eval_fraction, not both"),
    Case("ppo-resume-missing", lambda c: c.ppo("--resume_from_checkpoint", "runs/none/checkpoint-1"),
         r"--resume_from_checkpoint: 'runs/none/checkpoint-1' is not a checkpoint folder"),
    Case("ppo-output-file", lambda c: c.ppo("--output_dir", str(FIXTURES / "sft.jsonl")), r"--output_dir: .* is a file"),
    Case("ppo-yaml-unknown", lambda c: c.ppo("--config", c.file("pp.yaml", "mini_batchsize: 2\n")),
         r"pp.yaml line 1: unknown PPORunConfig field 'mini_batchsize'; did you mean 'mini_batch_size'"),
    Case("ppo-temperature-zero", lambda c: c.ppo("--temperature", "0"), r"--temperature: must be > 0"),
    Case("ppo-top-p", lambda c: c.ppo("--top_p", "2"), r"--top_p: must be in"),
    Case("ppo-vllm-missing", lambda c: c.ppo("--use_vllm"), r"vLLM is not installed: `pip install vllm`"),
    Case("ppo-flag-typo", lambda c: c.ppo("--reward_model_pth", "x"),
         r"unknown flag --reward_model_pth; did you mean --reward_model_path"),
    Case("ppo-tracker-kwargs", lambda c: c.ppo("--tracker_kwargs", "[1]"), r"--tracker_kwargs: expected a mapping"),
    # ---- control ----
    Case("control-env-unknown", lambda c: c.control("--env_id", "NoSuchEnv-v0"),
         r"--env_id: 'NoSuchEnv-v0' is not a Gymnasium environment.*CartPole-v1"),
    Case("control-timesteps-zero", lambda c: c.control("--total_timesteps", "0"), r"--total_timesteps: must be >= 1"),
    Case("control-gamma", lambda c: c.control("--gamma", "1.5"), r"--gamma: must be in"),
    Case("control-activation", lambda c: c.control("--activation", "gelu"), r"--activation: must be one of tanh, relu"),
    Case("control-hidden-zero", lambda c: c.control("--hidden_sizes", "0"),
         r"--hidden_sizes: must be a non-empty list of positive integers"),
    Case("control-hidden-text", lambda c: c.control("--hidden_sizes", "wide"),
         r"--hidden_sizes: must be a non-empty list of positive integers"),
    Case("control-minibatches", lambda c: c.control("--num_minibatches", "3"),
         r"--num_minibatches: num_envs \* num_steps = 16 is not divisible by num_minibatches = 3"),
    Case("control-target-kl", lambda c: c.control("--target_kl", "-1"), r"--target_kl: must be > 0"),
    Case("control-lr-text", lambda c: c.control("--learning_rate", "fast"),
         r"--learning_rate: expected a number, got 'fast'"),
    Case("control-output-file", lambda c: c.control("--output_dir", str(FIXTURES / "sft.jsonl")),
         r"--output_dir: .* is a file"),
    Case("control-yaml-unknown", lambda c: c.control("--config", c.file("ctl.yaml", "learnig_rate: 0.1\n")),
         r"ctl.yaml line 1: unknown ControlConfig field 'learnig_rate'; did you mean 'learning_rate'"),
    Case("control-flag-typo", lambda c: c.control("--env_idd", "CartPole-v1"),
         r"unknown flag --env_idd; did you mean --env_id"),
    # ---- plot ----
    Case("plot-no-metrics-file", lambda c: ["plot", c.out],
         r"rlhfkit plot: error: .*previous-run: no metrics.jsonl in this folder"),
    Case("plot-second-run-no-metrics", lambda c: ["plot", c.run_dir, c.out], r"previous-run: no metrics.jsonl"),
    Case("plot-missing-folder", lambda c: ["plot", str(c.root / "no-such-run")], r"no-such-run: no such folder"),
    Case("plot-unknown-metric", lambda c: ["plot", c.run_dir, "--metrics", "train/loss,eval/los"],
         r"unknown metric 'eval/los'; the runs logged: train/learning_rate, train/loss"),
    Case("plot-no-metric-named", lambda c: ["plot", c.run_dir, "--metrics", ","], r"--metrics: no metric named"),
    Case("plot-output-type", lambda c: ["plot", c.run_dir, "--output", str(c.root / "curves.txt")],
         r"curves.txt: unknown image type '.txt'; use one of .*\.png"),
    Case("plot-output-folder", lambda c: ["plot", c.run_dir, "--output", str(c.root)], r"is a folder; give a file name"),
    Case("plot-no-run", lambda c: ["plot"], r"the following arguments are required: RUN_DIR"),
    Case("plot-typo", lambda c: ["polt", c.run_dir], r"unknown command 'polt'; did you mean 'plot'"),
    # ---- feedback ----
    Case("fb-no-subcommand", lambda c: ["feedback"], r"rlhfkit feedback: error: the following arguments are required"),
    Case("fb-unknown-subcommand", lambda c: ["feedback", "exprot"], r"invalid choice: 'exprot'"),
    Case("fb-db-text-file", lambda c: ["feedback", "project", "list", "--db", str(FIXTURES / "sft.jsonl")],
         r"error: database .*sft.jsonl is not a SQLite database.*point --db at"),
    Case("fb-db-folder", lambda c: ["feedback", "init", "--db", c.folder("db-folder")],
         r"error: cannot open database .*db-folder .*is it a folder"),
    Case("fb-db-bad-url", lambda c: ["feedback", "project", "list", "--db", "mysqll://x/y"],
         r"error: cannot use database mysqll://x/y"),
    Case("fb-project-exists", lambda c: c.fb("project", "create", "helpful"),
         r"error: project 'helpful' already exists"),
    Case("fb-project-scale", lambda c: c.fb("project", "create", "p2", "--scale", "3", "1"),
         r"error: --scale: scale must satisfy min < max"),
    Case("fb-project-scale-text", lambda c: c.fb("project", "create", "p2", "--scale", "low", "high"),
         r"error: --scale: expected a list of integers, got \['low', 'high'\]"),
    Case("fb-project-per-item", lambda c: c.fb("project", "create", "p2", "--per-item", "0"),
         r"error: --per_item: per_item must be between 1 and 1000, got 0"),
    Case("fb-project-gold-rate", lambda c: c.fb("project", "create", "p2", "--gold-rate", "2"),
         r"error: --gold_rate: gold_rate must be a number in \[0, 1\), got 2.0"),
    Case("fb-project-name", lambda c: c.fb("project", "create", "bad/name"),
         r"error: project name 'bad/name': use letters, digits"),
    Case("fb-project-timeout", lambda c: c.fb("project", "create", "p2", "--timeout-minutes", "0"),
         r"error: --timeout_minutes: timeout_minutes must be between 1"),
    Case("fb-project-edit-missing", lambda c: c.fb("project", "edit", "nosuch"), r"error: project 'nosuch' not found"),
    Case("fb-project-edit-members-only", lambda c: c.fb("project", "edit", "helpful", "--members-only", "maybe"),
         r"error: --members_only: expected true or false or none, got 'maybe'"),
    Case("fb-project-edit-per-item", lambda c: c.fb("project", "edit", "helpful", "--per-item", "-1"),
         r"error: --per_item: per_item must be between 1"),
    Case("fb-project-archive-missing", lambda c: c.fb("project", "archive", "nosuch"),
         r"error: project 'nosuch' not found"),
    Case("fb-project-restore-missing", lambda c: c.fb("project", "restore", "nosuch"),
         r"error: project 'nosuch' not found"),
    Case("fb-annotator-exists", lambda c: c.fb("annotator", "add", "ada"), r"error: annotator 'ada' already exists"),
    Case("fb-annotator-deactivate-missing", lambda c: c.fb("annotator", "deactivate", "nobody"),
         r"error: annotator 'nobody' not found"),
    Case("fb-annotator-activate-missing", lambda c: c.fb("annotator", "activate", "nobody"),
         r"error: annotator 'nobody' not found"),
    Case("fb-annotator-reset-missing", lambda c: c.fb("annotator", "reset-token", "nobody"),
         r"error: annotator 'nobody' not found"),
    Case("fb-import-missing-file", lambda c: c.fb("import", "--project", "helpful", "data/none.jsonl"),
         r"error: data/none.jsonl: no such file or folder"),
    Case("fb-import-bad-json", lambda c: c.fb("import", "--project", "helpful", c.file("i57.jsonl", BAD_JSON_57)),
         r"error: .*i57.jsonl line 57"),
    Case("fb-import-no-response", lambda c: c.fb("import", "--project", "helpful", c.file("nr.jsonl", '{"prompt": "p", "text": "x"}\n')),
         r"error: .*nr.jsonl line 1: needs 'response'"),
    Case("fb-import-project-missing", lambda c: c.fb("import", "--project", "nosuch", c.file("ok.jsonl", GOOD_PREFS)),
         r"error: .*project 'nosuch' not found"),
    Case("fb-import-kind", lambda c: c.fb("import", "--project", "helpful", c.file("ok.jsonl", GOOD_PREFS), "--kind", "triple"),
         r"error: --kind: expected one of rating, pair, ranking, got 'triple'"),
    Case("fb-import-folder", lambda c: c.fb("import", "--project", "helpful", c.folder("empty")),
         r"error: .*empty: is a folder with no data files"),
    Case("fb-import-no-project-flag", lambda c: c.fb("import", c.file("ok.jsonl", GOOD_PREFS)),
         r"error: --project is required \(a flag, a key of --config or project=...\)"),
    Case("fb-generate-policy-missing", lambda c: c.fb("generate", "--project", "helpful", "--policy", "runs/none/sft",
                                                      "--prompts", c.file("p.txt", "hi\n")), r"error: policy: no such folder 'runs/none/sft'"),
    Case("fb-generate-prompts-missing", lambda c: c.fb("generate", "--project", "helpful", "--policy", c.lm,
                                                       "--prompts", "data/none.txt"), r"error: --prompts: no such file 'data/none.txt'"),
    Case("fb-generate-n-zero", lambda c: c.fb("generate", "--project", "helpful", "--policy", c.lm,
                                              "--prompts", c.file("p.txt", "hi\n"), "--n", "0"), r"error: --n: n must be 1..64"),
    Case("fb-generate-no-prompt-column", lambda c: c.fb("generate", "--project", "helpful", "--policy", c.lm,
                                                        "--prompts", c.file("q.jsonl", '{"question": "q"}\n')),
         r"error: .*q.jsonl has no 'prompt' column"),
    Case("fb-generate-empty-prompts", lambda c: c.fb("generate", "--project", "helpful", "--policy", c.lm,
                                                     "--prompts", c.file("blank.txt", "\n\n")), r"error: .*blank.txt: holds no prompts"),
    Case("fb-generate-temperature", lambda c: c.fb("generate", "--project", "helpful", "--policy", c.lm,
                                                   "--prompts", c.file("p.txt", "hi\n"), "--temperature", "-1"),
         r"error: --temperature: temperature must be a number in \(0, 100\]"),
    Case("fb-serve-port", lambda c: c.fb("serve", "--port", "70000"), r"error: --port must be 0..65535"),
    Case("fb-serve-port-text", lambda c: c.fb("serve", "--port", "http"), r"error: --port: expected an integer, got 'http'"),
    Case("fb-progress-missing", lambda c: c.fb("progress", "--project", "nosuch"), r"error: project 'nosuch' not found"),
    Case("fb-report-missing", lambda c: c.fb("report", "--project", "nosuch"), r"error: project 'nosuch' not found"),
    Case("fb-report-out-folder", lambda c: c.fb("report", "--project", "helpful", "--out", c.folder("reports")),
         r"error: --out: '.*reports' is a folder; give the path of the Markdown file"),
    Case("fb-report-out-under-file", lambda c: c.fb("report", "--project", "helpful", "--out",
                                                    str(FIXTURES / "sft.jsonl" / "report.md")),
         r"error: --out: '.*sft.jsonl' is a file"),
    Case("fb-annotator-list-db", lambda c: ["feedback", "annotator", "list", "--db", c.folder("db-folder")],
         r"error: cannot open database .*db-folder"),
    Case("fb-annotator-add-blank", lambda c: c.fb("annotator", "add", " "), r"error: annotator name"),
    Case("fb-export-missing", lambda c: c.fb("export", "--project", "nosuch", "--out", c.out),
         r"error: project 'nosuch' not found"),
    Case("fb-export-out-file", lambda c: c.fb("export", "--project", "helpful", "--out", str(FIXTURES / "sft.jsonl")),
         r"error: --out: '.*sft.jsonl' is a file; give a folder"),
    Case("fb-export-weight", lambda c: c.fb("export", "--project", "helpful", "--out", c.out, "--weight", "heavy"),
         r"error: --weight: expected one of reliability, none, got 'heavy'"),
    Case("fb-export-min-gap", lambda c: c.fb("export", "--project", "helpful", "--out", c.out, "--min-gap", "-1"),
         r"error: --min_gap: min_gap must be >= 0"),
    Case("fb-prioritise-rm-missing", lambda c: c.fb("prioritise", "--project", "helpful", "--reward-model", "runs/none/rm"),
         r"error: reward model: no such folder 'runs/none/rm'"),
    Case("fb-prioritise-rm-causal", lambda c: c.fb("prioritise", "--project", "helpful", "--reward-model", c.lm),
         r"error: reward model: .*lm' is a causal language model \(GPT2LMHeadModel\), not a reward model"),
    Case("fb-prioritise-batch", lambda c: c.fb("prioritise", "--project", "helpful", "--reward-model", c.rm, "--batch-size", "0"),
         r"error: --batch_size: batch_size must be at least 1"),
    Case("fb-prioritise-project-missing", lambda c: c.fb("prioritise", "--project", "nosuch", "--reward-model", c.rm),
         r"error: project 'nosuch' not found"),
    Case("fb-member-add-missing", lambda c: c.fb("member", "add", "--project", "helpful", "nobody"),
         r"error: annotator 'nobody' not found"),
    Case("fb-member-remove-project", lambda c: c.fb("member", "remove", "--project", "nosuch", "ada"),
         r"error: project 'nosuch' not found"),
    Case("fb-member-list-missing", lambda c: c.fb("member", "list", "--project", "nosuch"),
         r"error: project 'nosuch' not found"),
    Case("fb-invite-max-uses", lambda c: c.fb("invite", "create", "--project", "helpful", "--max-uses", "0"),
         r"error: --max_uses: max_uses must be between 1 and 100000"),
    Case("fb-invite-days", lambda c: c.fb("invite", "create", "--project", "helpful", "--days", "-3"),
         r"error: an invite works for 1 to 365 days .*got -3"),
    Case("fb-invite-revoke-missing", lambda c: c.fb("invite", "revoke", "--project", "helpful", "999"),
         r"error: invite 999 of project 'helpful' not found"),
    Case("fb-invite-revoke-text", lambda c: c.fb("invite", "revoke", "--project", "helpful", "first"),
         r"argument id: invalid int value: 'first'"),
    Case("fb-invite-list-missing", lambda c: c.fb("invite", "list", "--project", "nosuch"),
         r"error: project 'nosuch' not found"),
    Case("fb-unknown-flag", lambda c: c.fb("progress", "--project", "helpful", "--verbose"),
         r"error: unknown flag --verbose \(see `rlhfkit feedback progress --help`\)"),
    Case("fb-flag-typo", lambda c: c.fb("project", "create", "p2", "--per-iten", "3"),
         r"error: unknown flag --per-iten; did you mean --per_item\?"),
    Case("fb-team-flag-typo", lambda c: c.fb("invite", "create", "--project", "helpful", "--max_use", "2"),
         r"error: unknown flag --max_use; did you mean --max_uses\?"),
    Case("fb-yaml-unknown", lambda c: c.fb("export", "--config", c.file("fbx.yaml", "project: helpful\nout: x\n"
                                                                          "min_gapp: 1\n")),
         r"error: .*fbx.yaml line 3: unknown ExportArgs field 'min_gapp'; did you mean 'min_gap'\?"),
    Case("fb-yaml-type", lambda c: c.fb("export", "--config", c.file("fby.yaml", "project: helpful\nmin_gap: wide\n"),
                                        "--out", c.out), r"error: .*fby.yaml line 2: min_gap: expected a number, got 'wide'"),
    Case("fb-yaml-choice", lambda c: c.fb("import", c.file("ok.jsonl", GOOD_PREFS), "--config",
                                          c.file("fbk.yaml", "project: helpful\nkind: [pair, triple]\n")),
         r"error: .*fbk.yaml line 2: kind: expected one of rating, pair, ranking, got 'triple'"),
    Case("fb-yaml-range", lambda c: c.fb("project", "create", "p2", "--config", c.file("fbr.yaml", "per_item: 0\n")),
         r"error: .*fbr.yaml line 1: per_item must be between 1 and 1000, got 0"),
    Case("fb-yaml-missing", lambda c: c.fb("progress", "--project", "helpful", "--config", "none/fb.yaml"),
         r"error: --config: no such file 'none/fb.yaml'"),
    Case("fb-override-unknown", lambda c: c.fb("export", "--project", "helpful", "--out", c.out, "min_gapp=1"),
         r"error: override 'min_gapp=1': unknown ExportArgs field 'min_gapp'; did you mean 'min_gap'\?"),
    Case("fb-override-type", lambda c: c.fb("serve", "port=http"), r"error: override port=http: expected an integer"),
    Case("fb-export-no-out", lambda c: c.fb("export", "--project", "helpful"),
         r"error: --out is required \(a flag, a key of --config or out=...\)"),
]


def run_case(case: Case, ctx: Ctx, capsys) -> tuple[int | None, str, bool]:
    """(exit code, stderr + exception text, previous run unchanged) of one case."""
    from rlhfkit.cli import main

    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(SENTINEL)
    before = sorted(p.name for p in out.iterdir())
    code, text = None, ""
    try:
        code = main(case.argv(ctx))
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
        text = "" if isinstance(err.code, int) else str(err.code)
    except Exception:  # noqa: BLE001 - a traceback is what this table exists to catch
        code, text = -1, traceback.format_exc()
    captured = capsys.readouterr()
    untouched = (out / "config.yaml").read_text() == SENTINEL and sorted(p.name for p in out.iterdir()) == before
    return code, captured.err + text, untouched


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    from rlhfkit.feedback import db, service
    from rlhfkit.testing import save_tiny

    root = tmp_path_factory.mktemp("bad-input")
    (root / "rewards_ok.py").write_text("def length(prompts, completions, **kw):\n"
                                        "    return [float(len(c)) for c in completions]\n\nNOT_A_FUNCTION = 3\n")
    (root / "rewards_syntax.py").write_text("def length(prompts, completions, **kw):\n    return [1.0 for c in\n")
    (root / "rewards_raises.py").write_text("import no_such_dependency_q\n\ndef f(prompts, completions, **kw):\n"
                                            "    return [0.0] * len(completions)\n")
    sys.path.insert(0, str(root))  # 'rewards_syntax:length' as an importable module
    url = f"sqlite:///{root / 'feedback.db'}"
    factory = db.connect(url)
    with factory() as s:
        service.create_project(s, "helpful", per_item=1, gold_rate=0)
        service.add_annotator(s, "ada", admin=True)
    db.engine_of(factory).dispose()
    yield Ctx(root, str(save_tiny(root / "lm", "gpt2")), str(save_tiny(root / "rm", "gpt2", kind="reward")), url)
    sys.path.remove(str(root))


def test_table_is_large_enough():
    assert len(CASES) >= 150 and len({c.id for c in CASES}) == len(CASES)


PROGRESS = re.compile(r"\d+%\|.*\| \d+/\d+ ")  # a tqdm bar (loading weights, tokenizing) before the message


def message_lines(text: str) -> list[str]:
    """The lines of stderr that carry the message: argparse's ``usage:`` block (a first line and its indented
    continuation lines) and progress bars are left out, so a command-line syntax error counts as the one
    line after its usage."""
    lines, in_usage = [], False
    for line in text.replace("\r", "\n").splitlines():
        if line.startswith("usage:"):
            in_usage = True
        elif not (in_usage and line.startswith(" ")) and line.strip() and not PROGRESS.search(line):
            in_usage = False
            lines.append(line)
    return lines


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_usage_error(case, ctx, capsys, monkeypatch):
    for module in case.missing:
        monkeypatch.setitem(sys.modules, module, None)  # find_spec and import both see it as not installed
    code, text, untouched = run_case(case, ctx, capsys)
    assert "Traceback" not in text, text
    assert code == 2, (code, text)
    lines = message_lines(text)
    assert len(lines) == 1 and "error: " in lines[0], text
    assert re.search(case.expect, lines[0]), lines[0]
    assert untouched, "the previous run's output_dir changed"


# ---- options that are accepted and have no effect warn when set, and only then ----
def _configs():
    from rlhfkit.pipeline.ppo_run import PPORunConfig
    from rlhfkit.trainers import GRPOConfig, PPOConfig, RLOOConfig, SFTConfig

    return {"PPOConfig": PPOConfig, "PPORunConfig": PPORunConfig, "GRPOConfig": GRPOConfig, "RLOOConfig": RLOOConfig,
            "SFTConfig": SFTConfig}


IGNORED_CASES = [
    ("PPOConfig", {"push_to_hub_if_best_kwargs": {"repo_id": "me/ppo"}},
     r"PPOConfig.push_to_hub_if_best_kwargs=\{'repo_id': 'me/ppo'\} has no effect: rlhfkit never pushes"),
    ("PPOConfig", {"compare_steps": 5}, r"PPOConfig.compare_steps=5 has no effect: .*push-to-hub-if-best"),
    ("PPOConfig", {"dataset_num_proc": 4}, r"PPOConfig.dataset_num_proc=4 has no effect: PPOTrainer preprocesses no"),
    ("PPOConfig", {"backward_batch_size": 7}, r"PPOConfig.backward_batch_size=7 has no effect: it is computed"),
    ("GRPOConfig", {"max_length": 100}, r"GRPOConfig.max_length=100 has no effect: .*max_prompt_length"),
    ("RLOOConfig", {"dataloader_num_workers": 2}, r"RLOOConfig.dataloader_num_workers=2 has no effect"),
    ("SFTConfig", {"max_steps": 5, "num_train_epochs": 3.0},
     r"SFTConfig.num_train_epochs=3.0 has no effect: max_steps=5 sets the length"),
    ("SFTConfig", {"warmup_steps": 2, "warmup_ratio": 0.1},
     r"SFTConfig.warmup_ratio=0.1 has no effect: warmup_steps=2 takes precedence"),
    ("SFTConfig", {"eval_strategy": "epoch", "eval_steps": 5},
     r"SFTConfig.eval_steps=5 has no effect: eval_strategy='epoch'"),
    ("SFTConfig", {"save_strategy": "no", "save_steps": 5}, r"SFTConfig.save_steps=5 has no effect: save_strategy='no'"),
    ("SFTConfig", {"logging_strategy": "epoch", "logging_steps": 3},
     r"SFTConfig.logging_steps=3 has no effect: logging_strategy='epoch'"),
    ("SFTConfig", {"optim": "adafactor", "adam_epsilon": 1e-6},
     r"SFTConfig.adam_epsilon=1e-06 has no effect: optim='adafactor' is not AdamW"),
    ("GRPOConfig", {"save_strategy": "no", "save_steps": 4}, r"GRPOConfig.save_steps=4 has no effect: save_strategy='no'"),
]


@pytest.mark.parametrize("name,kwargs,message", IGNORED_CASES, ids=[f"{n}-{'-'.join(k)}" for n, k, _ in IGNORED_CASES])
def test_ignored_option_warns_when_set(name, kwargs, message):
    with pytest.warns(UserWarning, match=message):
        _configs()[name](**kwargs)


@pytest.mark.parametrize("name", ["PPOConfig", "PPORunConfig", "GRPOConfig", "RLOOConfig", "SFTConfig"])
def test_defaults_warn_about_nothing(name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _configs()[name]()
        if name in ("GRPOConfig", "RLOOConfig", "SFTConfig"):
            _configs()[name](max_steps=5)  # num_train_epochs left at its default: nothing to warn about


def test_computed_ppo_fields_warn_only_when_set_to_another_value():
    import warnings

    from rlhfkit.trainers import PPOConfig

    config = PPOConfig(batch_size=4, mini_batch_size=2)
    config.set_computed(world_size=1, is_encoder_decoder=False, is_peft_model=False)
    with warnings.catch_warnings():  # a resolved config (computed values filled in) loads again silently
        warnings.simplefilter("error")
        PPOConfig(**config.to_dict()).set_computed(world_size=1, is_encoder_decoder=False, is_peft_model=False)
    with pytest.warns(UserWarning, match=r"PPOConfig.world_size=1 has no effect: it is computed \(the number of "
                                         r"processes = 2\)"):
        PPOConfig(**config.to_dict()).set_computed(world_size=2, is_encoder_decoder=False, is_peft_model=False)


def test_ignored_option_from_the_command_line_warns():
    import argparse

    from rlhfkit.cli_args import build_config
    from rlhfkit.trainers import GRPOConfig

    with pytest.warns(UserWarning, match=r"GRPOConfig.max_length=100 has no effect"):
        build_config(GRPOConfig, argparse.Namespace(max_length="100"))
