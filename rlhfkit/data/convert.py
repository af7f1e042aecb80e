"""Conversions between formats (pure: a new ``datasets.Dataset`` out, the input untouched).

Each conversion validates every row it reads (same messages as ``validate``) and keeps
only the columns it documents. Row-for-row conversions keep the source's line numbers;
pair datasets built from rankings or ratings keep the source name and add ``group``, the
index of the source prompt (the ranking row, or the distinct rating prompt in order of
first appearance), so ``GroupedPairSampler`` and ``train_eval_split`` keep a prompt's
pairs together.

Conversational data stays conversational: a prompt is a list of messages and a
completion (``chosen``/``rejected``/``completion``) is the list of messages that
follows it, normally one assistant message. A text response to a message prompt (ratings,
rankings) becomes ``[{"role": "assistant", "content": response}]``.
"""

from __future__ import annotations

import json
from itertools import combinations

import datasets

from .checks import RowCheck, iter_rows
from .errors import Source, source_of, tag_source
from .formats import NEEDS, column_hint, detect_format, parse_row, require_columns
from .prompts import parse_preference, prompt_in_texts


def _rows(dataset, fmt: str, src: Source):
    """(index, checker, row) for every row, after checking the format's columns exist."""
    require_columns(dataset, fmt, src)
    if len(dataset) == 0:
        raise src.error(None, "contains no records")
    for i, row in enumerate(iter_rows(dataset)):
        yield i, RowCheck(src, i, NEEDS[fmt]), row


def _build(columns: dict[str, list], src: Source) -> datasets.Dataset:
    return tag_source(datasets.Dataset.from_dict(columns), src)


def _as_completion(prompt, response):
    """A text response to a message prompt becomes one assistant message."""
    if isinstance(prompt, list) and isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response


def to_preference_pairs(dataset: datasets.Dataset, fmt: str | None = None,
                        source: str | Source | None = None) -> datasets.Dataset:
    """Pairs for reward models and DPO: rows ``{prompt, chosen, rejected, margin, weight}``.

    - ``preference``: one pair per row; the prompt explicit (stripped from full texts)
      or implicit (see ``prompts.py``). ``margin`` 0.0 and ``weight`` 1.0 unless given.
    - ``rankings``: every ordered pair (i < j) of each ranking, the better one (i) as
      chosen: K responses give K(K-1)/2 pairs, in order (0,1), (0,2), ..., (K-2,K-1)
      (InstructGPT, Ouyang et al. 2022, sec. 3.5). margin 0.0, weight 1.0, plus ``group``.
    - ``ratings``: within each prompt, every pair of distinct responses with different
      scores; the higher score is chosen and ``margin`` is the score difference. Ties
      are dropped (they carry no preference). A response rated several times (several
      annotators) counts once, with its mean score. Plus ``group``.
    """
    src = source_of(dataset, source)
    fmt = fmt or detect_format(dataset, src)
    if fmt == "preference":
        return _from_preference(dataset, src)
    if fmt == "rankings":
        return _from_rankings(dataset, src)
    if fmt == "ratings":
        return _from_ratings(dataset, src)
    raise src.error(None, f"cannot make preference pairs from {fmt!r} data; expected preference, rankings or "
                          "ratings")


def _from_preference(dataset, src: Source) -> datasets.Dataset:
    strip = prompt_in_texts(dataset)
    out = {k: [] for k in ("prompt", "chosen", "rejected", "margin", "weight")}
    for _, check, row in _rows(dataset, "preference", src):
        for key, value in zip(out, parse_preference(row, check, strip)):
            out[key].append(value)
    return _build(out, src)


def _from_rankings(dataset, src: Source) -> datasets.Dataset:
    out = {k: [] for k in ("prompt", "chosen", "rejected", "margin", "weight", "group")}
    for i, check, row in _rows(dataset, "rankings", src):
        prompt, responses = parse_row("rankings", row, check)
        for better, worse in combinations(responses, 2):  # (0,1), (0,2), ..., best first
            _append_pair(out, prompt, better, worse, 0.0, i)
    return _build(out, src.without_lines())


def _from_ratings(dataset, src: Source) -> datasets.Dataset:
    prompts: dict[str, tuple] = {}  # prompt key -> (prompt, {response: [scores]}), first-appearance order
    for _, check, row in _rows(dataset, "ratings", src):
        prompt, response, score = parse_row("ratings", row, check)
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        prompts.setdefault(key, (prompt, {}))[1].setdefault(response, []).append(score)
    out = {k: [] for k in ("prompt", "chosen", "rejected", "margin", "weight", "group")}
    for group, (prompt, scored) in enumerate(prompts.values()):
        means = [(response, sum(s) / len(s)) for response, s in scored.items()]
        for (a, score_a), (b, score_b) in combinations(means, 2):
            if score_a == score_b:
                continue  # a tie says nothing about which response is better
            (better, high), (worse, low) = ((a, score_a), (b, score_b)) if score_a > score_b else \
                ((b, score_b), (a, score_a))
            _append_pair(out, prompt, better, worse, high - low, group)
    if not out["prompt"]:
        raise src.error(None, "no preference pairs: every prompt has a single response or only tied scores")
    return _build(out, src.without_lines())


def _append_pair(out: dict, prompt, chosen, rejected, margin: float, group: int) -> None:
    out["prompt"].append(prompt)
    out["chosen"].append(_as_completion(prompt, chosen))
    out["rejected"].append(_as_completion(prompt, rejected))
    out["margin"].append(float(margin))
    out["weight"].append(1.0)
    out["group"].append(group)


def to_unpaired_preference(dataset: datasets.Dataset, fmt: str | None = None,
                           source: str | Source | None = None) -> datasets.Dataset:
    """Unpaired feedback for KTO: rows ``{prompt, completion, label}``, label True = desirable.

    - ``unpaired_preference``: as is (row for row, line numbers kept); "true"/"false" texts
      (CSV) become booleans.
    - ``preference``: each pair gives two rows, (prompt, chosen, True) and (prompt, rejected,
      False), the prompt resolved as for DPO; all chosen rows first, then all rejected ones,
      in pair order (TRL's ``unpair_preference_dataset``), plus ``group``: the pair's index, so
      ``train_eval_split`` keeps both rows of a pair on one side. ``margin`` and ``weight`` are dropped.
    Other formats raise ``DataError``: rankings and ratings would put one response on both sides.
    """
    src = source_of(dataset, source)
    fmt = fmt or detect_format(dataset, src)
    out = {"prompt": [], "completion": [], "label": []}
    if fmt == "unpaired_preference":
        for _, check, row in _rows(dataset, fmt, src):
            for key, value in zip(out, parse_row(fmt, row, check)):
                out[key].append(value)
        return _build(out, src)
    if fmt != "preference":
        raise src.error(None, f"cannot make unpaired (KTO) rows from {fmt!r} data; expected unpaired_preference "
                              "rows {prompt, completion, label} or preference pairs {prompt, chosen, rejected}")
    strip = prompt_in_texts(dataset)
    pairs = [parse_preference(row, check, strip)[:3] for _, check, row in _rows(dataset, fmt, src)]
    out["group"] = []
    for side, label in ((1, True), (2, False)):
        for i, pair in enumerate(pairs):
            out["prompt"].append(pair[0])
            out["completion"].append(pair[side])
            out["label"].append(label)
            out["group"].append(i)
    return _build(out, src.without_lines())


def to_regression(dataset: datasets.Dataset, source: str | Source | None = None) -> datasets.Dataset:
    """Ratings as regression targets: rows ``{prompt, response, score}`` with a float score.

    One row per rating (annotators are not averaged here, unlike ``to_preference_pairs``).
    """
    src = source_of(dataset, source)
    out = {"prompt": [], "response": [], "score": []}
    for _, check, row in _rows(dataset, "ratings", src):
        for key, value in zip(out, parse_row("ratings", row, check)):
            out[key].append(value)
    return _build(out, src)


def to_sft(dataset: datasets.Dataset, fmt: str | None = None,
           source: str | Source | None = None) -> datasets.Dataset:
    """Supervised targets: rows ``{prompt, completion}`` (texts) or ``{messages}`` (conversations).

    - ``language_modeling``: prompt "" and the whole text as completion.
    - ``prompt_completion``: as is; message lists become ``messages = prompt + completion``.
    - ``conversational``: ``messages`` as is (every assistant turn is trained, see
      ``tokenize_sft``).
    - ``preference``: prompt + chosen (SFT on the preferred response, as before DPO).
    - ``rankings``: prompt + the best response (the first).
    - ``unpaired_preference``: prompt + completion of the desirable rows (label true) only.
    ``prompt_only`` and ``ratings`` have no single target and raise ``DataError``.
    """
    src = source_of(dataset, source)
    fmt = fmt or detect_format(dataset, src)
    if fmt in ("prompt_only", "ratings"):
        advice = {"prompt_only": "use them as prompts for PPO rollouts",
                  "ratings": "filter the best-rated responses into prompt/completion rows, or train a reward model "
                             "with to_regression / to_preference_pairs"}
        hint = column_hint(dataset, "completion") if fmt == "prompt_only" else ""
        raise src.error(None, f"columns {sorted(dataset.column_names)} are {fmt} data, which has no completion to "
                              f"imitate; SFT reads 'text', 'prompt' + 'completion' or 'messages'{hint}; or "
                              f"{advice[fmt]}")
    strip = prompt_in_texts(dataset) if fmt == "preference" else False
    pairs = []
    for _, check, row in _rows(dataset, fmt, src):
        if fmt == "language_modeling":
            pairs.append(("", parse_row(fmt, row, check)))
        elif fmt == "conversational":
            pairs.append(([], parse_row(fmt, row, check)))
        elif fmt == "preference":
            pairs.append(parse_preference(row, check, strip)[:2])
        elif fmt == "rankings":
            prompt, responses = parse_row(fmt, row, check)
            pairs.append((prompt, _as_completion(prompt, responses[0])))
        elif fmt == "unpaired_preference":
            prompt, completion, desirable = parse_row(fmt, row, check)
            if desirable:
                pairs.append((prompt, completion))
        else:
            pairs.append(parse_row(fmt, row, check))
    if not pairs:
        raise src.error(None, "has no desirable row (label true) to imitate; SFT on unpaired feedback trains on "
                              "the desirable completions")
    if fmt == "unpaired_preference":
        src = src.without_lines()  # rows were filtered: no longer the file's rows
    if isinstance(pairs[0][1], list):
        return _build({"messages": [prompt + completion for prompt, completion in pairs]}, src)
    return _build({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]}, src)
