"""Bad input through the real entry point ``rlhfkit.cli.main``: one table, one assertion per row.

Each case must: exit with code 2 (a usage error), print ONE clear line naming where the problem
is (flag, file and line, field) that matches the case's pattern, print no traceback, and leave
a previous run's ``output_dir`` exactly as it was (config.yaml included). ``measure()`` runs
the table and counts the clear errors (used to measure before/after; see the report).
"""

from __future__ import annotations

import re
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


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    expect: str  # regex the error line must match


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
    Case("flag-float-text", lambda c: c.reward("--learning_rate", "fast"), r"--learning_rate: expected a number, got 'fast'"),
    Case("flag-lr-negative", lambda c: c.sft("--learning_rate", "-1"), r"--learning_rate: must be > 0, got -1.0"),
    Case("flag-dash-form", lambda c: c.sft("--learning-rate", "0"), r"--learning_rate: must be > 0, got 0.0"),
    Case("flag-bool-maybe", lambda c: c.sft("--packing", "maybe"), r"--packing: expected true or false, got 'maybe'"),
    Case("flag-epochs-zero", lambda c: c.sft("--num_train_epochs", "0"), r"--num_train_epochs: must be > 0"),
    Case("flag-batch-zero", lambda c: c.sft("--per_device_train_batch_size", "0"),
         r"--per_device_train_batch_size: must be >= 1, got 0"),
    Case("flag-int-fraction", lambda c: c.sft("--max_length", "2.5"), r"--max_length: expected an integer, got '2.5'"),
    Case("flag-eval-fraction", lambda c: c.sft("--eval_fraction", "1.5"), r"--eval_fraction: must be in \[0.0, 1.0\)"),
    Case("flag-scheduler", lambda c: c.sft("--lr_scheduler_type", "cosin"), r"--lr_scheduler_type: must be one of linear"),
    Case("flag-report-to", lambda c: c.sft("--report_to", "tensorbord"), r"--report_to: must be a comma-separated list"),
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
    Case("flag-missing-value", lambda c: c.sft("--max_steps"), r"argument --max_steps/--max-steps: expected one argument"),
    Case("flag-unknown-typo", lambda c: c.sft("--learnig_rate", "1e-3"), r"unknown flag --learnig_rate; did you mean --learning_rate\?"),
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
    Case("override-typo", lambda c: c.sft("learnig_rate=1e-3"), r"override 'learnig_rate=1e-3': unknown SFTConfig field.*did you mean 'learning_rate'"),
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
    Case("yaml-missing-file", lambda c: c.sft("--config", "configs/none.yaml"), r"--config: no such file 'configs/none.yaml'"),
    Case("yaml-null-required", lambda c: c.sft("--config", c.file("null.yaml", "max_length: null\n")),
         r"null.yaml line 1: max_length: expected an integer, got null"),
    Case("yaml-list-for-text", lambda c: c.sft("--config", c.file("lst.yaml", "dataset_split: [train, test]\n")),
         r"lst.yaml line 1: dataset_split: expected text"),
    # ---- DPO and reward fields ----
    Case("dpo-label-smoothing", lambda c: c.dpo("--label_smoothing", "0.7"), r"--label_smoothing: must be in \[0.0, 0.5\)"),
    Case("dpo-smoothing-ignored", lambda c: c.dpo("--loss_type", "ipo", "--label_smoothing", "0.1"),
         r"--label_smoothing: is used by loss_type sigmoid, robust, simpo only"),
    Case("dpo-loss-type", lambda c: c.dpo("--loss_type", "dpo"), r"--loss_type: must be one of"),
    Case("dpo-beta", lambda c: c.dpo("--beta", "-0.1"), r"--beta: must be > 0"),
    Case("reward-ratings-as", lambda c: c.reward("--ratings_as", "regresion"), r"--ratings_as: must be one of pairs, regression"),
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
    Case("eval-reward-fn-form", lambda c: c.eval("--reward_fn", "notafunction"), r"--reward_fn: must look like 'package.module:function'"),
    Case("eval-reward-fn-import", lambda c: c.eval("--policies", c.lm, "--prompts", c.file("p.txt", "hi\n"),
                                                   "--reward_fn", "no_such_module_q:fn"),
         r"--reward_fn: cannot load 'no_such_module_q:fn'"),
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
    Case("compare-mini-batch", lambda c: c.compare("--ppo_mini_batch_size", "5"), r"--ppo_mini_batch_size: must divide ppo_batch_size"),
    Case("compare-prompts-missing", lambda c: c.compare("--prompts", "data/no-prompts.txt"), r"--prompts: no such file"),
    Case("demo-heads", lambda c: ["demo", "--output_dir", c.out, "--hidden_size", "30"], r"num_heads: must divide hidden_size \(30\)"),
    Case("demo-budget-text", lambda c: ["demo", "--output_dir", c.out, "budget=ten"], r"override budget=ten: expected an integer"),
    Case("demo-share", lambda c: ["demo", "--output_dir", c.out, "--pretrain_rock_share", "2"], r"--pretrain_rock_share: must be in \[0.0, 1.0\]"),
    Case("demo-output-file", lambda c: ["demo", "--output_dir", str(FIXTURES / "sft.jsonl")], r"--output_dir: .* is a file"),
    Case("tiny-arch", lambda c: ["tiny-model", "--output_dir", c.out, "--arch", "gpt3"], r"--arch: must be one of gpt2, llama"),
    Case("tiny-size", lambda c: ["tiny-model", "--output_dir", c.out, "--hidden_size", "0"], r"--hidden_size: must be >= 1"),
    Case("tiny-output-file", lambda c: ["tiny-model", "--output_dir", str(FIXTURES / "sft.jsonl")], r"--output_dir: .* is a file"),
    Case("tiny-no-output", lambda c: ["tiny-model"], r"output_dir: is required"),
    Case("ppo-override-type", lambda c: ["ppo-example", "--output_dir", c.out, "learning_rate=fast"],
         r"override learning_rate=fast: expected a number"),
    Case("ppo-unknown-field", lambda c: ["ppo-example", "--output_dir", c.out, "mini_batchsize=4"],
         r"unknown PPOConfig field 'mini_batchsize'; did you mean 'mini_batch_size'"),
    Case("ppo-steps", lambda c: ["ppo-example", "--output_dir", c.out, "--steps", "0"], r"--steps: must be >= 1"),
    Case("ppo-yaml-syntax", lambda c: ["ppo-example", "--output_dir", c.out, "--config", c.file("ppo.yaml", "batch_size: : 4\n")],
         r"ppo.yaml line 1 column \d+: YAML syntax error"),
    Case("command-typo", lambda c: ["sftt"], r"unknown command 'sftt'; did you mean 'sft'"),
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
    from rlhfkit.testing import save_tiny

    root = tmp_path_factory.mktemp("bad-input")
    return Ctx(root, str(save_tiny(root / "lm", "gpt2")), str(save_tiny(root / "rm", "gpt2", kind="reward")))


def test_table_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_usage_error(case, ctx, capsys):
    code, text, untouched = run_case(case, ctx, capsys)
    assert "Traceback" not in text, text
    assert code == 2, (code, text)
    assert re.search(case.expect, text), text
    assert untouched, "the previous run's output_dir changed"
