"""One argument layer for every ``rlhfkit`` command: flags, a YAML file and ``key=value`` overrides.

    add_config_arguments(parser, SFTConfig)             # --field / --field-name for every field
    args, extras = parser.parse_known_args(argv)
    config, origins = build_config(SFTConfig, args, extras)
    # defaults <- preset <- YAML (--config) <- key=value overrides <- --flags

Conventions (those of TRL's ``HfArgumentParser``):

- ``--learning_rate`` and ``--learning-rate`` are one flag; ``--flag=value`` works too.
- Booleans: bare ``--packing`` is true; ``--no_packing`` / ``--no-packing`` false; ``--packing false``
  (true/false, yes/no, on/off, 1/0).
- ``--field none`` sets an optional field to None; comma lists (``lora_target_modules``) also take
  several words: ``--lora_target_modules q_proj v_proj``. List fields (``reward_funcs``,
  ``reward_weights``) take one or more words, a comma list or a YAML list:
  ``--reward_funcs my_rewards:length runs/rm``, ``reward_weights=1,0.5``, ``reward_weights=[1, 0.5]``.
- Unknown flags, YAML keys and override keys are errors with a "did you mean" (difflib).
- A config class may spell some fields differently from the classic config it builds: its
  ``CLASSIC_NAMES`` ({classic name: its own name, or a tuple of names}) and ``CLASSIC_CONFIG``
  (that config's name) make a classic name, as a flag, YAML key or override, an error that
  names the one to use (``rlhfkit ppo``: ``--steps`` -> ``--max_steps``).
- Every value is checked against its field's type where it was given: the message names the
  flag, or the YAML file and line, or the override. Syntax errors in YAML name file and line.

Every problem raises ``UsageError`` (one line; the CLI prints it and exits with code 2).
Why not ``HfArgumentParser`` itself: it gives every flag its default, so a flag cannot be told
from a default when a YAML file sits in between; it has no ``none`` for optional fields, and it
neither type-checks YAML values nor suggests names. The conventions above are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
from pathlib import Path

import yaml

from .data import DataError, read_text
from .trainers.config import EXPECTED, ConfigError, field_kind

TRUE, FALSE = ("true", "yes", "on", "1", "t", "y"), ("false", "no", "off", "0", "f", "n")
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


class UsageError(Exception):
    """Bad command-line or config input: one line saying where, what was expected and what to do."""


def suggest(name: str, known) -> str:
    """'' or "; did you mean 'learning_rate'?" for the closest known name."""
    close = difflib.get_close_matches(name.replace("-", "_"), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def classic_name(config_cls, key: str, flag: bool = False) -> str | None:
    """None, or why ``key`` is refused when it is a classic name ``config_cls`` spells differently
    (its ``CLASSIC_NAMES``): "--steps is PPOConfig's classic name; on the command line use --max_steps"."""
    new = getattr(config_cls, "CLASSIC_NAMES", {}).get(key.replace("-", "_"))
    if new is None:
        return None
    dash = "--" if flag else ""
    names = " or ".join(f"{dash}{n}" for n in ((new,) if isinstance(new, str) else new))
    return f"{dash}{key} is {config_cls.CLASSIC_CONFIG}'s classic name; {'on the command line ' if flag else ''}" \
           f"use {names}"


class _ClassicFlag(argparse.Action):
    """A classic field name as a flag: refused while parsing, with the flag to use (``message``)."""

    def __init__(self, option_strings, dest, message: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        raise UsageError(self.message)


# ---------------------------------------------------------------- values
def coerce(fld, value, where: str):
    """``value`` (text from a flag or override, or a YAML value) as ``fld``'s type, or ``UsageError``."""
    kind, optional = field_kind(fld)
    text = value.strip() if isinstance(value, str) else None
    if value is None or (optional and text is not None and text.lower() in ("none", "null", "~")):
        if optional:
            return None
        raise UsageError(f"{where}: expected {EXPECTED[kind]}, got null (this field cannot be none)")
    item = _item_kind(fld) if kind == "list" else None
    converted = _convert(kind, value, text, fld.metadata.get("comma_list", False), item)
    if converted is _BAD:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        expected = EXPECTED[kind] + (f" of {EXPECTED[item].split(' ', 1)[1]}s" if item in ("int", "float") else "")
        raise UsageError(f"{where}: expected {expected}{' or none' if optional else ''}, got {shown}")
    return converted


def _item_kind(fld) -> str | None:
    """'int', 'float' or 'str' for a ``list[...]`` field, None for a bare ``list``."""
    text = fld.type if isinstance(fld.type, str) else str(fld.type)
    match = re.search(r"list\[(int|float|str)\]", text)
    return match.group(1) if match else None


_BAD = object()


def _convert(kind: str, value, text: str | None, comma_list: bool, item: str | None = None):
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        return _BAD
    if kind in ("int", "float"):
        if isinstance(value, bool):
            return _BAD
        try:
            number = float(text if text is not None else value)
        except (TypeError, ValueError):
            return _BAD
        if number != number or number in (float("inf"), float("-inf")):
            return _BAD
        if kind == "float":
            return number
        return int(number) if number.is_integer() else _BAD
    if kind == "str":
        if isinstance(value, (list, tuple)) and comma_list and all(isinstance(v, str) for v in value):
            return ",".join(value)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return _BAD
        return str(value)
    if kind == "list" and text is not None and not text.startswith("["):
        value = [word.strip() for word in text.split(",") if word.strip()]  # one word or a comma list
    elif kind in ("dict", "list") and text is not None:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return _BAD
    if kind == "list" and isinstance(value, list):
        items = [_list_item(item, v) for v in value]
        return _BAD if any(v is _BAD for v in items) else items
    if kind in ("dict", "list"):
        return value if isinstance(value, dict) and kind == "dict" else _BAD
    return value


def _list_item(item: str | None, value):
    """A word of a list given on the command line as the list's item type (YAML's reading when untyped)."""
    if not isinstance(value, str):
        return value
    if item in ("int", "float"):
        return _convert(item, value, value.strip(), False)
    if item == "str":
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


# ---------------------------------------------------------------- YAML
def load_yaml(path: str) -> dict[str, tuple[object, int]]:
    """A YAML mapping file -> {key: (value, line)}; ``UsageError`` names file and line on any problem."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise UsageError(f"--config: no such file {path!r}") from None
    except IsADirectoryError:
        raise UsageError(f"--config: {path!r} is a folder; expected a YAML file") from None
    except OSError as err:
        raise UsageError(f"--config: cannot read {path!r} ({err.strerror})") from None
    except DataError as err:
        raise UsageError(f"--config: {err}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path} line {mark.line + 1} column {mark.column + 1}" if mark else path
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{where}: YAML syntax error: {problem}") from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode) or not isinstance(values, dict):
        raise UsageError(f"{path}: expected a mapping of config fields (`field: value` lines), found a "
                         f"{type(values).__name__}")
    lines: dict[str, int] = {}
    for key_node, _ in node.value:
        key, line = key_node.value, key_node.start_mark.line + 1
        if key in lines:
            raise UsageError(f"{path} line {line}: {key!r} is given twice (first on line {lines[key]}); keep one")
        lines[key] = line
    return {str(key): (value, lines.get(str(key), 0)) for key, value in values.items()}


# ---------------------------------------------------------------- flags
def add_config_arguments(parser: argparse.ArgumentParser, config_cls) -> None:
    """``--config`` plus one flag per dataclass field (``--name`` and ``--name-with-dashes``), documented by
    the field's help text; booleans also get ``--no_name``."""
    parser.add_argument("--config", help="YAML file of config fields; key=value overrides and flags given here "
                                         "override it")
    for fld in dataclasses.fields(config_cls):
        kind, optional = field_kind(fld)
        default = fld.default_factory() if fld.default_factory is not dataclasses.MISSING else fld.default
        names = [f"--{fld.name}"] + ([f"--{fld.name.replace('_', '-')}"] if "_" in fld.name else [])
        text = f"{fld.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        # SUPPRESS: an absent flag leaves no attribute, so a YAML value is only replaced by a given flag
        common = dict(dest=fld.name, default=argparse.SUPPRESS, help=text)
        if kind == "bool":
            parser.add_argument(*names, nargs="?", const="true", metavar="true|false", **common)
            negs = [f"--no_{fld.name}", f"--no-{fld.name.replace('_', '-')}"]
            parser.add_argument(*negs, dest=fld.name, action="store_const", const="false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        elif fld.metadata.get("comma_list") or kind == "list":  # metadata nargs/metavar: e.g. 2, ("MIN", "MAX")
            parser.add_argument(*names, nargs=fld.metadata.get("nargs", "+"),
                                metavar=fld.metadata.get("metavar", "NAME" if kind == "str" else "VALUE"), **common)
        else:
            metavar = {"int": "INT", "float": "FLOAT", "dict": "YAML", "list": "YAML"}.get(kind, "TEXT")
            parser.add_argument(*names, metavar=metavar + ("|none" if optional else ""), **common)
    for old in getattr(config_cls, "CLASSIC_NAMES", {}):
        names = [f"--{old}"] + ([f"--{old.replace('_', '-')}"] if "_" in old else [])
        parser.add_argument(*names, dest=f"classic.{old}", nargs="?", action=_ClassicFlag, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, message=classic_name(config_cls, old, flag=True))


def split_overrides(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """(argv without overrides, ``key=value`` overrides): a ``key=value`` word is an override unless it
    is the value of a flag that takes one (so ``--packing max_steps=2`` leaves max_steps to the override)."""
    takes_value = {opt for action in parser._actions for opt in action.option_strings  # noqa: SLF001
                   if action.nargs is None and action.const is None and action.option_strings}
    rest, overrides = [], []
    for i, word in enumerate(argv):
        if _OVERRIDE.match(word) and not (i and argv[i - 1] in takes_value):
            overrides.append(word)
        else:
            rest.append(word)
    return rest, overrides


def reject_unknown(extras: list[str], parser: argparse.ArgumentParser, command: str) -> None:
    """``UsageError`` for the first word argparse did not take, with the closest flag."""
    if not extras:
        return
    word = extras[0]
    if not word.startswith("-"):
        raise UsageError(f"unexpected argument {word!r}; set config fields as key=value or --field value (see "
                         f"`rlhfkit {command} --help`)")
    flag = word.split("=", 1)[0]
    known = {opt.lstrip("-").replace("-", "_") for action in parser._actions  # noqa: SLF001
             for opt in action.option_strings if action.help != argparse.SUPPRESS}
    close = difflib.get_close_matches(flag.lstrip("-").replace("-", "_"), sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean --{close[0]}?" if close else ""
    raise UsageError(f"unknown flag {flag}{hint} (see `rlhfkit {command} --help`)")


# ---------------------------------------------------------------- configs
def collect_values(config_cls, args: argparse.Namespace, overrides=(), base: dict | None = None):
    """(values, origins): ``base`` <- YAML (``args.config``) <- overrides <- flags, each value type-checked
    against ``config_cls``'s field where it was given; ``origins[field]`` says where it came from."""
    fields = {fld.name: fld for fld in dataclasses.fields(config_cls)}
    name = config_cls.__name__
    values, origins = dict(base or {}), {key: f"preset {key}" for key in base or {}}
    path = getattr(args, "config", None)
    if path:
        for key, (value, line) in load_yaml(path).items():
            if key not in fields:
                raise UsageError(f"{path} line {line}: " + (classic_name(config_cls, key) or
                                                           f"unknown {name} field {key!r}{suggest(key, fields)}"))
            origins[key] = f"{path} line {line}: {key}"
            values[key] = coerce(fields[key], value, origins[key])
    for pair in overrides:
        key, _, text = pair.partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise UsageError(f"override {pair!r}: " + (classic_name(config_cls, key) or
                                                       f"unknown {name} field {key!r}{suggest(key, fields)}"))
        origins[key] = f"override {key}={text}"
        values[key] = coerce(fields[key], text, origins[key])
    for key, raw in vars(args).items():
        if key in fields:
            origins[key] = f"--{key}"
            if isinstance(raw, list):  # nargs="+": several words are the items, one word is read as text
                raw = raw[0] if len(raw) == 1 else raw if field_kind(fields[key])[0] == "list" else ",".join(raw)
            values[key] = coerce(fields[key], raw, origins[key])
    return values, origins


def build_config(config_cls, args: argparse.Namespace, overrides=(), base: dict | None = None):
    """(config, origins): :func:`collect_values`, then the dataclass's own checks, whose ``ConfigError``
    is reported at the flag, file line or override that set the field."""
    values, origins = collect_values(config_cls, args, overrides, base)
    try:
        return config_cls(**values), origins
    except ConfigError as err:
        raise UsageError(f"{origins.get(err.field, f'{config_cls.__name__}.{err.field}')}: {err.problem}") from None
    except (TypeError, ValueError) as err:
        raise UsageError(f"{config_cls.__name__}: {err}") from None


def resolved_yaml(config) -> str:
    """The resolved config as YAML (what ``<output_dir>/config.yaml`` holds)."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


def write_resolved_config(config, output_dir, name: str = "config.yaml") -> Path:
    """Write ``resolved_yaml(config)``; call only once validation and loading have succeeded."""
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(resolved_yaml(config))
    return path
