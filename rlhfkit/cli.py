"""``rlhfkit <command> [--config file.yaml] [key=value ...]``: thin entry points.

Commands:
  demo          the whole pipeline offline: pre-train, SFT, simulated feedback, reward model, PPO vs DPO, report
  compare       PPO and DPO from one config on the same data and budget, evaluated, with a report
  eval          score policies on prompts (reward, KL, win rate, length) and a reward model on pairs
  sft           supervised fine-tuning (SFTConfig fields as flags)
  reward        train a reward model from preferences, rankings or ratings (RewardConfig fields)
  dpo           preference optimisation without a reward model (DPOConfig fields)
  ppo-example   train a tiny model offline with PPO on a rule reward and show the reward rising
  tiny-model    write a tiny random-init model + locally trained tokenizer to a folder
  feedback      human feedback: web app (serve), projects, annotators, import, report, export, prioritise

Every command but tiny-model and feedback takes ``--config file.yaml``; flags override the file, and the
resolved config is written to ``<output_dir>/config.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from .trainers.ppo_config import PPOConfig

TRAINERS = {"sft": ("SFTConfig", "SFTTrainer"), "reward": ("RewardConfig", "RewardTrainer"),
            "dpo": ("DPOConfig", "DPOTrainer")}
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _converter(type_text: str):
    """str -> value for a dataclass field annotated ``type_text`` (e.g. 'float | None')."""
    optional = "None" in type_text
    base = type_text.replace("| None", "").replace("None |", "").strip()

    def convert(value: str):
        if optional and value.lower() in ("none", "null"):
            return None
        if base == "bool":
            if value.lower() not in _BOOL:
                raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
            return _BOOL[value.lower()]
        if base in ("int", "float"):
            try:
                return int(value) if base == "int" else float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number ({base}), got {value!r}") from None
        return value

    return convert


def add_config_arguments(parser: argparse.ArgumentParser, config_cls) -> None:
    """One ``--field`` flag per dataclass field, documented by the field's help text."""
    parser.add_argument("--config", help="YAML file of config fields; flags given here override it")
    for fld in dataclasses.fields(config_cls):
        default = fld.default if fld.default is not dataclasses.MISSING else None
        # SUPPRESS: an absent flag leaves no attribute, so `--field none` can override a YAML value with None
        parser.add_argument(f"--{fld.name}", type=_converter(str(fld.type)), default=argparse.SUPPRESS,
                            metavar=str(fld.type),
                            help=f"{fld.metadata.get('help', '')} (default: {default!r})".replace("%", "%%"))


def build_config(config_cls, args: argparse.Namespace, base: dict | None = None):
    """Dataclass defaults <- ``base`` (a preset) <- YAML file <- flags; unknown YAML keys are an error."""
    values = {}
    if args.config:
        try:
            values = yaml.safe_load(Path(args.config).read_text()) or {}
        except OSError as err:
            raise SystemExit(f"error: cannot read config {args.config}: {err}") from None
        if not isinstance(values, dict):
            raise SystemExit(f"error: {args.config} must hold a mapping of {config_cls.__name__} fields")
    names = {fld.name for fld in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SystemExit(f"error: {args.config}: unknown {config_cls.__name__} field(s) {unknown}")
    values = {**(base or {}), **values}
    values.update({k: v for k, v in vars(args).items() if k in names})
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


def save_resolved_config(config, output_dir: str, name: str = "config.yaml") -> Path:
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    return path


def _parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"error: override {pair!r} must look like key=value (e.g. learning_rate=1e-4)")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _load_config(path: str | None, overrides: list[str]) -> dict:
    config = {}
    if path:
        try:
            with open(path) as fh:
                config = yaml.safe_load(fh) or {}
        except OSError as err:
            raise SystemExit(f"error: cannot read config {path}: {err}") from None
        if not isinstance(config, dict):
            raise SystemExit(f"error: {path} must hold a mapping of PPOConfig fields, got {type(config).__name__}")
    config.update(_parse_overrides(overrides))
    known = set(PPOConfig.field_help())
    unknown = sorted(set(config) - known)
    if unknown:
        raise SystemExit(f"error: unknown PPOConfig field(s) {unknown}; see `rlhfkit ppo-example --help`")
    return config


def _config_help() -> str:
    return "PPOConfig fields (set in --config YAML or as key=value):\n" + "\n".join(
        f"  {name}: {text}" for name, text in PPOConfig.field_help().items())


def build_parser() -> argparse.ArgumentParser:
    """The ``rlhfkit`` parser: one sub-command per job, flags generated from the config dataclasses."""
    parser = argparse.ArgumentParser(prog="rlhfkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_offline_helpers(sub)

    from .trainers import DPOConfig, RewardConfig, SFTConfig

    for name, cls, text in (("sft", SFTConfig, "supervised fine-tuning"), ("reward", RewardConfig, "reward model"),
                            ("dpo", DPOConfig, "DPO and its family (IPO, hinge, robust, SimPO, ORPO)")):
        p = sub.add_parser(name, help=text, description=f"{text}; every {cls.__name__} field is a flag")
        add_config_arguments(p, cls)

    from .eval import EvalConfig
    from .pipeline import CompareConfig, PipelineConfig

    demo = sub.add_parser("demo", help="the whole pipeline offline (about 5-10 min on 2 CPU cores)",
                          description="Pre-train a tiny model from scratch, SFT, simulated annotators, calibration, "
                                      "reward model, PPO and DPO, evaluation and report; every PipelineConfig field "
                                      "is a flag")
    add_config_arguments(demo, PipelineConfig)
    demo.add_argument("--quick", action="store_true", help="small sizes (about a minute): a smoke run, no learning")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
    cmp = sub.add_parser("compare", help="PPO vs DPO on the same data and budget, evaluated, with a report",
                         description="Train PPO (against reward_model) and DPO (on pairs) from one SFT policy with the "
                                     "same budget, evaluate them on held-out prompts and write report.md/html; every "
                                     "CompareConfig field is a flag")
    add_config_arguments(cmp, CompareConfig)
    cmp.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
    ev = sub.add_parser("eval", help="score policies and/or a reward model",
                        description="Score policies on a prompt set with a reward model and/or a reward function "
                                    "(reward distribution, KL to a reference, win rate, length) and a reward model on "
                                    "labelled pairs (accuracy, precision, recall, F1); every EvalConfig field is a "
                                    "flag")
    add_config_arguments(ev, EvalConfig)
    from .feedback.cli import add_feedback_parser

    add_feedback_parser(sub)
    return parser


def _add_offline_helpers(sub) -> None:
    """``ppo-example`` and ``tiny-model``: small offline jobs that need no data or model."""
    ex = sub.add_parser("ppo-example", help="offline PPO on a tiny model; the reward must rise",
                        epilog=_config_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("--output_dir", default="runs/ppo-example", help="where metrics, checkpoints and the model go")
    ex.add_argument("--steps", type=int, default=100, help="PPO iterations (default 100; well under a minute on 2 CPU cores)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--config", help="YAML file of PPOConfig fields")
    ex.add_argument("overrides", nargs="*", help="PPOConfig fields as key=value, applied after --config")

    tiny = sub.add_parser("tiny-model", help="write a tiny offline model and tokenizer to a folder")
    tiny.add_argument("--output_dir", required=True)
    tiny.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    tiny.add_argument("--kind", choices=["causal-lm", "reward"], default="causal-lm",
                      help="causal-lm (AutoModelForCausalLM) or reward (AutoModelForSequenceClassification, 1 label)")
    tiny.add_argument("--hidden_size", type=int, default=64)
    tiny.add_argument("--num_layers", type=int, default=2)
    tiny.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    from .eval import EvalConfig
    from .pipeline import CompareConfig, PipelineConfig

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in TRAINERS:
        return _train(args)
    if args.command == "demo":
        return _demo(args, PipelineConfig)
    if args.command == "compare":
        return _compare(args, CompareConfig)
    if args.command == "eval":
        return _eval(args, EvalConfig)
    if args.command == "feedback":
        return args.handler(args)
    if args.command == "tiny-model":
        from .testing import save_tiny

        path = save_tiny(args.output_dir, args.arch, args.kind, seed=args.seed, hidden_size=args.hidden_size,
                         num_layers=args.num_layers)
        print(f"wrote a tiny {args.arch} {args.kind} model and tokenizer to {path}")
        return 0
    from .demo import ppo_example

    overrides = _load_config(args.config, args.overrides)
    summary = ppo_example(args.output_dir, steps=args.steps, seed=args.seed, config_overrides=overrides)
    print(json.dumps(summary, indent=2))
    print(f"mean reward rose from {summary['reward_first']:.3f} to {summary['reward_last']:.3f} "
          f"over {summary['steps']} PPO steps ({summary['seconds']} s)")
    return 0


def _demo(args, config_cls) -> int:
    from .pipeline import QUICK, run_demo

    config = build_config(config_cls, args, base=QUICK if args.quick else None)
    run_demo(config, progress=not args.quiet)  # writes <output_dir>/config.yaml itself
    return 0


def _compare(args, config_cls) -> int:
    from .pipeline import run_compare
    from .pipeline.compare import print_table

    config = build_config(config_cls, args)
    save_resolved_config(config, config.output_dir)
    try:
        summary = run_compare(config, progress=not args.quiet)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    print_table(summary["table"])
    print(f"\nreport: {summary['report']} and {summary['report_html']}")
    return 0


def _eval(args, config_cls) -> int:
    from .eval import run_eval, summary_rows
    from .eval.report import markdown_table

    config = build_config(config_cls, args)
    save_resolved_config(config, config.output_dir)
    try:
        results = run_eval(config)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    if "policies" in results:
        print(markdown_table(summary_rows(results)))
    if "reward_model" in results:
        print(markdown_table([results["reward_model"]]))
    print(f"\nwrote {Path(config.output_dir) / 'eval.md'}, eval.html and eval.json")
    return 0


def _train(args) -> int:
    from . import trainers
    from .data import DataError

    config_cls, trainer_cls = (getattr(trainers, name) for name in TRAINERS[args.command])
    config = build_config(config_cls, args)
    if not config.model_name_or_path or not config.dataset_name:
        raise SystemExit("error: --model_name_or_path and --dataset_name are required (flags or --config)")
    save_resolved_config(config, config.output_dir)
    try:
        trainer = trainer_cls(args=config)
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    history = trainer.train()
    evals = [row for row in history if any(k.startswith("eval/") for k in row)]
    print(json.dumps({"output_dir": config.output_dir, "last_train": next(
        (r for r in reversed(history) if "train/loss" in r), {}), "last_eval": evals[-1] if evals else {}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
