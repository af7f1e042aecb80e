"""Generation from a policy as a background job, so a web request never waits minutes for a model.

    job = start_generation(Session, project, "runs/sft", ["Write a haiku."], n=2, kinds=("pair",))
    get_job(s, job.id).status      # queued -> running (done/total samples) -> done | failed (message says why)

``start_generation`` runs every check that needs no model first (``ingest.check_generation``: the
policy path by the trainers' rule, the prompts, ``n``), so a typo is a 422 at once; then it stores a
``GenerationJob`` row and samples in a daemon thread of this process, updating ``done`` after each
batch. The row is the shared state, so any worker's page can show progress. A server restart ends
the thread: ``mark_interrupted`` (called when a job list is read) turns jobs of an earlier process
that never finished into ``failed`` with "interrupted", so nothing shows "running" forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .base import atomic, resolve_project
from .errors import FeedbackError, not_found
from .ingest import check_generation, generate_responses
from .store import GenerationJob, Project, utcnow

LOG = logging.getLogger("rlhfkit.feedback")
STARTED = utcnow()              # when this process began: unfinished jobs from before it were interrupted
_LIVE: set[int] = set()         # job ids running in this process
_LIVE_LOCK = threading.Lock()


def start_generation(Session: sessionmaker, project: Project | str | int, policy_path: str, prompts: Sequence[Any], *,
                     n: int = 2, max_new_tokens: int = 64, kinds: Sequence[str] = ("pair",),
                     wait: bool = False, **kwargs) -> GenerationJob:
    """Check the request, store a queued job and start sampling in a background thread (``wait``: join it,
    for tests and scripts). ``kwargs`` go to ``ingest.generate_responses``. 422 before anything starts when
    the policy path, a prompt or ``n`` is wrong."""
    source = check_generation(policy_path, prompts, n, max_new_tokens, kwargs.get("temperature", 1.0))
    with Session() as s:
        with atomic(s):
            proj = resolve_project(s, project)
            job = GenerationJob(project_id=proj.id, policy=str(policy_path)[:500], status="queued", done=0,
                                total=len(prompts) * int(n), message="")
            s.add(job)
            s.flush()
        job_id, project_id = job.id, proj.id
    with _LIVE_LOCK:
        _LIVE.add(job_id)
    thread = threading.Thread(target=_run, name=f"rlhfkit-generate-{job_id}", daemon=True,
                              args=(Session, job_id, project_id, source, list(prompts), n, max_new_tokens,
                                    tuple(kinds), str(policy_path), kwargs))
    thread.start()
    if wait:
        thread.join()
    with Session() as s:
        return s.get(GenerationJob, job_id)


def _update(Session: sessionmaker, job_id: int, **fields: Any) -> None:
    with Session() as s, atomic(s):
        job = s.get(GenerationJob, job_id)
        for key, value in fields.items():
            setattr(job, key, value)


def _run(Session: sessionmaker, job_id: int, project_id: int, source: str, prompts: list, n: int,
         max_new_tokens: int, kinds: tuple, policy_name: str, kwargs: dict) -> None:
    try:
        _update(Session, job_id, status="running")
        with Session() as s:
            responses = generate_responses(
                s, project_id, source, prompts, n=n, max_new_tokens=max_new_tokens, kinds=kinds, policy=policy_name,
                progress=lambda done, total: _update(Session, job_id, done=done, total=total), **kwargs)
        _update(Session, job_id, status="done", finished_at=utcnow(),
                message=f"Generated {len(responses)} responses for {len(prompts)} prompts "
                        f"(items of kind {', '.join(kinds)}).")
    except FeedbackError as err:
        _update(Session, job_id, status="failed", finished_at=utcnow(), message=err.message)
    except Exception as err:  # noqa: BLE001 - a job must end in a state an admin can read
        LOG.exception("generation job %s failed", job_id)
        first = (str(err).strip().splitlines() or [""])[0]
        _update(Session, job_id, status="failed", finished_at=utcnow(), message=f"{type(err).__name__}: {first}")
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(job_id)


def mark_interrupted(s: Session, project: Project, now: datetime | None = None) -> int:
    """Jobs of ``project`` left queued or running by an earlier server process become failed; returns how many."""
    stale = [job for job in s.scalars(select(GenerationJob).where(GenerationJob.project_id == project.id,
                                                                  GenerationJob.status.in_(("queued", "running"))))
             if job.id not in _LIVE and job.created_at < STARTED]
    if stale:
        with atomic(s):
            for job in stale:
                job.status, job.finished_at = "failed", now or utcnow()
                job.message = "interrupted: the server restarted while it ran; start it again"
    return len(stale)


def project_jobs(s: Session, project: Project, limit: int = 5) -> list[GenerationJob]:
    """The project's latest jobs, newest first (after ``mark_interrupted``)."""
    mark_interrupted(s, project)
    return list(s.scalars(select(GenerationJob).where(GenerationJob.project_id == project.id)
                          .order_by(GenerationJob.id.desc()).limit(limit)))


def get_job(s: Session, job_id: int, project: Project | None = None) -> GenerationJob:
    job = s.get(GenerationJob, job_id)
    if job is None or (project is not None and job.project_id != project.id):
        raise not_found(f"generation job {job_id}")
    return job


def is_live(job_id: int) -> bool:
    with _LIVE_LOCK:
        return job_id in _LIVE
