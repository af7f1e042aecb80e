"""Where the prompt ends in a preference row.

Explicit prompt (a ``prompt`` column): ``chosen``/``rejected`` are either completions
(kept as they are) or full texts that start with the prompt (the prompt is stripped).
Which of the two is decided once per dataset by ``prompt_in_texts``: full texts when at
least half of the rows start with their prompt; then every row must, and one that does
not is an error ("does not start with the prompt") rather than a silent guess.

Implicit prompt (no ``prompt`` column): the prompt is what chosen and rejected share.
- Texts: their longest common prefix, cut back to a word boundary so no word is split;
  the whitespace before the first differing word goes to the completions, which suits
  BPE vocabularies where a word carries its leading space (" Paris").
      "The capital is Paris." / "The capital is Lyon."  ->  "The capital is" + " Paris." / " Lyon."
- Message lists: the common leading messages; what remains of each must be exactly one
  assistant message (the response).
An empty shared part is an error: the prompt cannot be inferred.
"""

from __future__ import annotations

import datasets

from .checks import RowCheck, clean_messages, is_conversational, iter_rows


def common_prefix_at_word(a: str, b: str) -> str:
    """Longest common prefix of two texts that ends at a word boundary (no trailing whitespace).

    Returns "" when the texts share no whole word.
    """
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    if not (n < len(a) and n < len(b) and a[n].isspace() and b[n].isspace()):
        # The prefix ends inside a word (or one text ends there): back up to the last whitespace.
        n = max((i for i in range(n) if a[i].isspace()), default=0)
    while n > 0 and a[n - 1].isspace():
        n -= 1
    return a[:n]


def shared_messages(a: list[dict], b: list[dict]) -> int:
    """Number of equal leading messages of two conversations (null keys ignored)."""
    n = 0
    for x, y in zip(clean_messages(a), clean_messages(b)):
        if x != y:
            break
        n += 1
    return n


def _starts_with(value, prompt) -> bool:
    if isinstance(value, str) and isinstance(prompt, str):
        return bool(prompt) and value.startswith(prompt)
    if isinstance(value, list) and isinstance(prompt, list) and prompt:
        if all(isinstance(m, dict) for m in value + prompt) and len(value) > len(prompt):
            return clean_messages(value[: len(prompt)]) == clean_messages(prompt)
    return False


def prompt_in_texts(dataset: datasets.Dataset) -> bool:
    """True when the explicit-prompt preference rows hold full texts (prompt + response).

    Decided by majority (at least half of the rows start both texts with the prompt), so
    a few completions that happen to repeat their prompt do not flip a completion dataset.
    """
    if "prompt" not in dataset.column_names:
        return False
    columns = dataset.select_columns(["prompt", "chosen", "rejected"])
    starts = sum(_starts_with(r["chosen"], r["prompt"]) and _starts_with(r["rejected"], r["prompt"])
                 for r in iter_rows(columns))
    return starts > 0 and 2 * starts >= len(dataset)


def parse_preference(row: dict, check: RowCheck, strip_prompt: bool):
    """Check one preference row and split it: -> (prompt, chosen, rejected, margin, weight).

    ``chosen``/``rejected`` come back without the prompt: texts, or lists of messages
    ending with the assistant response. ``margin`` is 0.0 and ``weight`` 1.0 when their
    column is absent; when the column exists every row needs a number (weight >= 0).
    """
    chosen = check.text_or_messages("chosen", row.get("chosen"))
    rejected = check.text_or_messages("rejected", row.get("rejected"))
    check.same_kind("chosen", chosen, "rejected", rejected)
    if chosen == rejected:
        check.fail(None, "'chosen' and 'rejected' are identical; a preference needs two different responses")
    if "prompt" in row:
        prompt = check.text_or_messages("prompt", row.get("prompt"))
        check.same_kind("prompt", prompt, "chosen", chosen)
        if strip_prompt:
            chosen = _strip(check, "chosen", chosen, prompt)
            rejected = _strip(check, "rejected", rejected, prompt)
        if is_conversational(chosen):
            for field, value in (("chosen", chosen), ("rejected", rejected)):
                if value[-1]["role"] != "assistant":
                    check.fail(field, f"must end with an assistant message, but the last one is {value[-1]['role']!r}")
    elif is_conversational(chosen):
        prompt, chosen, rejected = _implicit_messages(check, chosen, rejected)
    else:
        prompt = common_prefix_at_word(chosen, rejected)
        if not prompt:
            check.fail(None, "'chosen' and 'rejected' share no common prefix (no whole word), so the prompt cannot be "
                             "inferred; add a 'prompt' column or start both texts with the prompt")
        chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
    if chosen == rejected:
        check.fail(None, "'chosen' and 'rejected' are identical after removing the prompt")
    margin = check.number("margin", row["margin"]) if "margin" in row else 0.0
    weight = check.number("weight", row["weight"]) if "weight" in row else 1.0
    if weight < 0:
        check.fail("weight", f"must be >= 0, found {weight}")
    return prompt, chosen, rejected, margin, weight


def _strip(check: RowCheck, field: str, value, prompt):
    """Remove the prompt from a full text (or conversation) that must start with it."""
    if not _starts_with(value, prompt) and value != prompt:
        check.fail(field, "does not start with the prompt; in this dataset most rows hold the full text "
                          "(prompt + response) in 'chosen'/'rejected', so every row must start with its 'prompt'")
    rest = value[len(prompt):]
    if not rest or (isinstance(rest, str) and not rest.strip()):
        check.fail(field, "is the prompt alone, with no response after it")
    return rest


def _implicit_messages(check: RowCheck, chosen: list[dict], rejected: list[dict]):
    shared = shared_messages(chosen, rejected)
    if shared == 0:
        check.fail(None, "'chosen' and 'rejected' share no leading messages, so the prompt cannot be inferred; "
                         "add a 'prompt' column or start both conversations with the prompt messages")
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        rest = value[shared:]
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            check.fail(field, f"has {len(rest)} message(s) after the {shared} it shares with the other; expected "
                              "exactly one final assistant message (the response)")
    return chosen[:shared], chosen[shared:], rejected[shared:]
