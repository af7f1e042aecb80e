"""Record formats: detect them from the columns, validate every row.

A format is a set of required columns (plus optional ones). Columns outside every
format (``id``, ``source``, ``annotator``, ``weight``, ...) are carried along and never
decide the format; the format-deciding columns must belong to exactly one format.

    format             columns                                   one row
    language_modeling  text                                      plain text to continue
    prompt_completion  prompt, completion                        texts, or lists of messages
    conversational     messages                                  [{role, content}, ...]
    prompt_only        prompt                                    text or messages (PPO prompts)
    preference         chosen, rejected [, prompt, margin, weight]
    unpaired_preference prompt, completion, label                 label true: desirable (KTO)
    ratings            prompt, response, score [, annotator]
    rankings           prompt, responses (best first)

A message is ``{"role": one of system/user/assistant/tool, "content": non-empty str}``;
keys whose value is null (Arrow adds them when rows have different keys) are ignored.
A conversation must end with an assistant message (there is nothing to learn otherwise).

Numbers (``score``, ``margin``, ``weight``) must be finite ints or floats; text that
parses as a number is accepted too, because CSV cells are text. A ``label`` must be a
boolean (``true``/``false``; the texts "true"/"false" too, for CSV).

``label`` is not a format-deciding column on its own (``{text, label}`` stays language
modelling): when several formats match, the one whose required columns contain all the
others' wins, so ``{prompt, completion, label}`` is unpaired preference data (TRL's KTO
format), not prompt-completion data with a ``label`` carried along.
"""

from __future__ import annotations

import datasets

from .checks import RowCheck, iter_rows
from .errors import DataError, Source, describe, source_of
from .prompts import parse_preference, prompt_in_texts

# format -> (required columns, optional columns)
FORMATS: dict[str, tuple[frozenset, frozenset]] = {
    "language_modeling": (frozenset({"text"}), frozenset()),
    "prompt_completion": (frozenset({"prompt", "completion"}), frozenset()),
    "conversational": (frozenset({"messages"}), frozenset()),
    "prompt_only": (frozenset({"prompt"}), frozenset()),
    "preference": (frozenset({"chosen", "rejected"}), frozenset({"prompt", "margin", "weight"})),
    "ratings": (frozenset({"prompt", "response", "score"}), frozenset({"annotator"})),
    "rankings": (frozenset({"prompt", "responses"}), frozenset()),
    "unpaired_preference": (frozenset({"prompt", "completion", "label"}), frozenset()),
}
# Columns that decide the format; any other column is metadata carried along. "label" only
# decides between formats that match anyway (see the module docstring).
_DECIDING = (frozenset().union(*(req for req, _ in FORMATS.values())) | {"margin"}) - {"label"}

NEEDS = {
    "language_modeling": "a language_modeling row needs a non-empty string 'text'",
    "prompt_completion": "a prompt_completion row needs non-empty 'prompt' and 'completion' (texts, or lists "
                         "of messages; a message-list completion ends with an assistant message)",
    "conversational": "a conversational row needs 'messages': a non-empty list of {role, content} with role in "
                      "system/user/assistant/tool, ending with an assistant message",
    "prompt_only": "a prompt_only row needs a non-empty 'prompt' (a text or a list of messages)",
    "preference": "a preference row needs non-empty 'chosen' and 'rejected' texts (or lists of messages), an "
                  "optional 'prompt', and numeric 'margin'/'weight' when those columns exist",
    "ratings": "a ratings row needs a 'prompt', a non-empty text 'response' and a finite numeric 'score'",
    "rankings": "a rankings row needs a 'prompt' and 'responses': a list of at least 2 distinct non-empty "
                "texts, best first",
    "unpaired_preference": "an unpaired_preference row needs non-empty 'prompt' and 'completion' (texts, or lists "
                           "of messages) and a boolean 'label' (true: desirable, false: undesirable); if 'label' is "
                           "not such a flag, rename the column",
}


def _columns_text(fmt: str) -> str:
    required, optional = FORMATS[fmt]
    text = ", ".join(sorted(required))
    return text + (f" [optional: {', '.join(sorted(optional))}]" if optional else "")


def detect_format(dataset: datasets.Dataset, source: str | Source | None = None) -> str:
    """The format name of ``dataset`` from its column names (see the module table).

    Raises ``DataError`` naming the source, the columns found, every expected column
    set, and the closest format with what it lacks or has too much.
    """
    columns = set(dataset.column_names)
    deciding = columns & _DECIDING
    matches = [fmt for fmt, (req, opt) in FORMATS.items() if req <= columns and deciding <= req | opt]
    widest = [fmt for fmt in matches if all(FORMATS[other][0] <= FORMATS[fmt][0] for other in matches)]
    if len(matches) > 1 and len(widest) == 1:  # {prompt, completion, label}: unpaired, not prompt_completion
        matches = widest
    if len(matches) == 1:
        return matches[0]
    src = source_of(dataset, source)
    expected = "; ".join(f"{fmt}: {_columns_text(fmt)}" for fmt in FORMATS)
    problem = "match several formats" if matches else "match no known format"
    hint = _rename_hint(columns) if not matches else ""
    raise src.error(None, f"columns {sorted(columns)} {problem}{hint or _closest(columns)}; expected one of: "
                          f"{expected}")


# Column names other datasets use for ours (Alpaca, ShareGPT, HH-style exports, ...): a rename fixes them.
ALIASES = {"question": "prompt", "instruction": "prompt", "query": "prompt", "input": "prompt",
           "answer": "completion", "output": "completion", "target": "completion",
           "chosen_response": "chosen", "rejected_response": "rejected", "conversations": "messages",
           "conversation": "messages", "chat": "messages", "content": "text", "ranking": "responses",
           "rating": "score", "label_score": "score"}


def _rename_hint(columns: set) -> str:
    """' (rename 'reject' to 'rejected': then it is preference)' when renaming columns that no format uses,
    to a known alias or a near spelling of a deciding column, makes exactly one format match."""
    import difflib

    renames = {}
    for column in sorted(columns - _DECIDING - {"label", "id", "weight", "annotator", "group", "margin"}):
        target = ALIASES.get(column.lower()) or next(iter(difflib.get_close_matches(column, sorted(_DECIDING), 1,
                                                                                    0.8)), None)
        if target and target not in columns and target not in renames.values():
            renames[column] = target
    if not renames:
        return ""
    renamed = (columns - set(renames)) | set(renames.values())
    deciding = renamed & _DECIDING
    matches = [fmt for fmt, (req, opt) in FORMATS.items() if req <= renamed and deciding <= req | opt]
    widest = [fmt for fmt in matches if all(FORMATS[other][0] <= FORMATS[fmt][0] for other in matches)]
    if len(widest) != 1:
        return ""
    moves = ", ".join(f"{old!r} to {new!r}" for old, new in renames.items())
    return f" (rename {moves}: then it is {widest[0]})"


def _closest(columns: set) -> str:
    """'' or ' (closest: ratings, which also needs ['score'])' for a near miss.

    Closest = fewest missing plus disallowed columns, then most required columns present.
    """
    candidates = []
    for fmt, (req, opt) in FORMATS.items():
        missing, extra = req - columns, (columns & _DECIDING) - req - opt
        if req & columns:
            candidates.append((len(missing) + len(extra), -len(req & columns), fmt, missing, extra))
    if not candidates:
        return ""
    _, _, fmt, missing, extra = min(candidates, key=lambda c: c[:2])
    parts = ([f"also needs {sorted(missing)}"] if missing else []) + \
            ([f"does not allow {sorted(extra)}"] if extra else [])
    return f" (closest: {fmt}, which {' and '.join(parts)})"


def parse_row(fmt: str, row: dict, check: RowCheck):
    """Check one row of format ``fmt`` and return its normalised content.

    language_modeling -> text; prompt_completion -> (prompt, completion);
    conversational -> messages; prompt_only -> prompt; ratings -> (prompt, response, score);
    rankings -> (prompt, responses); unpaired_preference -> (prompt, completion, label: bool).
    Preference rows go through ``prompts.parse_preference``.
    """
    if fmt == "language_modeling":
        return check.text("text", row.get("text"))
    if fmt == "conversational":
        return check.messages("messages", row.get("messages"), final_assistant=True)
    prompt = check.text_or_messages("prompt", row.get("prompt"))
    if fmt == "prompt_only":
        return prompt
    if fmt in ("prompt_completion", "unpaired_preference"):
        completion = check.text_or_messages("completion", row.get("completion"), final_assistant=True)
        check.same_kind("prompt", prompt, "completion", completion)
        if fmt == "unpaired_preference":
            return prompt, completion, check.boolean("label", row.get("label"))
        return prompt, completion
    if fmt == "ratings":
        return prompt, check.text("response", row.get("response")), check.number("score", row.get("score"))
    if fmt == "rankings":
        return prompt, _ranking(check, row.get("responses"))
    raise ValueError(f"parse_row does not handle format {fmt!r}")


def _ranking(check: RowCheck, responses) -> list[str]:
    check.present("responses", responses)
    if not isinstance(responses, list):
        check.fail("responses", f"must be a list of texts (best first), found {describe(responses)}")
    if len(responses) < 2:
        check.fail("responses", f"has {len(responses)} response(s); a ranking needs at least 2")
    seen: dict[str, int] = {}
    for k, response in enumerate(responses):
        check.text(f"responses[{k}]", response)
        if response in seen:
            check.fail("responses", f"lists the same response at positions {seen[response]} and {k}; "
                                    "a ranking orders distinct responses")
        seen[response] = k
    return list(responses)


def validate(dataset: datasets.Dataset, fmt: str, source: str | Source | None = None) -> None:
    """Check every row of ``dataset`` as format ``fmt``; raise ``DataError`` at the first bad one.

    Preference rows also get their prompt resolved (explicit prompt stripped from full
    texts, or the implicit prompt extracted), so every error a conversion could hit is
    found here first.
    """
    src = source_of(dataset, source)
    require_columns(dataset, fmt, src)
    strip = prompt_in_texts(dataset) if fmt == "preference" else False
    try:
        for i, row in enumerate(iter_rows(dataset)):
            check = RowCheck(src, i, NEEDS[fmt])
            if fmt == "preference":
                parse_preference(row, check, strip)
            else:
                parse_row(fmt, row, check)
    except DataError as err:
        missing = sorted((FORMATS[fmt][0] | FORMATS[fmt][1]) - set(dataset.column_names) - {"margin", "weight"})
        hint = column_hint(dataset, missing[0]) if missing else ""
        raise DataError(f"{err}{hint}") from None


# Columns that are metadata by convention: never suggested as a misnamed data column.
_METADATA = frozenset({"id", "source", "annotator", "weight", "group", "metadata", "split", "lang", "language"})


def column_hint(dataset: datasets.Dataset, wanted: str) -> str:
    """'' or " (columns no format uses: ['question']; if one holds the prompt, rename it to 'prompt')"."""
    unused = sorted(set(dataset.column_names) - _DECIDING - _METADATA)
    if not unused:
        return ""
    return f" (columns no format uses: {unused}; if one of them holds the {wanted}, rename it to {wanted!r})"



def require_columns(dataset: datasets.Dataset, fmt: str, src: Source) -> None:
    """Raise ``DataError`` unless ``dataset`` has every required column of ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    missing = FORMATS[fmt][0] - set(dataset.column_names)
    if missing:
        raise src.error(None, f"missing column(s) {sorted(missing)} for format {fmt!r}; found columns "
                              f"{sorted(dataset.column_names)}; {NEEDS[fmt]}")
