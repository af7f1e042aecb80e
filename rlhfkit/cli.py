"""``rlhfkit <command> [--config file.yaml] [key=value ...]``: thin entry points.

Commands:
  ppo-example   train a tiny model offline with PPO on a rule reward and show the reward rising
  tiny-model    write a tiny random-init model + locally trained tokenizer to a folder
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from .trainers.ppo_config import PPOConfig


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhfkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

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

    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
