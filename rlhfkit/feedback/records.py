"""Plain records of collected judgements: the contract between the store and the analysis.

The store (``store.py``/``service.py``) reads a project's judgements out of the database into a
:class:`FeedbackData`; quality metrics (``quality.py``), calibration and export
(``export.py``) work on these records only, so they are testable without a database and usable
on judgements that came from elsewhere (a Label Studio export turned into records, say).

Identifiers are plain ints (database ids) or strings; texts are carried along so an export
needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass(frozen=True)
class ResponseRec:
    id: int
    prompt_id: int
    prompt: str
    text: str
    policy: str = ""


@dataclass(frozen=True)
class RatingObs:
    """One annotator's score of one response, on the project's scale."""
    item_id: int
    response_id: int
    annotator: str
    score: float
    is_gold: bool = False
    gold_score: Optional[float] = None


@dataclass(frozen=True)
class PairObs:
    """One annotator's comparison of responses ``a`` and ``b`` (canonical order: a < b by id).

    ``winner`` is ``"a"``, ``"b"`` or ``"tie"``; ``strength`` an optional 1..k "how much better";
    ``left`` is the response id that was shown on the left (for position bias).
    """
    item_id: int
    a: int
    b: int
    annotator: str
    winner: Literal["a", "b", "tie"]
    left: int
    strength: Optional[int] = None
    is_gold: bool = False
    gold_winner: Optional[Literal["a", "b", "tie"]] = None


@dataclass(frozen=True)
class RankingObs:
    """One annotator's ranking of several responses, best first; ``shown`` is the display order."""
    item_id: int
    order: tuple[int, ...]
    shown: tuple[int, ...]
    annotator: str
    is_gold: bool = False
    gold_order: Optional[tuple[int, ...]] = None


@dataclass
class FeedbackData:
    """Everything judged in one project."""
    project: str
    scale: tuple[int, int] = (1, 3)
    responses: dict[int, ResponseRec] = field(default_factory=dict)
    ratings: list[RatingObs] = field(default_factory=list)
    pairs: list[PairObs] = field(default_factory=list)
    rankings: list[RankingObs] = field(default_factory=list)

    @property
    def annotators(self) -> list[str]:
        names = {o.annotator for o in self.ratings} | {o.annotator for o in self.pairs} | \
                {o.annotator for o in self.rankings}
        return sorted(names)
