"""Records -> token ids (plain Python lists; the collators make tensors).

Prompt and completion are tokenized separately and their ids concatenated, so the
boundary (which tokens are the prompt, for masking) is exact. Caveat: a BPE tokenizer
may tokenize the joined text differently at the seam (``"is" + " Paris"`` never merges
across it), so the ids can differ slightly from ``tokenizer(prompt + completion)``. The
implicit-prompt split at a word boundary (``prompts.py``) keeps that seam where BPE
would split anyway.

Special tokens: a text prompt is tokenized with ``add_special_tokens=True`` (so a
tokenizer that adds BOS, like Llama's, gets it once, at the start); completions and
anything rendered by a chat template use ``add_special_tokens=False`` (the template
already wrote its special tokens). An eos is appended to text completions when the
tokenizer has one and the completion does not already end with it; chat-rendered
completions end with the template's own end-of-turn marker and get nothing extra.

Separator rule (TRL's): a text prompt and its completion are joined exactly as they are,
with nothing added between them. Data whose completions do not start with whitespace (and
whose prompts do not end with it) therefore glue words together ("...sentence." +
"Plants use..." -> "...sentence.Plants use..."); ``tokenize_dataset`` warns once per dataset
(``SeparatorWarning``) with the count and the first such row, and changes nothing.

``index``/``source`` (optional) only name the row in error messages; ``tokenize_dataset``
passes them for you.
"""

from __future__ import annotations

import warnings

from .chat import render_conversation, render_pair
from .errors import DataError, Source, source_of

IGNORE_INDEX = -100  # labels with this value are skipped by torch's cross-entropy
_COMPLETIONS = {"sft": ("completion",), "pair": ("chosen", "rejected"), "rating": ("response",),
                "unpaired": ("completion",)}
TRUNCATION_MODES = ("keep_end", "keep_start")


class SeparatorWarning(UserWarning):
    """Text prompts and completions meet with no whitespace between them (see the module docstring)."""


def _glued(prompt, completion) -> bool:
    return isinstance(prompt, str) and isinstance(completion, str) and bool(prompt) and bool(completion) \
        and not prompt[-1].isspace() and not completion[0].isspace()


def check_separators(dataset, kind: str, source: Source | None = None) -> int:
    """Warn (``SeparatorWarning``) when text prompt + completion would be joined with no whitespace;
    returns how many rows would be."""
    fields = _COMPLETIONS.get(kind, ())
    if "prompt" not in dataset.column_names or not fields or not set(fields) <= set(dataset.column_names):
        return 0
    prompts = dataset["prompt"]
    glued = [i for i, p in enumerate(prompts) if any(_glued(p, c) for c in (dataset[f][i] for f in fields))]
    if glued:
        i, src = glued[0], source or source_of(dataset)
        completion = next(dataset[f][i] for f in fields if _glued(prompts[i], dataset[f][i]))
        warnings.warn(f"{src.at(i)}: {len(glued)} of {len(prompts)} rows join the prompt and the "
                      f"{'/'.join(fields)} with no space or newline between them (e.g. {prompts[i][-20:]!r} + "
                      f"{completion[:20]!r}); they are joined as they are, as TRL does; start the completions "
                      "with a space (or end the prompts with one) if words should not run together",
                      SeparatorWarning, stacklevel=3)
    return len(glued)


def _where(index: int | None, source: Source | str | None) -> str:
    if isinstance(source, Source):
        return source.at(index) if index is not None else source.name
    name = source or "<row>"
    return f"{name} row {index}" if index is not None else name


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    if not text and not add_special_tokens:
        return []
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _with_eos(tokenizer, ids: list[int]) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None or (ids and ids[-1] == eos):
        return ids
    return ids + [eos]


def _sft_segments(example: dict, tokenizer) -> tuple[list[tuple[str, bool]], bool]:
    """(segments (text, trained), rendered_by_template) for one SFT row."""
    if "messages" in example and example["messages"] is not None:
        return render_conversation(tokenizer, example["messages"]), True
    prompt, completion = example["prompt"], example["completion"]
    prompt_text, completion_text = render_pair(tokenizer, prompt, completion)
    return [(prompt_text, False), (completion_text, True)], not isinstance(prompt, str)


def tokenize_sft(example: dict, tokenizer, max_length: int, completion_only: bool = True, *,
                 assistant_only: bool = False, index: int | None = None,
                 source: Source | str | None = None) -> dict[str, list[int]]:
    """One SFT row -> ``{"input_ids", "attention_mask", "labels"}``, lists of equal length <= max_length.

    ``example``: ``{"prompt", "completion"}`` (texts or messages) or ``{"messages"}``.
    ids = prompt ids + completion ids (+ eos for text completions). For a conversation
    every assistant turn is a completion and everything else is prompt.
    ``labels``: -100 on prompt tokens when ``completion_only`` else a copy of the ids.
    ``assistant_only`` (TRL's assistant_only_loss): -100 on everything but the assistant turns
    of a conversation whatever ``completion_only`` says (each assistant segment of
    ``render_conversation``: the answer and its end-of-turn marker, not the role header); a
    row that is not a conversation raises ``DataError``.
    Truncation keeps the first ``max_length`` tokens. If no completion token survives,
    raises ``DataError`` naming the row: training on it would teach nothing (or only the
    prompt) and a silent all -100 row hides a max_length that is too small.
    """
    if assistant_only and example.get("messages") is None:
        if not isinstance(example.get("prompt"), list):
            raise DataError(f"{_where(index, source)}: assistant_only_loss needs a conversation (messages), but the "
                            "row is text, which has no assistant turns")
        completion = example["completion"]  # a conversational prompt-completion row is one conversation (as to_sft)
        completion = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
        example = {"messages": list(example["prompt"]) + list(completion)}
    completion_only = completion_only or assistant_only  # in a conversation the completions are the assistant turns
    try:
        segments, templated = _sft_segments(example, tokenizer)
    except DataError as err:
        raise DataError(f"{_where(index, source)}: {err}") from None
    ids: list[int] = []
    trained: list[bool] = []
    for k, (text, is_completion) in enumerate(segments):
        piece = _encode(tokenizer, text, add_special_tokens=(k == 0 and not templated))
        if is_completion and not templated and k == len(segments) - 1:
            piece = _with_eos(tokenizer, piece)
        ids += piece
        trained += [is_completion] * len(piece)
    if not any(trained[:max_length]):
        raise DataError(f"{_where(index, source)}: no completion token is left after truncating to max_length="
                        f"{max_length} (the prompt has {trained.index(True) if any(trained) else len(ids)} "
                        "tokens); raise max_length or shorten the prompt")
    ids, trained = ids[:max_length], trained[:max_length]
    labels = [t if (keep or not completion_only) else IGNORE_INDEX for t, keep in zip(ids, trained)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def truncate_pair(prompt: list[int], completions: list[list[int]], max_length: int):
    """Fit prompt + each completion into ``max_length`` tokens -> (prompt, completions).

    1. Nothing changes if ``len(prompt) + longest completion <= max_length``.
    2. Completions are cut from the right to ``max(max_length - len(prompt), max_length // 2)``
       tokens: they give way first, but keep at least half the budget.
    3. If still too long, the prompt is cut from the left (its end, next to the answer,
       matters most; a leading BOS may be lost).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 for pairs, got {max_length}")
    if len(prompt) + max(len(c) for c in completions) <= max_length:
        return prompt, completions
    budget = max(max_length - len(prompt), max_length // 2)
    completions = [c[:budget] for c in completions]
    keep = max_length - max(len(c) for c in completions)
    return (prompt[-keep:] if len(prompt) > keep else prompt), completions


def _pair_ids(tokenizer, prompt, completions: list) -> tuple[list[int], list[list[int]]]:
    """Token ids of a prompt and each of its completions (eos on text completions)."""
    templated = not isinstance(prompt, str)
    prompt_ids, completion_ids = None, []
    for completion in completions:
        prompt_text, completion_text = render_pair(tokenizer, prompt, completion)
        if prompt_ids is None:
            prompt_ids = _encode(tokenizer, prompt_text, add_special_tokens=not templated)
        ids = _encode(tokenizer, completion_text, add_special_tokens=False)
        completion_ids.append(ids if templated else _with_eos(tokenizer, ids))
    return prompt_ids, completion_ids


def tokenize_pair(example: dict, tokenizer, max_length: int, *, index: int | None = None,
                  source: Source | str | None = None) -> dict:
    """One preference pair -> ids for a reward model or DPO.

    Returns ``{"chosen_input_ids", "rejected_input_ids"}`` (lists, each <= max_length),
    ``"prompt_length"`` (int: the shared prompt's token count at the start of both, for
    masking), ``"margin"`` and ``"weight"`` (floats; 0.0 / 1.0 when absent). ``group`` is
    not carried over (``tokenize_dataset`` drops the input columns); add it back with
    ``tokenized.add_column("group", pairs["group"])`` for ``GroupedPairSampler``.
    Truncation: ``truncate_pair``. Raises ``DataError`` when truncation leaves chosen
    and rejected identical (no signal).
    """
    where = _where(index, source)
    try:
        prompt_ids, (chosen, rejected) = _pair_ids(tokenizer, example["prompt"],
                                                   [example["chosen"], example["rejected"]])
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    prompt_ids, (chosen, rejected) = truncate_pair(prompt_ids, [chosen, rejected], max_length)
    if chosen == rejected:
        raise DataError(f"{where}: chosen and rejected are identical after truncation to max_length={max_length} "
                        "(they differ only later); raise max_length")
    return {"chosen_input_ids": prompt_ids + chosen, "rejected_input_ids": prompt_ids + rejected,
           "prompt_length": len(prompt_ids), "margin": float(example.get("margin") or 0.0),
           "weight": float(1.0 if example.get("weight") is None else example["weight"])}


def tokenize_rating(example: dict, tokenizer, max_length: int, *, index: int | None = None,
                    source: Source | str | None = None) -> dict:
    """One rated response -> ``{"input_ids": list (<= max_length), "score": float}``.

    Built like one side of a pair (same rendering, eos and truncation), so a reward
    model trained by regression reads the same sequences as one trained on pairs.
    """
    try:
        prompt_ids, (response,) = _pair_ids(tokenizer, example["prompt"], [example["response"]])
    except DataError as err:
        raise DataError(f"{_where(index, source)}: {err}") from None
    prompt_ids, (response,) = truncate_pair(prompt_ids, [response], max_length)
    return {"input_ids": prompt_ids + response, "score": float(example["score"])}


def tokenize_unpaired(example: dict, tokenizer, max_length: int, max_prompt_length: int | None = None,
                      truncation_mode: str = "keep_end", *, index: int | None = None,
                      source: Source | str | None = None) -> dict:
    """One unpaired (KTO) row -> ``{"prompt_ids", "completion_ids", "label"}``.

    The ids are kept apart so a collator can also join a prompt with ANOTHER row's completion
    (KTO's mismatched pairs). Rendered like one side of a pair (same eos and chat template).
    Truncation: a prompt longer than ``max_prompt_length`` keeps its last tokens
    (``truncation_mode="keep_end"``, TRL's default) or its first ("keep_start"); then
    ``truncate_pair`` fits prompt + completion into ``max_length``.
    """
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    try:
        prompt_ids, (completion,) = _pair_ids(tokenizer, example["prompt"], [example["completion"]])
    except DataError as err:
        raise DataError(f"{_where(index, source)}: {err}") from None
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        prompt_ids = prompt_ids[-max_prompt_length:] if truncation_mode == "keep_end" else \
            prompt_ids[:max_prompt_length]
    prompt_ids, (completion,) = truncate_pair(prompt_ids, [completion], max_length)
    return {"prompt_ids": prompt_ids, "completion_ids": completion, "label": bool(example["label"])}


_TOKENIZERS = {"sft": tokenize_sft, "pair": tokenize_pair, "rating": tokenize_rating, "unpaired": tokenize_unpaired}


def tokenize_dataset(dataset, tokenizer, max_length: int, kind: str = "sft", **kwargs):
    """``dataset.map`` of ``tokenize_{kind}`` (kind: sft, pair, rating, unpaired) that names rows in errors.

    The input columns are replaced by the tokenized ones; extra ``kwargs`` go to the
    tokenize function (e.g. ``completion_only=False``).
    """
    if kind not in _TOKENIZERS:
        raise ValueError(f"kind must be one of {sorted(_TOKENIZERS)}, got {kind!r}")
    fn, src = _TOKENIZERS[kind], source_of(dataset)
    check_separators(dataset, kind, src)

    def one(example, index):
        return fn(example, tokenizer, max_length, index=index, source=src, **kwargs)

    return dataset.map(one, with_indices=True, remove_columns=dataset.column_names,
                       desc=f"Tokenizing ({kind})")
