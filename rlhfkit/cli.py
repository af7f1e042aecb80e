"""``rlhfkit <command> [--config file.yaml] [key=value ...] [--field value ...]``: thin entry points.

The commands and their one-line summaries are ``SUMMARY`` below (``rlhfkit --help`` prints them).

Every command but env takes ``--config file.yaml`` and ``field=value`` overrides; flags beat
overrides, overrides beat the file (``--learning-rate`` = ``--learning_rate``, bare ``--packing`` =
true). Every value and input path is checked before a model loads or anything is written; a
usage error prints one line and exits with code 2, leaving a previous run's files as they were.
The resolved config is written to ``<output_dir>/config.yaml`` once everything has loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

from . import cli_args, launch
from .cli_args import UsageError, add_config_arguments, build_config, write_resolved_config
from .trainers.config import ConfigError, f, output_dir_problem

TRAINERS = {"sft": ("SFTConfig", "SFTTrainer"), "reward": ("RewardConfig", "RewardTrainer"),
            "dpo": ("DPOConfig", "DPOTrainer"), "kto": ("KTOConfig", "KTOTrainer"),
            "grpo": ("GRPOConfig", "GRPOTrainer"), "rloo": ("RLOOConfig", "RLOOTrainer"),
            "distill": ("DistillationConfig", "DistillationTrainer")}


class UsageExit(SystemExit):
    """Exit code 2 (a usage error) whose ``str`` is the message, already printed to stderr."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass
class TinyModelArgs:
    output_dir: str | None = f(None, "Folder to write the model and tokenizer to (required).")
    arch: str = f("gpt2", "Architecture: gpt2 or llama.")
    kind: str = f("causal-lm", "causal-lm (AutoModelForCausalLM) or reward (AutoModelForSequenceClassification, "
                               "1 label).")
    hidden_size: int = f(64, "Width of the model.")
    num_layers: int = f(2, "Transformer blocks.")
    seed: int = f(0, "Seed of the random initialisation.")

    def __post_init__(self):
        from .trainers.config import Checks, check_field_types

        check_field_types(self)
        c = Checks(self)
        if not self.output_dir:
            c.fail("output_dir", "is required: the folder to write the model to")
        c.choice("arch", ("gpt2", "llama"))
        c.choice("kind", ("causal-lm", "reward"))
        c.at_least(1, "hidden_size", "num_layers")


@dataclasses.dataclass
class PPOExampleArgs:
    output_dir: str = f("runs/ppo-example", "Where metrics, checkpoints and the model go.")
    steps: int = f(100, "PPO iterations (well under a minute on 2 CPU cores).")
    seed: int = f(0, "Seed of the model, sampling and shuffling.")

    def __post_init__(self):
        from .trainers.config import Checks, check_field_types

        check_field_types(self)
        Checks(self).at_least(1, "steps")


def _config_classes() -> dict:
    from . import trainers
    from .eval import EvalConfig
    from .pipeline import CompareConfig, PipelineConfig

    classes = {name: getattr(trainers, cls) for name, (cls, _) in TRAINERS.items()}
    from .control.config import ControlConfig

    from .pipeline.ppo_run import PPORunConfig

    return {**classes, "ppo": PPORunConfig, "eval": EvalConfig, "compare": CompareConfig, "demo": PipelineConfig,
            "tiny-model": TinyModelArgs, "ppo-example": PPOExampleArgs, "control": ControlConfig}


# One line per command for `rlhfkit --help`, in the order listed there.
SUMMARY = {
    "sft": "supervised fine-tuning on texts, prompt/completion pairs or conversations",
    "reward": "train a reward model from preference pairs, rankings or 1-N ratings",
    "dpo": "DPO and its family (IPO, hinge, robust, SimPO, ORPO) on preference pairs",
    "kto": "KTO on unpaired desirable/undesirable completions",
    "ppo": "PPO with a value head and a frozen reference against a reward model and/or reward functions",
    "grpo": "GRPO, Dr. GRPO, DAPO, GSPO, REINFORCE++ with reward functions and/or reward models",
    "rloo": "RLOO (leave-one-out baseline) with reward functions and/or reward models",
    "distill": "on-policy distillation (GKD): a student learns a frozen teacher's next-token distributions",
    "eval": "score policies (reward, KL, win rate, length) and a reward model (accuracy) on held-out data",
    "compare": "train PPO and DPO on the same data and budget, evaluate both, write a report",
    "demo": "the whole pipeline offline: pre-train, SFT, simulated feedback, reward model, PPO vs DPO, report",
    "feedback": "collect human feedback: store, web app, report, export",  # the help feedback/cli.py gives
    "control": "PPO on Gymnasium control tasks (CartPole, Pendulum) with the same math",
    "tiny-model": "write a tiny random-init model and a locally trained tokenizer to a folder",
    "ppo-example": "a single-stage PPO run on a tiny model and a rule reward (under a minute)",
    "plot": "draw the metrics of one or several runs side by side",
    "env": "print platform, package versions, device and bf16 support for a bug report",
}

HELP_EPILOG = """\
Every command takes --config file.yaml and field=value overrides; flags beat overrides,
overrides beat the file (--learning-rate = --learning_rate, a bare --packing = true). Every
value and input path is checked before a model loads or anything is written: a usage error
prints one line and exits with code 2, leaving a previous run's files as they were. The
resolved config is written to <output_dir>/config.yaml once everything has loaded. Training
commands print a JSON summary on stdout (progress, metrics and warnings go to stderr) and run
as several processes with --accelerate_config NAME --num_processes N.

Quick start (offline, from a clone): README.md. `rlhfkit <command> --help` lists every field.
"""

DESCRIPTIONS = {
    "sft": "supervised fine-tuning", "reward": "reward model",
    "dpo": "DPO and its family (IPO, hinge, robust, SimPO, ORPO)",
    "kto": "KTO on unpaired desirable/undesirable completions (or preference pairs, unpaired)",
    "grpo": "GRPO (and Dr. GRPO, DAPO, GSPO, REINFORCE++ via advantage_estimator) with reward functions and/or reward "
            "models on a prompt dataset (docs/online.md)",
    "rloo": "RLOO (leave-one-out baseline) with reward functions and/or reward models on a prompt dataset "
            "(docs/online.md)",
    "distill": "On-policy distillation (GKD): the student samples completions (or reads the dataset's, lmbda), the "
               "teacher scores every token, and the loss is the generalised JSD between their next-token "
               "distributions (docs/distill.md)",
    "ppo": "PPO on a policy folder with a reward model and/or reward functions, prompts from any dataset, held-out "
           "evaluation, checkpoints and resume (docs/online.md)",
    "demo": "Pre-train a tiny model from scratch, SFT, simulated annotators, calibration, reward model, PPO and DPO, "
            "evaluation and report (about 5-10 min on 2 CPU cores)",
    "compare": "Train PPO (against reward_model) and DPO (on pairs) from one SFT policy with the same budget, evaluate "
               "them on held-out prompts and write report.md/html",
    "eval": "Score policies on a prompt set with a reward model and/or a reward function (reward distribution, KL to "
            "a reference, win rate, length) and a reward model on labelled pairs (accuracy, precision, recall, F1)",
    "tiny-model": "write a tiny offline model and tokenizer to a folder",
    "ppo-example": "offline PPO on a tiny model; the reward must rise",
    "control": "PPO on a Gymnasium control task (CartPole-v1, Pendulum-v1, ...) with the same algos as the LLM "
               "trainers; writes metrics.jsonl, TensorBoard, learning_curve.png and policy/ (docs/control.md)",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The ``rlhfkit`` parser and its config sub-parsers by name; flags come from the config dataclasses."""
    parser = argparse.ArgumentParser(prog="rlhfkit", description="RLHF for Hugging Face Transformers models: SFT, "
                                     "reward models, PPO, DPO and its family, KTO, GRPO, RLOO, on-policy distillation, "
                                     "human feedback.",
                                     epilog=HELP_EPILOG, formatter_class=_TopFormatter)
    parser.add_argument("--version", action="version", version=f"rlhfkit {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")
    subparsers = {}
    for name, cls in _config_classes().items():
        text = DESCRIPTIONS[name]
        extra = {"epilog": _ppo_help(), "formatter_class": argparse.RawDescriptionHelpFormatter} \
            if name == "ppo-example" else {}
        p = sub.add_parser(name, help=SUMMARY[name], allow_abbrev=False,
                           description=f"{text}; every {cls.__name__} field is a flag, a YAML key of --config and a "
                                       "field=value override", **extra)
        add_config_arguments(p, cls)
        if name in ("demo", "compare"):
            p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
        if name == "demo":
            p.add_argument("--quick", action="store_true", help="small sizes (about a minute): a smoke run, "
                                                                "no learning")
        if name in launch.COMMANDS:
            group = p.add_argument_group("launching several processes (accelerate launch)")
            for flag, text in launch.HELP.items():
                group.add_argument(f"--{flag}", metavar="N" if flag == "num_processes" else "NAME|FILE", help=text)
        subparsers[name] = p
    from .feedback.cli import add_feedback_parser

    add_feedback_parser(sub)
    env = sub.add_parser("env", help=SUMMARY["env"],
                         description="Print the platform, Python, rlhfkit and dependency versions, the device and "
                                     "bf16 support, as a block to paste into a bug report")
    env.set_defaults(handler=_env)
    add_plot_parser(sub)
    return parser, subparsers


class _TopFormatter(argparse.RawDescriptionHelpFormatter):
    """``rlhfkit --help``: every command's one line beside its name (argparse measures sub-command names
    without their indent, so the longest ones would push their text to the next line)."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(map(len, action.choices)) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def package_version() -> str:
    """The installed rlhfkit's version (package metadata), else ``rlhfkit.__version__``."""
    from importlib import metadata

    try:
        return metadata.version("rlhfkit")
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


ENV_PACKAGES = ("transformers", "accelerate", "datasets", "peft", "deepspeed", "vllm", "wandb", "tensorboard",
                "trackio")
ENV_NAMES = {"peft": "PEFT", "deepspeed": "DeepSpeed", "vllm": "vLLM", "wandb": "W&B (wandb)",
             "tensorboard": "TensorBoard", "trackio": "Trackio"}


def env_info() -> dict[str, str]:
    """What ``rlhfkit env`` prints: versions from package metadata (nothing heavy imported but torch)."""
    import os
    import platform
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    info = {"Platform": platform.platform(), "Python version": platform.python_version(),
            "rlhfkit version": package_version(), "PyTorch version": version("torch")}
    devices, bf16 = "cpu", "no"
    try:
        import torch

        if torch.cuda.is_available():
            devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
            info["CUDA available"] = f"yes (CUDA {torch.version.cuda})"
        else:
            info["CUDA available"] = "no"
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                devices = "mps"
            bf16 = "yes (CPU)" if hasattr(torch, "bfloat16") else "no"
    except ImportError:
        info["CUDA available"] = "no (torch not installed)"
    info["Device"] = devices
    info.update({f"{ENV_NAMES.get(name, name.capitalize())} version": version(name) for name in ENV_PACKAGES})
    info["CPU count"] = str(os.cpu_count())
    info["bf16 supported"] = bf16
    return info


def _env(args) -> int:
    info = env_info()
    width = max(map(len, info))
    print("\nCopy-paste the following information when you open an issue:\n")
    print("\n".join(f"- {key + ':':<{width + 1}} {value}" for key, value in info.items()))
    print()
    return 0


# ---------------------------------------------------------------- rlhfkit plot
def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help=SUMMARY["plot"],
                       description="Draw metrics of one or several runs side by side: one panel per metric, one "
                                   "line per run (labelled by its folder name), read from each RUN_DIR's "
                                   "metrics.jsonl (a run still training shows its steps so far).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a training output_dir holding metrics.jsonl")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metrics, e.g. train/loss,eval/loss ('loss' is train/loss; default: the "
                        "learning curve's loss, reward, KL, accuracy, ... that the runs logged)")
    p.add_argument("--output", default="plot.png", help="image file to write (.png, .pdf, .svg, ...; default "
                                                        "plot.png)")
    p.set_defaults(handler=_plot)


def _plot(args) -> int:
    from . import plot

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics is not None else None
    try:
        if metrics == []:
            raise plot.PlotError(f"--metrics: no metric named in {args.metrics!r}")
        plot.check_output(args.output)
        path = plot.plot_runs(args.run_dirs, metrics, args.output)
    except plot.PlotError as err:
        return _usage("rlhfkit plot", str(err))
    print(f"wrote {path}")
    return 0


def _ppo_help() -> str:
    from .trainers.ppo_config import PPOConfig

    return "PPOConfig fields (as key=value or keys of the --config YAML; the flags above are not PPOConfig's):\n" + \
        "\n".join(f"  {name}: {text}" for name, text in PPOConfig.field_help().items())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    command = argv[0] if argv else None
    if command == "feedback":  # sub-commands with their own options: the same conventions, one level down
        from .feedback.cli import main as feedback_main

        return feedback_main(argv, parser)
    if command not in subparsers:
        if command and not command.startswith("-") and command not in ("feedback", "env", "plot"):
            return _usage(parser.prog, f"unknown command {command!r}"
                                       f"{cli_args.suggest(command, [*subparsers, 'feedback', 'env', 'plot'])}")
        args = parser.parse_args(argv)  # --help, --version, env, plot, or argparse's own error
        return args.handler(args)
    try:
        own, flags = launch.split_launch_flags(argv[1:])
        cmd = launch.launch_command(command, own, flags) if flags else None
        rest, overrides = cli_args.split_overrides(own, subparsers[command])
        args, extras = parser.parse_known_args([command, *rest])
        cli_args.reject_unknown(extras, subparsers[command], command)
        if cmd is None:
            return RUN[command](args, overrides)
        args.check_only = True  # every check once here, before any rank starts
        RUN[command](args, overrides)
        return launch.run(cmd)
    except launch.LaunchError as err:
        return _usage(f"rlhfkit {command}", str(err))
    except (UsageError, ConfigError) as err:
        return _usage(f"rlhfkit {command}", str(err))
    except ValueError as err:  # DataError, ModelSourceError: bad input data or model paths
        if type(err).__name__ in ("DataError", "ModelSourceError"):
            return _usage(f"rlhfkit {command}", str(err))
        raise
    except ImportError as err:  # an optional dependency the config asks for (use_vllm: vLLM), with the fix
        if "pip install" in str(err):
            return _usage(f"rlhfkit {command}", str(err))
        raise


def _usage(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise UsageExit(f"error: {message}")


def _origin(origins: dict, name: str) -> str:
    return origins.get(name, f"--{name}")


# ---------------------------------------------------------------- commands
def _train(args, overrides) -> int:
    from . import trainers
    from .models.loading import HubError

    config_cls, trainer_cls = (getattr(trainers, name) for name in TRAINERS[args.command])
    config, origins = build_config(config_cls, args, overrides)
    required = ("model_name_or_path", "dataset_name", *(("teacher_model_name_or_path",)
                                                        if hasattr(config, "teacher_model_name_or_path") else ()))
    for name in required:
        if not getattr(config, name):
            raise UsageError(f"--{name} is required (a flag, a key of --config or {name}=...)")
    check_inputs(config, origins, policy=args.command != "reward")
    check_trackers(config, origins, "report_to")
    if hasattr(config, "reward_funcs"):  # GRPO, RLOO: every reward function imports, every folder is a reward model
        check_reward_sources(config, origins)
    if hasattr(config, "tools"):  # GRPO, RLOO: tools and environments import
        check_agent_sources(config, origins)
    if getattr(args, "check_only", False):
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON summary only (`rlhfkit sft ... | jq .`)
        try:
            trainer = trainer_cls(args=config)  # loads and checks data and model; nothing is written yet
        except ConfigError as err:  # a check that needs the loaded data or model, reported where the field was set
            raise UsageError(f"{_origin(origins, err.field)}: {err.problem}") from None
        write_resolved_config(config, config.output_dir)
        try:
            history = trainer.train()
        except HubError as err:
            print(f"rlhfkit {args.command}: error: {err}", file=sys.stderr)
            return 1
    evals = [row for row in history if any(k.startswith("eval/") for k in row)]
    print_summary({"output_dir": config.output_dir, "last_train": next(
        (r for r in reversed(history) if "train/loss" in r), {}), "last_eval": evals[-1] if evals else {}})
    return 0


def print_summary(summary: dict) -> None:
    """The run's JSON summary on stdout, once: by the main process only when launched as several."""
    import os

    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))


def check_trackers(config, origins: dict, name: str) -> None:
    """A tracker given on the command line or in the file is installed, even when the value is the default."""
    from .trainers.trackers import check_report_to

    value = getattr(config, name)
    problem = check_report_to(value) if name in origins and isinstance(value, str) else None
    if problem and not problem.startswith("must be"):  # a malformed value was refused by the config itself
        raise UsageError(f"{_origin(origins, name)}: {problem}")


def check_inputs(config, origins: dict, policy: bool = True) -> None:
    """Model sources, data paths, output_dir, checkpoint and hub settings of a training config.

    ``policy``: the model trained is a causal LM, so a reward-model folder there is refused."""
    from .models.loading import check_model_source, check_policy_source, check_push

    check = check_policy_source if policy else check_model_source
    check(config.model_name_or_path, _origin(origins, "model_name_or_path"))
    for name in ("ref_model_name_or_path", "teacher_model_name_or_path"):
        if getattr(config, name, None):
            check_policy_source(getattr(config, name), _origin(origins, name))
    check_data_paths(config, origins, ("dataset_name", "eval_dataset_name"))
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))
    check_resume(config, origins, marker="trainer_state.json")
    check_push(config)


def check_data_paths(config, origins: dict, names) -> None:
    """Each of ``names`` that reads as a local path must exist (a hub dataset name is left to the loader)."""
    from .models.loading import looks_local

    for name in names:
        value = getattr(config, name)
        if value and (looks_local(value) or Path(value).suffix) and not Path(value).expanduser().exists():
            raise UsageError(f"{_origin(origins, name)}: no such file or folder {value!r}")


def check_resume(config, origins: dict, marker: str | None) -> None:
    """resume_from_checkpoint names a checkpoint folder (holding ``marker`` when given), or 'latest' with one."""
    resume, where = config.resume_from_checkpoint, _origin(origins, "resume_from_checkpoint")
    path = Path(resume or "")
    if resume and resume != "latest" and not ((path / marker).is_file() if marker else path.is_dir()):
        raise UsageError(f"{where}: {resume!r} is not a checkpoint folder"
                         f"{f' (no {marker})' if marker else ''}; give a checkpoint-<step> folder or 'latest'")
    if resume == "latest" and not list(Path(config.output_dir).glob("checkpoint-*")):
        raise UsageError(f"{where}: 'latest', but {config.output_dir} has no checkpoint-<step> folder to resume from")


def check_reward_sources(config, origins: dict, tokenizer_given: bool = False) -> None:
    """The reward model folder (``reward_model_path``, PPO) and every reward function of ``config``, checked as
    they will load but loading no model; one line naming the field and the spec."""
    from .models.loading import check_reward_model_source
    from .rollout.rewards import check_reward_funcs

    specs = config.reward_funcs
    if isinstance(specs, str):  # rlhfkit ppo: a comma-separated list
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    if getattr(config, "reward_model_path", None):
        check_reward_model_source(config.reward_model_path, _origin(origins, "reward_model_path"))
    elif not specs and getattr(config, "environment_factory", None):
        pass  # an environment may be the reward; the trainer says so when it has none
    elif not specs:
        raise UsageError(f"{_origin(origins, 'reward_funcs')}: no reward function: give reward_funcs (dotted paths "
                         "'package.module:function', 'path/to/file.py:function' or reward-model folders)")
    try:
        check_reward_funcs(specs or [], _origin(origins, "reward_funcs"), tokenizer_given=tokenizer_given)
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_agent_sources(config, origins: dict) -> None:
    """Every dotted path in ``tools`` names a function and ``environment_factory`` a class (or a dict of them)."""
    from .rollout.rewards import load_function

    try:
        for i, spec in enumerate(config.tools or []):
            load_function(spec, f"{_origin(origins, 'tools')}[{i}]", expected="a tool function")
        if config.environment_factory:
            load_function(config.environment_factory, _origin(origins, "environment_factory"),
                          expected="an environment class or a dict of them", dict_ok=True)
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_output_dir(path: str, where: str) -> None:
    problem = output_dir_problem(path)
    if problem:
        raise UsageError(f"{where}: {problem}")


def _demo(args, overrides) -> int:
    from .pipeline import QUICK, run_demo

    config, origins = build_config(_config_classes()["demo"], args, overrides, base=QUICK if args.quick else None)
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))
    run_demo(config, progress=not args.quiet)  # writes <output_dir>/config.yaml itself
    return 0


def _compare(args, overrides) -> int:
    from .pipeline import run_compare
    from .pipeline.compare import print_table

    config, origins = build_config(_config_classes()["compare"], args, overrides)
    _check_compare(config, origins)
    write_resolved_config(config, config.output_dir)
    try:
        summary = run_compare(config, progress=not args.quiet)
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None
    print_table(summary["table"])
    print(f"\nreport: {summary['report']} and {summary['report_html']}")
    return 0


def _check_compare(config, origins: dict) -> None:
    from . import data
    from .eval.evaluate import check_scorer_spec, parse_named
    from .models.loading import check_policy_source, check_reward_model_source

    for name in ("policy", "reward_model", "pairs"):
        if not getattr(config, name):
            raise UsageError(f"--{name} is required: compare needs {name} (a path); see `rlhfkit compare --help`")
    check_policy_source(config.policy, _origin(origins, "policy"))
    check_reward_model_source(config.reward_model, _origin(origins, "reward_model"))
    for name, path in parse_named(config.extra_policies).items():
        check_policy_source(path, f"{_origin(origins, 'extra_policies')} ({name})")
    pairs = data.load_records(config.pairs)
    data.validate(pairs, data.detect_format(pairs))
    for name in ("prompts", "eval_prompts"):
        value = getattr(config, name)
        if value and not Path(value).is_file():
            raise UsageError(f"{_origin(origins, name)}: no such file {value!r}")
    if config.reward_fn:
        try:
            check_scorer_spec(config.reward_fn, _origin(origins, "reward_fn"))
        except ValueError as err:
            raise UsageError(str(err)) from None
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))


def _eval(args, overrides) -> int:
    from .eval import run_eval, summary_rows
    from .eval.evaluate import check_inputs as check_eval_inputs
    from .eval.report import markdown_table

    config, origins = build_config(_config_classes()["eval"], args, overrides)
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))
    try:
        check_eval_inputs(config, lambda name: _origin(origins, name))
        results = run_eval(config, checked=True)
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None
    write_resolved_config(config, config.output_dir)
    if "policies" in results:
        print(markdown_table(summary_rows(results)))
    if "reward_model" in results:
        print(markdown_table([results["reward_model"]]))
    print(f"\nwrote {Path(config.output_dir) / 'eval.md'}, eval.html and eval.json")
    return 0


def _tiny_model(args, overrides) -> int:
    from .testing import save_tiny

    config, origins = build_config(TinyModelArgs, args, overrides)
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))
    path = save_tiny(config.output_dir, config.arch, config.kind, seed=config.seed, hidden_size=config.hidden_size,
                     num_layers=config.num_layers)
    print(f"wrote a tiny {config.arch} {config.kind} model and tokenizer to {path}")
    return 0


def _ppo(args, overrides) -> int:
    from .models.loading import HubError
    from .pipeline.ppo_run import PPORunConfig, run_ppo

    config, origins = build_config(PPORunConfig, args, overrides)
    for name in ("model_name_or_path", "dataset_name"):
        if not getattr(config, name):
            raise UsageError(f"--{name} is required (a flag, a key of --config or {name}=...)")
    if not config.reward_sources() and config.environment_factory is None:
        raise UsageError("--reward_model_path and/or --reward_funcs is required: PPO needs a reward (or an "
                         "--environment_factory whose environment gives one)")
    _check_ppo(config, origins)
    check_trackers(config, origins, "report_to")
    if getattr(args, "check_only", False):
        return 0
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON summary only
            summary = run_ppo(config, on_loaded=lambda: write_resolved_config(config, config.output_dir))
    except ConfigError as err:  # a check that needs the loaded tokenizer or data, reported where the field was set
        raise UsageError(f"{_origin(origins, err.field)}: {err.problem}") from None
    except HubError as err:
        print(f"rlhfkit ppo: error: {err}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


def _check_ppo(config, origins: dict) -> None:
    """What ``rlhfkit ppo`` can check before any model loads, named by flag, file line or override."""
    from .models.loading import check_policy_source, check_push

    check_policy_source(config.model_name_or_path, _origin(origins, "model_name_or_path"))
    check_reward_sources(config, origins, tokenizer_given=True)  # reward folders may use the policy's tokenizer
    check_data_paths(config, origins, ("dataset_name", "eval_dataset_name", "ptx_dataset_name"))
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))
    check_resume(config, origins, marker=None)
    check_push(config)


def _ppo_example(args, overrides) -> int:
    """Flags are PPOExampleArgs; the --config YAML and key=value overrides are PPOConfig fields."""
    from .demo import ppo_example
    from .trainers.ppo_config import PPOConfig

    path, args.config = args.config, None
    config, origins = build_config(PPOExampleArgs, args)
    ppo_args = argparse.Namespace(config=path)
    ppo_fields = {fld.name for fld in dataclasses.fields(PPOConfig)}
    given, ppo_origins = cli_args.collect_values(PPOConfig, ppo_args, overrides)
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))
    try:
        summary = ppo_example(config.output_dir, steps=config.steps, seed=config.seed, config_overrides=given)
    except ConfigError as err:  # PPOConfig's own checks (e.g. batch_size vs mini_batch_size)
        raise UsageError(f"{ppo_origins.get(err.field, f'PPOConfig.{err.field}')}: {err.problem}") from None
    except ValueError as err:
        names = [n for n in ppo_fields if n in str(err)]
        raise UsageError(f"PPOConfig{' ' + names[0] if names else ''}: {err}") from None
    print(json.dumps(summary, indent=2))
    print(f"mean reward rose from {summary['reward_first']:.3f} to {summary['reward_last']:.3f} "
          f"over {summary['steps']} PPO steps ({summary['seconds']} s)")
    return 0


def _control(args, overrides) -> int:
    from .control import train_control
    from .control.ppo import check_env_id

    config, origins = build_config(_config_classes()["control"], args, overrides)
    check_output_dir(config.output_dir, _origin(origins, "output_dir"))
    try:
        check_env_id(config.env_id)
    except ValueError as err:
        raise UsageError(f"{_origin(origins, 'env_id')}: {err}") from None
    episodes = train_control(config)
    last = [e["episodic_return"] for e in episodes[-20:]]
    cli_args.write_resolved_config(config, config.output_dir)
    print(f"{len(episodes)} episodes; mean return of the last {len(last)}: "
          f"{sum(last) / max(1, len(last)):.1f}; policy in {Path(config.output_dir) / 'policy'}")
    return 0


RUN = {**{name: _train for name in TRAINERS}, "ppo": _ppo, "demo": _demo, "compare": _compare, "eval": _eval,
       "tiny-model": _tiny_model, "ppo-example": _ppo_example, "control": _control}


if __name__ == "__main__":
    sys.exit(main())
