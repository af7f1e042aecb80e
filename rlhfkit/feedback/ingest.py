"""Bring prompts and responses into a project: from records, from a file, or by generating them.

Re-exported by ``service`` (``service.import_records`` etc.); the transaction rules there apply:
an import is one transaction, so a bad row 500 leaves nothing of rows 1-499 behind.

Accepted rows (the data layer's formats, extra fields ignored):

    {"prompt": ..., "response": "..."}                      one response (ratings rows)
    {"prompt": ..., "responses": ["...", "..."]}            several (rankings rows; any order)
    {"prompt": ..., "chosen": "...", "rejected": "..."}     two (preference rows)

``prompt`` is text or a list of chat messages (kept in ``Prompt.meta["messages"]``, shown as
``role: content`` lines). Optional ``policy`` names the model that wrote the responses.
Rows with the same prompt text are grouped; a prompt's responses are deduplicated by text
(also against earlier imports), and items are made per prompt from the responses of this
import: ``rating`` one item scoring all of them, ``pair`` one item per pair, ``ranking`` one
item when there are at least two. Existing identical items are skipped, so re-importing a
file adds nothing.

Gold answers (make the items they determine gold items):

- ``gold_score``: a number for a ``response`` row, or a list parallel to ``responses``;
  a rating item is gold when every one of its responses has a gold score, and a pair when
  both do (equal scores: a tie);
- ``gold_winner``: ``"chosen"``/``"rejected"``/``"tie"`` for a preference row, or for a
  two-response row ``0``/``1`` (index), ``"tie"`` or the winning text;
- ``gold_order``: all of a row's responses best first, as indices or texts; gold for the
  ranking item of exactly those responses and for each of their pairs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .base import as_int, atomic, resolve_project, unstorable
from .errors import FeedbackError, invalid
from .sources import at_lines, model_source, read_records
from .store import KINDS, Item, Project, Prompt, Response

MAX_SAMPLES = 64          # responses per prompt in one generate call
MAX_NEW_TOKENS = 8192


@dataclass
class _Group:
    """One prompt's responses (by text, first-seen order) and gold answers gathered from its rows."""
    text: str
    meta: dict | None
    first_row: int
    responses: dict[str, str] = field(default_factory=dict)  # text -> policy
    gold_scores: dict[str, tuple[int, int]] = field(default_factory=dict)  # text -> (score, row)
    gold_pairs: dict[frozenset, tuple[str, int]] = field(default_factory=dict)  # {t1, t2} -> (winner text|"tie", row)
    gold_orders: list[list[str]] = field(default_factory=list)


def _no_nul(i: int, text: str, name: str) -> str:
    """``text``, unless it holds a NUL or an unpaired surrogate (``base.unstorable``): 422 naming row and field."""
    reason = unstorable(text)
    if reason:
        raise invalid(f"row {i}: field '{name}' {reason}")
    return text


def _prompt_text(i: int, prompt: Any) -> tuple[str, dict | None]:
    if isinstance(prompt, str) and prompt.strip():
        return _no_nul(i, prompt, "prompt"), None
    if isinstance(prompt, list) and prompt and all(isinstance(m, Mapping) and isinstance(m.get("content"), str)
                                                   for m in prompt):
        messages = [{"role": str(m.get("role", "user")), "content": m["content"]} for m in prompt]
        text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return _no_nul(i, text, "prompt"), {"messages": messages}
    raise invalid(f"row {i}: field 'prompt' must be non-empty text or a list of chat messages "
                  f"({{'role', 'content'}}), got {str(prompt)[:60]!r}")


def _texts(i: int, row: Mapping) -> list[str]:
    if row.get("responses") is not None:
        values, name = row["responses"], "responses"
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise invalid(f"row {i}: field 'responses' must be a non-empty list of texts")
    elif row.get("chosen") is not None or row.get("rejected") is not None:
        values, name = [row.get("chosen"), row.get("rejected")], "chosen/rejected"
    elif row.get("response") is not None:
        values, name = [row["response"]], "response"
    else:
        raise invalid(f"row {i}: needs 'response', 'responses' or 'chosen' + 'rejected' next to 'prompt' "
                      f"(it has {sorted(row)})")
    for value in values:
        if not isinstance(value, str):
            raise invalid(f"row {i}: field '{name}' must hold text, got {type(value).__name__} {str(value)[:40]!r}")
        if not value.strip():  # an annotator would be asked to judge nothing
            raise invalid(f"row {i}: field '{name}' holds an empty response {value!r}; remove the row or fill it in")
        _no_nul(i, value, name)
    if len(set(values)) != len(values):
        raise invalid(f"row {i}: field '{name}' repeats a response text")
    return list(values)


def _pick(i: int, value: Any, texts: list[str], what: str) -> str:
    """A response named by index or by text."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(texts):
        return texts[value]
    if isinstance(value, str) and value in texts:
        return value
    raise invalid(f"row {i}: {what} {str(value)[:40]!r} is neither an index 0..{len(texts) - 1} nor one of the "
                  "row's response texts")


def _gold(i: int, row: Mapping, texts: list[str], group: _Group, scale: tuple[int, int]) -> None:
    score = row.get("gold_score")
    if score is not None:
        scores = score if isinstance(score, list) else [score]
        if len(scores) != len(texts) or (not isinstance(score, list) and len(texts) != 1):
            raise invalid(f"row {i}: 'gold_score' must be one number for a 'response' row or a list with one "
                          f"score per response ({len(texts)})")
        for text, value in zip(texts, scores):
            value = as_int(value, f"row {i}: gold_score")
            if not scale[0] <= value <= scale[1]:
                raise invalid(f"row {i}: gold_score {value} is outside the project's scale {scale[0]}..{scale[1]}")
            group.gold_scores[text] = (value, i)
    winner = row.get("gold_winner")
    if winner is not None:
        if len(texts) != 2:
            raise invalid(f"row {i}: 'gold_winner' needs exactly two responses, the row has {len(texts)}")
        if row.get("chosen") is not None and winner in ("chosen", "rejected"):
            winner = texts[0 if winner == "chosen" else 1]
        elif winner != "tie":
            winner = _pick(i, winner, texts, "gold_winner")
        _set_pair_gold(group, texts[0], texts[1], winner, i)
    order = row.get("gold_order")
    if order is not None:
        if isinstance(order, str) or not isinstance(order, Sequence) or len(order) != len(texts):
            raise invalid(f"row {i}: 'gold_order' must list all {len(texts)} responses best first")
        ranked = [_pick(i, value, texts, "gold_order entry") for value in order]
        if len(set(ranked)) != len(ranked):
            raise invalid(f"row {i}: 'gold_order' names a response twice")
        group.gold_orders.append(ranked)
        for better, worse in itertools.combinations(ranked, 2):
            _set_pair_gold(group, better, worse, better, i)


def _set_pair_gold(group: _Group, t1: str, t2: str, winner: str, row: int) -> None:
    key = frozenset((t1, t2))
    if key in group.gold_pairs and group.gold_pairs[key][0] != winner:
        raise invalid(f"row {row}: its gold answer contradicts the one given in row {group.gold_pairs[key][1]} "
                      f"for the same two responses")
    group.gold_pairs[key] = (winner, row)


def _groups(rows: Iterable[Mapping], scale: tuple[int, int]) -> tuple[dict[str, _Group], int]:
    groups: dict[str, _Group] = {}
    n = 0
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise invalid(f"row {n}: expected an object with 'prompt' and responses, got {type(row).__name__}")
        text, meta = _prompt_text(n, row.get("prompt"))
        policy = row.get("policy") or ""
        if not isinstance(policy, str):
            raise invalid(f"row {n}: field 'policy' must be text, got {type(policy).__name__}")
        _no_nul(n, policy, "policy")
        texts = _texts(n, row)
        group = groups.setdefault(text, _Group(text, meta, n))
        for t in texts:
            group.responses.setdefault(t, policy)
        _gold(n, row, texts, group, scale)
    if n == 0:
        raise invalid("no rows to import")
    return groups, n


def import_records(s: Session, project: Project | str | int, records: Iterable[Mapping], *,
                   kinds: Sequence[str] = ("rating",), source: str = "records") -> dict:
    """Create prompts, responses and items of ``kinds`` from rows (see the module docstring).

    Returns counts ``{"rows", "prompts_created", "responses_created", "items_created": {kind: n},
    "items_existing", "item_ids", "response_ids"}`` (``response_ids``: every response the rows
    name, in row order). Errors are 422 naming the row (1-based) and field; nothing is written then.
    """
    kinds = tuple(dict.fromkeys(kinds))
    if not kinds or any(k not in KINDS for k in kinds):
        raise invalid(f"kinds must be some of {list(KINDS)}, got {list(kinds)}")
    with atomic(s):
        project = resolve_project(s, project)
        groups, n_rows = _groups(records, project.scale)
        summary = {"rows": n_rows, "prompts_created": 0, "responses_created": 0,
                   "items_created": {k: 0 for k in kinds}, "items_existing": 0, "item_ids": [], "response_ids": []}
        existing = set(s.execute(select(Item.kind, Item.key).where(Item.project_id == project.id)).all())
        prompts = _existing_prompts(s, project, list(groups))
        for group in groups.values():
            prompt_id, ids = _store_group(s, project, group, prompts, summary)
            for kind in kinds:
                _make_items(s, project, kind, prompt_id, group, ids, existing, summary)
        s.flush()
    summary["source"] = source
    return summary


def _existing_prompts(s: Session, project: Project, texts: list[str]) -> dict[str, Prompt]:
    found: dict[str, Prompt] = {}
    for start in range(0, len(texts), 500):
        chunk = texts[start:start + 500]
        for prompt in s.scalars(select(Prompt).where(Prompt.project_id == project.id, Prompt.text.in_(chunk))
                                .order_by(Prompt.id)):
            found.setdefault(prompt.text, prompt)
    return found


def _store_group(s: Session, project: Project, group: _Group, prompts: dict[str, Prompt],
                 summary: dict) -> tuple[int, dict[str, int]]:
    """Get or create the group's prompt and responses; returns the prompt id and response text -> id."""
    prompt = prompts.get(group.text)
    if prompt is None:
        prompt = prompts[group.text] = Prompt(project_id=project.id, text=group.text, meta=group.meta)
        s.add(prompt)
        s.flush()
        summary["prompts_created"] += 1
    known = {r.text: r.id for r in s.scalars(select(Response).where(Response.prompt_id == prompt.id)
                                             .order_by(Response.id.desc()))}
    ids = {}
    for text, policy in group.responses.items():
        if text not in known:
            response = Response(prompt_id=prompt.id, text=text, policy=policy[:500])
            s.add(response)
            s.flush()
            known[text] = response.id
            summary["responses_created"] += 1
        ids[text] = known[text]
        summary["response_ids"].append(known[text])
    return prompt.id, ids


def _make_items(s: Session, project: Project, kind: str, prompt_id: int, group: _Group, ids: dict[str, int],
                existing: set, summary: dict) -> None:
    texts = list(ids)
    if kind == "rating":
        units = [texts]
    elif kind == "pair":
        units = [list(pair) for pair in itertools.combinations(texts, 2)]
    else:
        units = [texts] if len(texts) >= 2 else []
    for unit in units:
        rids = sorted(ids[t] for t in unit)
        key = ",".join(map(str, rids))
        if (kind, key) in existing:
            summary["items_existing"] += 1
            continue
        gold = _item_gold(kind, unit, ids, group)
        item = Item(project_id=project.id, kind=kind, prompt_id=prompt_id, response_ids=rids, key=key,
                    is_gold=gold is not None, gold_answer=gold, priority=0.0)
        s.add(item)
        s.flush()
        existing.add((kind, key))
        summary["items_created"][kind] += 1
        summary["item_ids"].append(item.id)


def _item_gold(kind: str, unit: list[str], ids: dict[str, int], group: _Group) -> Any:
    """The stored gold answer for an item of these response texts, or None."""
    if kind == "rating":
        scored = [t for t in unit if t in group.gold_scores]
        if scored and len(scored) != len(unit):
            raise invalid(f"row {group.gold_scores[scored[0]][1]}: gold_score is given for {len(scored)} of the "
                          f"{len(unit)} responses to this prompt; a gold rating item needs every response scored")
        return {str(ids[t]): group.gold_scores[t][0] for t in unit} if scored else None
    if kind == "pair":
        t1, t2 = sorted(unit, key=lambda t: ids[t])  # canonical: a has the smaller id
        winner = group.gold_pairs.get(frozenset(unit), (None, 0))[0]
        if winner is None and t1 in group.gold_scores and t2 in group.gold_scores:
            s1, s2 = group.gold_scores[t1][0], group.gold_scores[t2][0]
            winner = "tie" if s1 == s2 else (t1 if s1 > s2 else t2)
        return None if winner is None else ("tie" if winner == "tie" else ("a" if winner == t1 else "b"))
    for order in group.gold_orders:
        if sorted(order) == sorted(unit):
            return [ids[t] for t in order]
    return None


def import_file(s: Session, project: Project | str | int, path: str | Path, **kwargs) -> dict:
    """``import_records`` on a JSONL / JSON / CSV / Parquet file read by ``rlhfkit.data.load_records``;
    errors name the file and the line (the row for Parquet). ``kwargs`` go to ``import_records``."""
    from ..data.errors import source_of

    dataset = read_records(path)
    source = source_of(dataset)
    try:
        return import_records(s, project, dataset.to_list(), source=str(path), **kwargs)
    except FeedbackError as err:
        raise FeedbackError(at_lines(str(path), err.message, source.line), err.status) from None


def generate_responses(s: Session, project: Project | str | int, policy_path: str | Path, prompts: Sequence[Any], *,
                       n: int = 2, max_new_tokens: int = 64, seed: int = 0, temperature: float = 1.0,
                       kinds: Sequence[str] = ("rating",), policy: str | None = None,
                       batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> list[Response]:
    """Sample ``n`` responses per prompt from the causal LM in ``policy_path`` (a local folder or hub
    name) and import them with items of ``kinds``; returns the responses, prompt by prompt.

    Sampling is plain (temperature, no top-k/top-p) and seeded, so the same call gives the
    same texts. The model runs before the write transaction opens: annotators are not
    blocked while it generates. Identical samples collapse into one response. ``progress(done,
    total)`` is called after each batch of samples (the web app's background job shows it).
    """
    check_generation(policy_path, prompts, n, max_new_tokens, temperature)
    texts = _sample(model_source(policy_path), prompts, n, max_new_tokens, seed, temperature, batch_size, progress)
    name = policy if policy is not None else str(policy_path)
    rows = [{"prompt": p, "responses": list(dict.fromkeys(texts[i * n:(i + 1) * n])), "policy": name}
            for i, p in enumerate(prompts)]
    summary = import_records(s, project, rows, kinds=kinds, source=f"generated by {name}")
    found = {r.id: r for r in s.scalars(select(Response).where(Response.id.in_(summary["response_ids"])))}
    return [found[rid] for rid in summary["response_ids"]]


def check_generation(policy_path: str | Path, prompts: Sequence[Any], n: Any, max_new_tokens: Any,
                     temperature: Any = 1.0) -> str:
    """Every check ``generate_responses`` makes before loading anything (422 naming what is wrong); returns the
    model source. The web app runs it in the request, so a typo is answered at once, not by a failed job."""
    n, max_new_tokens = as_int(n, "n"), as_int(max_new_tokens, "max_new_tokens")
    if not 1 <= n <= MAX_SAMPLES or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise invalid(f"n must be 1..{MAX_SAMPLES} and max_new_tokens 1..{MAX_NEW_TOKENS}, got n={n}, "
                      f"max_new_tokens={max_new_tokens}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature <= 100:
        raise invalid(f"temperature must be a number in (0, 100], got {temperature!r}")
    if not prompts:
        raise invalid("no prompts to generate for")
    for i, prompt in enumerate(prompts, start=1):
        _prompt_text(i, prompt)  # a bad prompt fails before minutes of loading and sampling
    return model_source(policy_path)


def _sample(policy_path, prompts: Sequence[Any], n: int, max_new_tokens: int, seed: int, temperature: float,
            batch_size: int, progress: Callable[[int, int], None] | None = None) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM

    from ..models.loading import ModelSourceError, load_pretrained, load_tokenizer

    try:  # the trainers' loaders: a folder that is not a model, or a hub id that cannot load, named plainly
        tokenizer = load_tokenizer(policy_path, "policy")
        model = load_pretrained(AutoModelForCausalLM, policy_path, "policy")
    except ModelSourceError as err:
        raise invalid(str(err)) from None
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    outputs = sample_ids(model, tokenizer, prompts, n, max_new_tokens, seed, temperature, batch_size, progress)
    return [tokenizer.decode(out, skip_special_tokens=True) for out in outputs]


def sample_ids(model, tokenizer, prompts: Sequence[Any], n: int, max_new_tokens: int, seed: int, temperature: float,
               batch_size: int, progress: Callable[[int, int], None] | None = None) -> list:
    """The response token ids (1-D tensors, EOS kept, no prompt) of ``n`` samples per prompt, prompt by prompt.

    Each prompt is rendered with the tokenizer's chat template when it is a list of messages
    (``data.render_prompt``). Sampling goes through ``rollout.sampling.sample_responses``, the
    dispatcher every trainer samples with, seeded once with ``seed``.
    """
    import torch

    from ..data import render_prompt
    from ..rollout.sampling import sample_responses

    device = next(model.parameters()).device
    queries = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, (str, list)) or not prompt:
            raise invalid(f"prompt {i + 1}: expected text or chat messages, got {json.dumps(prompt)[:60]}")
        ids = tokenizer(render_prompt(tokenizer, prompt), return_tensors="pt").input_ids[0].to(device)
        queries.extend([ids] * n)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(seed)
    kwargs = {"do_sample": True, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    outputs = []
    # One call per batch (the same batches and random stream as one call for all), to report progress.
    for start in range(0, len(queries), batch_size):
        responses, _, _ = sample_responses(model, queries[start:start + batch_size], kwargs, pad_token_id=pad,
                                           eos_token_id=tokenizer.eos_token_id, batch_size=batch_size)
        outputs += responses
        if progress is not None:
            progress(len(outputs), len(queries))
    return outputs
