"""A human reward for PPO: post each batch of responses to the annotators' queue and wait for ratings.

    reward_fn = HumanReward("feedback.db", "ppo-live", timeout_s=600, fallback=RewardModel("runs/reward"))
    trainer.train(reward_fn, prompts)                              # PPOTrainer.train / train_ppo

    # or against a running app (rlhfkit feedback serve), with an admin's token:
    reward_fn = HumanReward("http://labels.example:8000", "ppo-live", token=ADMIN_TOKEN, scale=(1, 3))

Each call (``reward_fn(prompts, responses) -> list[float]``, one reward per response):

1. **Posts** the batch as rating items, one per prompt scoring that prompt's distinct responses
   side by side (comparing helps people rate consistently), at priority ``priority + k``
   (``k`` counts this object's calls), so it is served before ordinary work and a newer batch
   before the leftovers of an older one. Identical responses are rated once and share a reward;
   responses the project already holds keep the ratings they have.
2. **Waits**, polling every ``poll_s`` seconds with a "waiting for N ratings" bar, until every
   response has ``min_ratings`` ratings or ``timeout_s`` has passed. Afterwards (direct mode)
   the batch's items drop back to priority 0, so a batch PPO gave up on does not crowd the queue.
3. **Scores** each rated response by the mean of its ratings, calibrated when ``calibrate``: the
   additive annotator model of ``calibration.calibrate_ratings`` (``rating = score + offset``,
   offsets shrunk for annotators with few ratings) removes each person's bias, so who happened
   to pick the item up does not change the reward. Direct mode fits the model on every rating
   of the project (more overlap, better offsets); HTTP mode on the ratings it has seen.
4. **Maps** the score ``x`` on the project's scale ``lo..hi`` to ``(x - mid) / half`` with
   ``mid = (lo + hi) / 2`` and ``half = (hi - lo) / 2``: 1..3 becomes -1..1 (1 → -1, 2 → 0, 3 → 1).
   Calibrated scores may fall slightly outside (a harsh annotator's 3 counts more than a 3);
   they are not clipped.

At the timeout, the human ratings that did arrive are used even when fewer than
``min_ratings``. A response with no rating at all gets the ``fallback`` reward model's score
(any ``(prompts, responses) -> scores`` callable, e.g. ``RewardModel``), put on the same scale
by ``fallback_map``:

- ``"match"`` (default): a linear map that gives the fallback's scores the mean and spread the
  human rewards have on responses both scored (this batch's rated responses plus those of
  earlier fallback calls, the last 2048): increasing, so the reward model's order is kept, and
  a fallback reward is comparable to a human one in the same batch. Until there are 4 such
  responses with some spread on both sides, ``tanh(score)`` (a Bradley–Terry reward model's
  scores are of order 1; tanh keeps them in -1..1 like the human rewards);
- ``"tanh"``: always ``tanh(score)``; ``"none"``: the raw score; or any ``float -> float``.

Without a fallback, unrated responses raise ``TimeoutError`` saying how many. ``timeout_s=0``
takes only ratings that already exist.

Modes: a database URL / SQLite path / session factory talks to the store directly (the
annotators use the web app on the same database); an ``http(s)://`` URL talks to a running
app through its JSON API (``POST /api/projects/{p}/items``, ``GET /api/items/{id}/judgements``)
with an admin's bearer token (``token=`` or ``$RLHFKIT_FEEDBACK_TOKEN``), using only urllib.
The API does not tell a project's rating scale, so HTTP mode assumes ``scale=(1, 3)`` (the
project default) unless told, and refuses scores outside it.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .calibration import calibrate_ratings
from .reward_backends import TOKEN_ENV, DbBackend, HttpBackend, Posted

RewardFn = Callable[[list[str], list[str]], Sequence[float]]
FALLBACK_MAPS = ("match", "tanh", "none")
MATCH_MIN = 4          # responses scored by both humans and the fallback before "match" trusts its fit
MATCH_HISTORY = 2048   # (fallback score, human reward) pairs kept for the fit


class HumanReward:
    """A PPO ``reward_fn`` whose rewards come from people rating in the feedback app (module docstring).

    ``source``: a database URL or SQLite path, a session factory (``db.connect(...)``), or the
    ``http(s)://`` address of a running app. ``project``: name or id. ``min_ratings``: ratings to
    wait for per response (at most the project's ``per_item``). ``priority``: base priority of the
    posted items. ``scale``: the rating scale, checked against the project (direct mode) or
    assumed (HTTP mode). ``shrinkage``: calibration prior strength. ``policy``: recorded as the
    responses' origin. ``progress``: show the waiting bar. ``last`` holds the numbers of the
    latest call (responses, rated, fallback, waited_s).
    """

    def __init__(self, source: Any, project: str | int, *, timeout_s: float = 600, poll_s: float = 2,
                 fallback: RewardFn | None = None, min_ratings: int = 1, calibrate: bool = True,
                 token: str | None = None, priority: float = 100.0, scale: Sequence[int] | None = None,
                 fallback_map: str | Callable[[float], float] = "match", shrinkage: float = 2.0,
                 policy: str = "ppo", progress: bool = True, http_timeout_s: float = 30):
        if not (isinstance(timeout_s, (int, float)) and timeout_s >= 0):
            raise ValueError(f"timeout_s must be a number >= 0, got {timeout_s!r}")
        if not (isinstance(poll_s, (int, float)) and poll_s > 0):
            raise ValueError(f"poll_s must be a number > 0, got {poll_s!r}")
        if isinstance(min_ratings, bool) or not isinstance(min_ratings, int) or min_ratings < 1:
            raise ValueError(f"min_ratings must be an integer >= 1, got {min_ratings!r}")
        if fallback is not None and not callable(fallback):
            raise TypeError("fallback must be a (prompts, responses) -> scores callable, got "
                            f"{type(fallback).__name__}")
        if not callable(fallback_map) and fallback_map not in FALLBACK_MAPS:
            raise ValueError(f"fallback_map must be one of {FALLBACK_MAPS} or a callable, got {fallback_map!r}")
        if scale is not None and (len(scale) != 2 or not scale[0] < scale[1]):
            raise ValueError(f"scale must be (min, max) with min < max, got {scale!r}")
        self.timeout_s, self.poll_s, self.min_ratings = float(timeout_s), float(poll_s), min_ratings
        self.fallback, self.fallback_map, self.calibrate = fallback, fallback_map, calibrate
        self.priority, self.shrinkage, self.progress = float(priority), float(shrinkage), progress
        self._calls = 0
        self._fit: deque[tuple[float, float]] = deque(maxlen=MATCH_HISTORY)
        self.last: dict[str, Any] = {}
        if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
            self.backend: DbBackend | HttpBackend = HttpBackend(source, project, token or os.environ.get(TOKEN_ENV),
                                                                   scale, policy, http_timeout_s)
        else:
            self.backend = DbBackend(source, project, scale, policy)

    # ------------------------------------------------------------------------------------ the call

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses; one prompt per response")
        if not responses:
            return []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if not isinstance(p, str) or not p.strip() or not isinstance(r, str):
                raise ValueError(f"batch position {i}: the prompt must be non-empty text and the response text "
                                 f"(got {type(p).__name__} {str(p)[:30]!r}, {type(r).__name__})")
        low, high, per_item = self.backend.info()
        if self.min_ratings > per_item:
            raise ValueError(f"min_ratings={self.min_ratings} can never be met: project {self.backend.project!r} "
                             f"routes each item to per_item={per_item} annotator(s); lower min_ratings or raise "
                             "the project's per_item")
        groups: dict[str, list[str]] = {}
        for p, r in zip(prompts, responses):
            texts = groups.setdefault(p, [])
            if r not in texts:
                texts.append(r)
        self._calls += 1
        posted = self.backend.post(groups, self.priority + self._calls)
        started = time.monotonic()
        try:
            counts = self._wait(posted)
        finally:
            self.backend.release(posted)
        waited = time.monotonic() - started
        rewards = self._human_rewards(posted, counts, low, high)
        missing = sorted(rid for rid in set(posted.ids.values()) if counts.get(rid, 0) == 0)
        if missing and self.fallback is None:
            raise TimeoutError(f"{len(missing)} of {len(set(posted.ids.values()))} responses got no rating within "
                               f"timeout_s={self.timeout_s:g} s (project {self.backend.project!r}); pass "
                               "fallback=RewardModel(...) to score those, or allow more time")
        if missing:
            rewards.update(self._fallback_rewards(posted, missing, rewards))
        self.last = {"responses": len(responses), "distinct": len(set(posted.ids.values())),
                     "rated": len(set(posted.ids.values())) - len(missing), "fallback": len(missing),
                     "waited_s": waited}
        return [rewards[posted.ids[(p, r)]] for p, r in zip(prompts, responses)]

    def _wait(self, posted: Posted) -> dict[int, int]:
        """Poll until every trackable response has ``min_ratings`` ratings or the time is up."""
        from tqdm.auto import tqdm

        tracked = sorted(set(posted.ids.values()) - posted.untracked)
        need = len(tracked) * self.min_ratings
        deadline = time.monotonic() + self.timeout_s
        with tqdm(total=need, desc=f"waiting for {need} ratings", disable=not self.progress or need == 0,
                  leave=False, dynamic_ncols=True) as bar:
            while True:
                counts = self.backend.counts(posted, self.min_ratings)
                have = sum(min(counts.get(rid, 0), self.min_ratings) for rid in tracked)
                bar.update(have - bar.n)
                remaining = deadline - time.monotonic()
                if have >= need or remaining <= 0:
                    return counts
                time.sleep(min(self.poll_s, remaining))

    def _human_rewards(self, posted: Posted, counts: dict[int, int], low: int, high: int) -> dict[int, float]:
        rated = {rid for rid in posted.ids.values() if counts.get(rid, 0) > 0}
        if not rated:
            return {}
        triples = self.backend.ratings(posted, everything=self.calibrate)
        for rid, who, score in triples:
            if not low <= score <= high:
                raise ValueError(f"response {rid} has the rating {score} by {who!r}, outside the scale {low}..{high}; "
                                 "pass HumanReward(..., scale=(min, max)) with the project's scale")
        if self.calibrate:
            scores = calibrate_ratings(triples, shrinkage=self.shrinkage).scores
        else:
            sums: dict[int, list[float]] = {}
            for rid, _who, score in triples:
                sums.setdefault(rid, []).append(score)
            scores = {rid: sum(v) / len(v) for rid, v in sums.items()}
        mid, half = (low + high) / 2, (high - low) / 2
        return {rid: (scores[rid] - mid) / half for rid in rated}

    def _fallback_rewards(self, posted: Posted, missing: list[int], human: dict[int, float]) -> dict[int, float]:
        """The fallback's scores of the batch's distinct responses, mapped onto the human reward scale."""
        by_id = {rid: key for key, rid in posted.ids.items()}
        ids = sorted(by_id)
        raw = [float(x) for x in self.fallback([by_id[i][0] for i in ids], [by_id[i][1] for i in ids])]
        if len(raw) != len(ids) or not all(math.isfinite(x) for x in raw):
            raise ValueError(f"the fallback returned {len(raw)} scores (finite: "
                             f"{sum(math.isfinite(x) for x in raw)}) for {len(ids)} responses")
        score = dict(zip(ids, raw))
        self._fit.extend((score[rid], human[rid]) for rid in ids if rid in human)
        mapping = self._mapping()
        return {rid: float(mapping(score[rid])) for rid in missing}

    def _mapping(self) -> Callable[[float], float]:
        if callable(self.fallback_map):
            return self.fallback_map
        if self.fallback_map == "none":
            return float
        if self.fallback_map == "match" and len(self._fit) >= MATCH_MIN:
            fb, hu = np.array(self._fit).T
            if fb.std() > 1e-8 and hu.std() > 1e-8:
                a, b = hu.std() / fb.std(), hu.mean() - hu.std() / fb.std() * fb.mean()
                return lambda x: a * x + b
        return math.tanh

    # ------------------------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the database engine this object opened (nothing to do for HTTP or a given factory)."""
        self.backend.close()

    def __enter__(self) -> HumanReward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["HumanReward", "FALLBACK_MAPS", "TOKEN_ENV"]
