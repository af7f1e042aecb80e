"""Where a :class:`~rlhfkit.feedback.human_reward.HumanReward` posts its batches and reads ratings back.

``DbBackend`` talks to the store through the service functions (the annotators use the web app on
the same database); ``HttpBackend`` talks to a running app through its JSON API with an admin's
bearer token, using only urllib. Both offer ``info``, ``post``, ``counts``, ``ratings``,
``release`` and ``close``.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger("rlhfkit.feedback")
TOKEN_ENV = "RLHFKIT_FEEDBACK_TOKEN"  # where HttpBackend's admin token may come from


@dataclass
class Posted:
    """One call's batch in the store: response ids per (prompt, text), and the items to watch."""
    ids: dict[tuple[str, str], int]
    items: dict[int, list[int]] = field(default_factory=dict)   # item id -> its response ids
    untracked: set[int] = field(default_factory=set)            # responses whose item we cannot poll (HTTP)


# ---------------------------------------------------------------------------------------- direct mode

class DbBackend:
    """Reads and writes the store with the service functions, plus two small rating queries."""

    def __init__(self, source: Any, project: str | int, scale: Sequence[int] | None, policy: str):
        from .db import connect

        self._owned = not callable(source)
        self.factory = connect(source) if self._owned else source
        self.project, self.scale, self.policy = project, scale, policy
        self._info: tuple[int, int, int] | None = None
        self._project_id: int | None = None

    def info(self) -> tuple[int, int, int]:
        if self._info is None:
            from . import service

            with self.factory() as s:
                p = service.get_project(s, self.project)
                if self.scale is not None and tuple(self.scale) != (p.scale_min, p.scale_max):
                    raise ValueError(f"scale={tuple(self.scale)} but project {p.name!r} rates on "
                                     f"{p.scale_min}..{p.scale_max}")
                self._project_id, self._info = p.id, (p.scale_min, p.scale_max, p.per_item)
        return self._info

    def post(self, groups: dict[str, list[str]], priority: float) -> Posted:
        from sqlalchemy import select

        from . import service
        from .store import Item

        rows = [{"prompt": p, "responses": texts, "policy": self.policy} for p, texts in groups.items()]
        with self.factory() as s, service.atomic(s):  # the items and their priority: one transaction
            summary = service.import_records(s, self._project_id, rows, kinds=("rating",), source="human reward")
            flat = iter(summary["response_ids"])  # row order, each row's texts in order
            ids = {(p, t): next(flat) for p, texts in groups.items() for t in texts}
            keys = {",".join(map(str, sorted(ids[(p, t)] for t in texts))) for p, texts in groups.items()}
            items = dict(s.execute(select(Item.id, Item.response_ids).where(
                Item.project_id == self._project_id, Item.kind == "rating", Item.key.in_(keys))).all())
            service.set_priorities(s, self._project_id, {item_id: priority for item_id in items})
        return Posted(ids=ids, items={k: list(v) for k, v in items.items()})

    def _query(self, ids: Iterable[int] | None):
        from sqlalchemy import select

        from .store import Annotator, Assignment, Item, Rating

        query = select(Rating.response_id, Annotator.name, Rating.score) \
            .join(Assignment, Rating.assignment_id == Assignment.id).join(Item, Assignment.item_id == Item.id) \
            .join(Annotator, Assignment.annotator_id == Annotator.id) \
            .where(Item.project_id == self._project_id, Assignment.status == "done")
        return query if ids is None else query.where(Rating.response_id.in_(list(ids)))

    def counts(self, posted: Posted, min_ratings: int) -> dict[int, int]:
        """Ratings per response of the batch, from any rating item of the project that holds it."""
        out: dict[int, int] = {}
        with self.factory() as s:
            for rid, _who, _score in s.execute(self._query(set(posted.ids.values()))):
                out[rid] = out.get(rid, 0) + 1
        return out

    def ratings(self, posted: Posted, *, everything: bool) -> list[tuple[int, str, float]]:
        """``(response id, annotator, score)``: the whole project's (to calibrate on) or the batch's."""
        with self.factory() as s:
            rows = s.execute(self._query(None if everything else set(posted.ids.values()))).all()
        return [(rid, who, float(score)) for rid, who, score in rows]

    def release(self, posted: Posted) -> None:
        """The batch's items back to priority 0: PPO has moved on, they are ordinary work now."""
        from . import service

        if posted.items:
            with self.factory() as s:
                service.set_priorities(s, self._project_id, {item_id: 0.0 for item_id in posted.items})

    def close(self) -> None:
        if self._owned:
            from .db import engine_of

            engine_of(self.factory).dispose()


# ---------------------------------------------------------------------------------------- HTTP mode

class HttpBackend:
    """The app's JSON API through urllib: an admin token posts items and reads their judgements."""

    def __init__(self, url: str, project: str | int, token: str | None, scale: Sequence[int] | None, policy: str,
                 timeout_s: float):
        if not token:
            raise ValueError(f"HTTP mode needs an admin's token: HumanReward({url!r}, ..., token=...) or "
                             f"${TOKEN_ENV}")
        self.url, self.project, self.token = url.rstrip("/"), project, token
        self.scale = tuple(scale) if scale is not None else (1, 3)
        self.policy, self.timeout_s = policy, timeout_s
        self._info: tuple[int, int, int] | None = None
        self._known: dict[tuple[str, tuple[int, ...]], int] = {}       # (prompt, response ids) -> item id
        self._seen: dict[int, dict[int, tuple[str, float]]] = {}   # response -> assignment -> (annotator, score)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request; ``FeedbackError`` with the server's ``detail`` for a 4xx/5xx answer,
        ``ConnectionError`` when the app cannot be reached."""
        from .errors import FeedbackError

        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            try:
                detail = json.loads(err.read()).get("detail", err.reason)
            except (ValueError, AttributeError):
                detail = err.reason
            raise FeedbackError(f"{method} {self.url}{path}: {detail}", err.code) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ConnectionError(f"cannot reach the feedback app at {self.url}: {reason}") from None

    def _project_path(self) -> str:
        return "/api/projects/" + urllib.parse.quote(str(self.project), safe="")

    def info(self) -> tuple[int, int, int]:
        if self._info is None:
            me = self.request("GET", "/api/me")
            if not me.get("is_admin"):
                raise PermissionError(f"the token belongs to {me.get('name')!r}, who is not an admin; posting items "
                                      "needs an admin's token")
            progress = self.request("GET", self._project_path() + "/progress")
            scale = tuple(progress.get("scale") or self.scale)  # newer apps may report it
            self._info = (int(scale[0]), int(scale[1]), int(progress["per_item"]))
        return self._info

    def post(self, groups: dict[str, list[str]], priority: float) -> Posted:
        posted = Posted(ids={})
        for prompt, texts in groups.items():
            answer = self._add(prompt, texts, priority)
            rids = answer["response_ids"]
            posted.ids.update(zip(((prompt, t) for t in texts), rids))
            item = self._item_of(prompt, rids, answer)
            if item is None:  # an item of these responses existed before this object: try them one by one
                for text, rid in zip(texts, rids):
                    single = self._item_of(prompt, [rid], self._add(prompt, [text], priority))
                    if single is None:
                        posted.untracked.add(rid)
                    else:
                        posted.items[single] = [rid]
            else:
                posted.items[item] = sorted(rids)
        if posted.untracked:
            LOG.warning("human reward: %d response(s) already had items this process did not create; the API does "
                        "not name them, so they are not waited for", len(posted.untracked))
        return posted

    def _add(self, prompt: str, texts: list[str], priority: float) -> dict:
        return self.request("POST", self._project_path() + "/items", {
            "prompt": prompt, "responses": texts, "policy": self.policy, "kinds": ["rating"], "priority": priority})

    def _item_of(self, prompt: str, rids: list[int], answer: dict) -> int | None:
        key = (prompt, tuple(sorted(rids)))
        if answer.get("item_ids"):
            self._known[key] = int(answer["item_ids"][0])
        return self._known.get(key)

    def counts(self, posted: Posted, min_ratings: int) -> dict[int, int]:
        """Fetch the judgements of every watched item still short of ratings; a failed poll (no
        connection, 5xx) is logged and retried next time: the app may be restarting."""
        from .errors import FeedbackError

        for item_id, rids in posted.items.items():
            if all(self._count(rid, posted) >= min_ratings for rid in rids):
                continue
            try:
                answer = self.request("GET", f"/api/items/{item_id}/judgements")
            except (ConnectionError, FeedbackError) as err:
                if isinstance(err, FeedbackError) and err.status < 500:
                    raise
                LOG.warning("human reward: %s; polling again", err)
                break
            for j in answer["judgements"]:
                if j["status"] == "done" and j.get("judgement"):
                    for rid, score in j["judgement"]["scores"].items():
                        self._seen.setdefault(int(rid), {})[j["assignment_id"]] = (j["annotator"], float(score))
        return {rid: self._count(rid, posted) for rid in set(posted.ids.values())}

    def _count(self, rid: int, posted: Posted) -> int:
        return len(self._seen.get(rid, ()))

    def ratings(self, posted: Posted, *, everything: bool) -> list[tuple[int, str, float]]:
        """Every rating seen by this object (to calibrate on) or those of this batch."""
        wanted = self._seen if everything else {rid: self._seen.get(rid, {}) for rid in set(posted.ids.values())}
        return [(rid, who, score) for rid, by in wanted.items() for who, score in by.values()]

    def release(self, posted: Posted) -> None:
        """Nothing: the API cannot lower priorities. Newer batches still come first (``priority + k``)."""

    def close(self) -> None:
        pass

