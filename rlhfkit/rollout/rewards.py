"""Reward functions for the online trainers (GRPO, RLOO, REINFORCE++, PPO), with TRL's contract.

    funcs = load_reward_funcs([my_fn, "my_rewards:length_bonus", "runs/reward"], device="cuda")
    rewards, per_func = score(funcs, [1.0, 0.5, 2.0], prompts, completions, {"answer": answers})

A reward function is called as ``fn(prompts=..., completions=..., **columns)`` and returns one
score per completion: a number, or ``None`` for "does not apply to this row" (TRL 1.x; e.g. a
math checker on a coding prompt). ``columns`` are the dataset's other columns, one value per
completion (a prompt's values repeated for each of its completions), plus whatever the trainer
adds (TRL passes ``completion_ids`` and ``trainer_state``); accept ``**kwargs`` to ignore them.
Prompts and completions are texts, or message lists for conversational data (a completion is
then ``[{"role": "assistant", "content": ...}]``).

A spec given to :func:`load_reward_funcs` is one of
- a Python callable (a ``RewardFunc`` passes through);
- a dotted path ``package.module:function`` or ``package.module.function`` (the command-line
  form; the current directory is put on ``sys.path`` first, as ``trl grpo`` does), or a file
  ``path/to/rewards.py:function``;
- a reward-model folder (or hub id): an ``AutoModelForSequenceClassification`` with one label,
  scored on prompt + completion with its own tokenizer exactly as ``rlhfkit reward`` trained it
  (``rlhfkit.RewardModel``: chat template for message prompts, EOS closing text responses);
- a loaded sequence-classification model (then ``tokenizer`` is its tokenizer).

Differences from TRL: TRL scores a reward model on ``prompt + completion`` texts without
special tokens or EOS; here the text is built as the reward model was trained (TRL's own
``RewardTrainer`` appends EOS too). TRL's built-in reward names (``trl.rewards``) are not known.
"""

from __future__ import annotations

import difflib
import importlib
import math
import numbers
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForSequenceClassification

from ..models.loading import ModelSourceError, check_reward_model_source, load_pretrained, looks_local
from ..models.reward_model import RewardModel

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class RewardFunc:
    """A named reward function; ``__call__(prompts, completions, **columns) -> list[float | None]``."""

    name: str
    fn: Callable[..., Any] = field(repr=False)
    source: str = "callable"  # where it came from, for error messages

    def __call__(self, prompts: list, completions: list, **columns) -> list:
        return self.fn(prompts=prompts, completions=completions, **columns)


class _RewardModelFunc:
    """A reward model as a reward function (columns are ignored)."""

    def __init__(self, model: RewardModel):
        self.reward_model = model

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        return self.reward_model(prompts, completions)


def _callable_name(fn) -> str:
    fn = getattr(fn, "func", fn)  # functools.partial
    return getattr(fn, "__name__", None) or type(fn).__name__


REWARD_FUNCTION = "a function (prompts, completions, **columns) -> list[float]"


def load_function(spec: str, where: str, expected: str = REWARD_FUNCTION, dict_ok: bool = False) -> Callable:
    """'package.module:function', 'package.module.function' or 'path/to/file.py:function' -> the function;
    any problem (no such module or file, an error while importing it, no such name, not callable) is a
    one-line ValueError starting with ``where`` (``expected``: what the spec should name, for the
    message). ``dict_ok``: a dict of callables is accepted too (environments by name)."""
    module_name, sep, name = spec.rpartition(":")
    if not sep:
        if spec.endswith(".py"):
            raise ValueError(f"{where}: {spec!r} is a Python file; name the function in it: '{spec}:function'")
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name:
        folder = "a reward-model folder, and not " if expected == REWARD_FUNCTION else ""
        raise ValueError(f"{where}: {spec!r} is not {folder}a dotted path 'package.module:function', "
                         "'package.module.function' or 'path/to/file.py:function'")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        module, what = _import_file(module_name, spec, where), f"file {module_name!r}"
    else:
        module, what = _import_module(module_name, spec, where), f"module {module_name!r}"
    if not hasattr(module, name):
        known = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
        close = difflib.get_close_matches(name, known, n=1)
        raise ValueError(f"{where}: {what} has no attribute {name!r} (from {spec!r})"
                         f"{f'; did you mean {close[0]!r}?' if close else ''}")
    fn = getattr(module, name)
    if dict_ok and isinstance(fn, dict) and fn and all(callable(v) for v in fn.values()):
        return fn
    if not callable(fn):
        kind = type(fn).__name__
        raise ValueError(f"{where}: {spec!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not {expected}")
    return fn


def _import_module(module_name: str, spec: str, where: str):
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `rlhfkit grpo reward_funcs=my_rewards:fn` from the project folder
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(f"{where}: cannot import module {module_name!r} for {spec!r} (ModuleNotFoundError: "
                             f"{err}); the module must be importable from the current directory or PYTHONPATH, or "
                             "give its file: 'path/to/file.py:function'") from None
        raise ValueError(_import_failed(err, spec, where)) from None
    except Exception as err:  # noqa: BLE001 - the module's own code failed (SyntaxError, NameError, ...)
        raise ValueError(_import_failed(err, spec, where)) from None


def _import_file(path_text: str, spec: str, where: str):
    """Run a Python file as a module (cached in sys.modules by its resolved path, like an import)."""
    import hashlib
    import importlib.util

    path = Path(path_text).expanduser()
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "no such file"
        raise ValueError(f"{where}: {problem} {path_text!r} (from {spec!r}); give 'path/to/file.py:function' or an "
                         "importable 'package.module:function'")
    resolved = str(path.resolve())
    name = f"_rlhfkit_reward_{path.stem}_{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{where}: {path_text!r} (from {spec!r}) is not a Python file Python can import")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it runs
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the file's own code failed
        del sys.modules[name]
        raise ValueError(_import_failed(err, spec, where)) from None
    return module


def _import_failed(err: BaseException, spec: str, where: str) -> str:
    """One line: where the module's code failed (file and line) and the error, for an import of ``spec``."""
    if isinstance(err, SyntaxError):
        at = f"{err.filename} line {err.lineno}"
        text = err.msg
    else:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
        at = f"{frames[-1].filename} line {frames[-1].lineno}" if frames else "its code"
        text = str(err)
    return (f"{where}: importing {spec!r} failed at {at}: {type(err).__name__}: {' '.join(text.split())}; fix the "
            "module (or install what it imports)")


def _kind(text: str) -> str:
    """How a text spec resolves: 'model' (a local folder or file path), 'function' (a dotted path or
    file.py:function) or 'hub' (a hub id)."""
    path = Path(text).expanduser()
    if path.is_dir():
        return "model"
    if ":" in text or text.endswith(".py"):
        return "function"
    if looks_local(text) or path.exists():
        return "model"
    if "/" not in text and "." in text:
        return "function"
    return "hub"


def _check_spec(text: str, where: str, tokenizer_given: bool) -> str:
    """Check one text spec as :func:`load_reward_funcs` resolves it, loading no model; returns its kind."""
    kind = _kind(text)
    if kind == "function":
        load_function(text, where)
        return kind
    check_reward_model_source(text, where)
    folder = Path(text).expanduser()
    if folder.is_dir() and not tokenizer_given and not any((folder / n).is_file() for n in TOKENIZER_FILES):
        raise ModelSourceError(f"{where}: reward model folder {text!r} has no tokenizer files; save the tokenizer "
                               "there (tokenizer.save_pretrained) or pass tokenizer=")
    return kind


def check_reward_funcs(specs, where: str = "reward_funcs", tokenizer_given: bool = False) -> None:
    """Check every dotted path, file.py:function and reward-model folder / hub id in ``specs`` before any
    model loads: functions are imported (their module's errors named with file and line), model folders
    must hold a one-label sequence classifier (with tokenizer files unless ``tokenizer_given``).
    Messages start with ``where`` (``where[i]`` when there are several specs); raises ValueError
    (``ModelSourceError`` for model folders)."""
    specs = [specs] if callable(specs) or isinstance(specs, (str, os.PathLike)) else list(specs or [])
    for i, spec in enumerate(specs):
        if isinstance(spec, (str, os.PathLike)):
            _check_spec(os.fspath(spec).strip(), f"{where}[{i}]" if len(specs) > 1 else where, tokenizer_given)


def _reward_model(model, tokenizer, device, where: str) -> RewardModel:
    """A folder, hub id or loaded model -> RewardModel, using ``tokenizer`` when the folder has none."""
    try:
        if isinstance(model, str):
            _check_spec(model, where, tokenizer is not None)
            folder = Path(model).expanduser()
            if not folder.is_dir() or any((folder / name).is_file() for name in TOKENIZER_FILES):
                return RewardModel(model, device=device)  # its own tokenizer (or a hub id)
            model = load_pretrained(AutoModelForSequenceClassification, model, "reward model")
        if tokenizer is None:
            raise ValueError("a loaded reward model needs tokenizer= (the tokenizer it was trained with)")
        return RewardModel(model, tokenizer=tokenizer, device=device)
    except ModelSourceError as err:  # a load failure: say which spec it was, keep the class the CLI reports
        message = str(err)
        raise ModelSourceError(message if message.startswith(where) else f"{where}: {message}") from err
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def load_reward_funcs(specs: list, tokenizer=None, device=None) -> list[RewardFunc]:
    """Resolve each spec (callable, dotted path, file.py:function, reward-model folder / hub id, loaded model)
    to a RewardFunc.

    ``tokenizer``: used for a loaded model, or a reward-model folder that holds no tokenizer.
    ``device``: where reward models are put. Errors name the spec's position (``reward_funcs[i]``);
    :func:`check_reward_funcs` raises the same errors without loading a model.
    """
    if callable(specs) or isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    if not specs:
        raise ValueError("reward_funcs is empty: give at least one reward function or reward model")
    funcs = []
    for i, spec in enumerate(specs):
        where = f"reward_funcs[{i}]"
        if isinstance(spec, RewardFunc):
            funcs.append(spec)
        elif isinstance(spec, torch.nn.Module):
            rm = _reward_model(spec, tokenizer, device, where)
            name = str(getattr(spec.config, "_name_or_path", "") or type(spec).__name__).rstrip("/").split("/")[-1]
            funcs.append(RewardFunc(name, _RewardModelFunc(rm), "reward model"))
        elif callable(spec):
            funcs.append(RewardFunc(_callable_name(spec), spec))
        elif isinstance(spec, (str, os.PathLike)):
            text = os.fspath(spec).strip()
            if _kind(text) == "function":
                fn = load_function(text, where)
                funcs.append(RewardFunc(_callable_name(fn), fn, f"dotted path {text!r}"))
            else:  # a folder, or 'owner/name' / 'name': a hub id (checked offline-aware by the model loader)
                rm = _reward_model(text, tokenizer, device, where)
                funcs.append(RewardFunc(Path(text).name or text, _RewardModelFunc(rm), f"reward model {text!r}"))
        else:
            raise ValueError(f"{where}: expected a function, a dotted path 'module:function' or a reward-model "
                             f"folder, got {type(spec).__name__} {spec!r}")
    return funcs


def _as_float(value, func: RewardFunc, row: int) -> float:
    if value is None:
        return math.nan
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, numbers.Real):  # int, float, bool, numpy scalars
        return float(value)
    raise ValueError(f"reward function {func.name!r} ({func.source}) returned {type(value).__name__} {value!r} "
                     f"for row {row}; expected a number, or None where it does not apply")


def score(reward_funcs: list, weights: list[float] | None, prompts: list, completions: list,
          columns: dict[str, list] | None = None, *, keep_nan: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Call every reward function on the batch and combine them as TRL does.

        per_func[i, f] = score of completion i by function f   (None -> NaN = not applicable)
        rewards[i]     = nansum_f(weights[f] * per_func[i, f])  (a row with no score at all: 0, warned)

    ``keep_nan=True`` leaves an unscorable row (every function returned None) NaN in ``rewards``
    instead of 0, as TRL 1.16 does: ``algos.group_advantages`` / ``rloo_advantages`` then leave it
    out of its group's baseline and give it advantage 0 (a 0 would bias the baseline and hand the
    row a made-up advantage); log such rewards with ``nanmean``.
    Shapes: N prompts (one per completion), N completions, each column N values ->
    (rewards (N,) float32, per_func (N, F) float32), on the CPU. ``weights`` None = all 1.
    Source: TRL 1.x ``GRPOTrainer._calculate_rewards`` and the weighted ``nansum`` after it.
    """
    columns = dict(columns or {})
    funcs = [f if isinstance(f, RewardFunc) else RewardFunc(_callable_name(f), f) for f in reward_funcs]
    n = len(prompts)
    if len(completions) != n:
        raise ValueError(f"got {n} prompts and {len(completions)} completions; pass one prompt per completion")
    for key, values in columns.items():
        if key in ("prompts", "completions"):
            raise ValueError(f"column {key!r} clashes with the reward-function argument of that name; rename it")
        if len(values) != n:
            raise ValueError(f"column {key!r} has {len(values)} values for {n} completions (one per completion)")
    if weights is None:
        weights = [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise ValueError(f"reward_weights has {len(weights)} entries for {len(funcs)} reward functions "
                         f"({[f.name for f in funcs]}); give one weight per function")
    per_func = torch.empty(n, len(funcs), dtype=torch.float32)  # (N, F)
    for j, func in enumerate(funcs):
        out = func(prompts, completions, **columns)
        if isinstance(out, torch.Tensor):
            out = out.reshape(-1).tolist()
        if not hasattr(out, "__len__") or isinstance(out, (str, bytes, dict)):
            raise ValueError(f"reward function {func.name!r} ({func.source}) returned {type(out).__name__}; "
                             f"expected a list of {n} scores")
        if len(out) != n:
            raise ValueError(f"reward function {func.name!r} ({func.source}) returned {len(out)} scores for "
                             f"{n} completions; expected {n}")
        per_func[:, j] = torch.tensor([_as_float(v, func, i) for i, v in enumerate(out)], dtype=torch.float32)
    nan = torch.isnan(per_func)  # (N, F)
    empty = nan.all(dim=1)  # (N,)
    if empty.any():
        rows = empty.nonzero().flatten().tolist()
        first = rows[0]
        warnings.warn(f"all reward functions returned None for {len(rows)} row(s) (first: row {first}, prompt "
                      f"{str(prompts[first])[:80]!r}, completion {str(completions[first])[:80]!r}); their reward is "
                      f"{'NaN (no advantage)' if keep_nan else '0'}. Make sure at least one reward function applies "
                      "to every row.", stacklevel=2)
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)  # (F,)
    rewards = (per_func * w).nansum(dim=1)  # (N,)
    if keep_nan:
        rewards = torch.where(empty, torch.full_like(rewards, float("nan")), rewards)
    return rewards, per_func
