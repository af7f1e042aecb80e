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
  form; the current directory is put on ``sys.path`` first, as ``trl grpo`` does);
- a reward-model folder (or hub id): an ``AutoModelForSequenceClassification`` with one label,
  scored on prompt + completion with its own tokenizer exactly as ``rlhfkit reward`` trained it
  (``rlhfkit.RewardModel``: chat template for message prompts, EOS closing text responses);
- a loaded sequence-classification model (then ``tokenizer`` is its tokenizer).

Differences from TRL: TRL scores a reward model on ``prompt + completion`` texts without
special tokens or EOS; here the text is built as the reward model was trained (TRL's own
``RewardTrainer`` appends EOS too). TRL's built-in reward names (``trl.rewards``) are not known.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForSequenceClassification

from ..models.loading import load_pretrained, looks_local
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


def _load_function(spec: str, where: str) -> Callable:
    """'package.module:function' or 'package.module.function' -> the function, or a ValueError naming it."""
    module_name, sep, name = spec.partition(":")
    if not sep:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name:
        raise ValueError(f"{where}: {spec!r} is not a reward-model folder, and not a dotted path "
                         "'package.module:function' or 'package.module.function'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `rlhfkit grpo reward_funcs=my_rewards:fn` from the project folder
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{where}: cannot import module {module_name!r} for {spec!r} ({type(err).__name__}: "
                         f"{err}); the module must be importable from the current directory or PYTHONPATH"
                         ) from err
    if not hasattr(module, name):
        raise ValueError(f"{where}: module {module_name!r} has no attribute {name!r} (from {spec!r})")
    fn = getattr(module, name)
    if not callable(fn):
        raise ValueError(f"{where}: {spec!r} is a {type(fn).__name__}, not a function "
                         "(prompts, completions, **columns) -> list[float]")
    return fn


def _reward_model(model, tokenizer, device, where: str) -> RewardModel:
    """A folder, hub id or loaded model -> RewardModel, using ``tokenizer`` when the folder has none."""
    try:
        if isinstance(model, str):
            folder = Path(model).expanduser()
            if not folder.is_dir() or any((folder / name).is_file() for name in TOKENIZER_FILES):
                return RewardModel(model, device=device)  # its own tokenizer (or a hub id)
            if tokenizer is None:
                raise ValueError(f"reward model folder {model!r} has no tokenizer files; save the tokenizer "
                                 "there (tokenizer.save_pretrained) or pass tokenizer=")
            model = load_pretrained(AutoModelForSequenceClassification, model, "reward model")
        if tokenizer is None:
            raise ValueError("a loaded reward model needs tokenizer= (the tokenizer it was trained with)")
        return RewardModel(model, tokenizer=tokenizer, device=device)
    except ValueError as err:  # ModelSourceError included: say which spec it was
        raise ValueError(f"{where}: {err}") from err


def load_reward_funcs(specs: list, tokenizer=None, device=None) -> list[RewardFunc]:
    """Resolve each spec (callable, dotted path, reward-model folder / hub id, loaded model) to a RewardFunc.

    ``tokenizer``: used for a loaded model, or a reward-model folder that holds no tokenizer.
    ``device``: where reward models are put. Errors name the spec's position (``reward_funcs[i]``).
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
            if Path(text).expanduser().is_dir() or (looks_local(text) and ":" not in text):
                rm = _reward_model(text, tokenizer, device, where)
                funcs.append(RewardFunc(Path(text).name or text, _RewardModelFunc(rm), f"reward model {text!r}"))
            elif ":" in text or ("/" not in text and "." in text):
                fn = _load_function(text, where)
                funcs.append(RewardFunc(_callable_name(fn), fn, f"dotted path {text!r}"))
            else:  # 'owner/name' or 'name': a hub id (checked offline-aware by the model loader)
                rm = _reward_model(text, tokenizer, device, where)
                funcs.append(RewardFunc(text.split("/")[-1], _RewardModelFunc(rm), f"reward model {text!r}"))
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
