"""What a judging form shows and how its fields become a judgement.

:class:`Job` is the only thing the judging templates and the JSON ``next`` endpoint see of an
assignment: the prompt, the responses in the assignment's display order, the scale and the
annotator's own earlier answer. It is built from ``service.assignment_view`` and has no item
fields, so ``is_gold`` and ``gold_answer`` cannot leak into a page or an API answer by a
template change.

Form fields (one name per response id, so a form needs no JavaScript):
rating ``score_<id>=<int>``, pair ``winner=left|right|tie`` and optional ``strength=1..3``,
ranking ``rank_<id>=<position>`` (1 = best).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import FeedbackError


@dataclass
class Job:
    assignment_id: int
    kind: str
    prompt: str
    responses: list[dict[str, Any]]      # [{"id", "text"}] in display order
    scale_min: int
    scale_max: int
    submit_url: str = ""
    values: dict[Any, Any] = field(default_factory=dict)  # the annotator's answer, to pre-fill the form
    resubmit: bool = False
    error: Optional[str] = None
    htmx: bool = True
    prompt_meta: dict[str, Any] = field(default_factory=dict)  # {"messages": [...]} for a chat prompt
    comment: str = ""       # the annotator's note (pre-filled when editing)
    skip_url: str = ""      # where Skip / Discard post ("" on the edit page: a submitted item is not skipped)

    def as_json(self) -> dict[str, Any]:
        out = {"assignment_id": self.assignment_id, "kind": self.kind, "prompt": self.prompt,
               "responses": self.responses, "scale": [self.scale_min, self.scale_max]}
        if self.kind == "pair":
            out["left"], out["right"] = self.responses[0]["id"], self.responses[1]["id"]
        if self.prompt_meta.get("messages"):
            out["messages"] = self.prompt_meta["messages"]  # a chat prompt's turns
        return out


def job_from_view(view: Mapping[str, Any], **kw: Any) -> Job:
    """A :class:`Job` from ``service.assignment_view`` (which already hides gold status and policies)."""
    low, high = view["scale"]
    responses = [{"id": r["id"], "text": r["text"]} for r in view["responses"]]
    kw.setdefault("comment", view.get("comment") or "")
    return Job(assignment_id=view["assignment_id"], kind=view["kind"], prompt=view["prompt"], responses=responses,
               scale_min=low, scale_max=high, prompt_meta=view.get("prompt_meta") or {}, **kw)


def saved_values(view: Mapping[str, Any]) -> dict[Any, Any]:
    """The stored judgement of an assignment view in form terms (left/right, positions); {} if none."""
    judgement = view.get("judgement")
    if not judgement:
        return {}
    if view["kind"] == "rating":
        return {int(rid): score for rid, score in judgement["scores"].items()}
    if view["kind"] == "pair":
        return {"winner": judgement["side"], "strength": judgement["strength"]}
    return {rid: pos for pos, rid in enumerate(judgement["order"], start=1)}


def answer_text(view: Mapping[str, Any]) -> str:
    """A judgement in words, with responses numbered as they were displayed ("response 2")."""
    judgement = view.get("judgement")
    if not judgement:
        return "not submitted"
    position = {r["id"]: i + 1 for i, r in enumerate(view["responses"])}
    if view["kind"] == "rating":
        scores = sorted(((position[int(rid)], score) for rid, score in judgement["scores"].items()))
        return ", ".join(f"response {pos}: {score}" for pos, score in scores)
    if view["kind"] == "pair":
        if judgement["side"] == "tie":
            return "tie"
        strength = {1: "slightly", 2: "clearly", 3: "much"}.get(judgement["strength"] or 0)
        return f"{judgement['side']} better" + (f" ({strength})" if strength else "")
    return " > ".join(f"response {position[rid]}" for rid in judgement["order"])


def _int(value: Any, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise FeedbackError(f"{what} must be a whole number, got {value!r}", 422) from None


def _id_fields(form: Mapping[str, Any], prefix: str) -> dict[int, str]:
    out = {}
    for key, value in form.items():
        if key.startswith(prefix) and isinstance(value, str):
            out[_int(key[len(prefix):], f"field {key!r}")] = value
    return out


def form_values(kind: str, form: Mapping[str, Any]) -> dict[Any, Any]:
    """The raw answer of a posted form, keyed like :func:`saved_values` (to re-fill it after an error)."""
    if kind == "rating":
        return {rid: _soft_int(v) for rid, v in _id_fields(form, "score_").items()}
    if kind == "pair":
        return {"winner": form.get("winner"), "strength": _soft_int(form.get("strength"))}
    return {rid: _soft_int(v) for rid, v in _id_fields(form, "rank_").items()}


def _soft_int(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def parse_rating(form: Mapping[str, Any]) -> dict[int, int]:
    scores = {rid: _int(v, f"the score of response {rid}") for rid, v in _id_fields(form, "score_").items() if v}
    if not scores:
        raise FeedbackError("pick a score for every response", 422)
    return scores


def parse_pair(form: Mapping[str, Any]) -> tuple[str, Optional[int]]:
    winner = form.get("winner")
    if winner not in ("left", "right", "tie", "a", "b"):
        raise FeedbackError("pick the better response: left, right or tie", 422)
    raw = form.get("strength")
    strength = _int(raw, "strength") if raw not in (None, "") else None
    return winner, (None if winner == "tie" else strength)


def parse_ranking(form: Mapping[str, Any]) -> list[int]:
    """Positions -> ids best first; every position 1..k exactly once."""
    ranks = {rid: _int(v, f"the position of response {rid}") for rid, v in _id_fields(form, "rank_").items()}
    k = len(ranks)
    if k < 2 or sorted(ranks.values()) != list(range(1, k + 1)):
        raise FeedbackError(f"give every response a different position from 1 to {k}", 422)
    return sorted(ranks, key=ranks.get)
