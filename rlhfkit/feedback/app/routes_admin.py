"""Admin pages: projects, annotators (token shown once), import, generate, live progress, export."""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile  # what request.form() yields (FastAPI's is a subclass)

from .. import service
from ..errors import FeedbackError
from ..store import Annotator, Project
from . import queries
from .web import RowId, csrf_guard, db, page_admin, render, see_other

router = APIRouter(prefix="/admin", dependencies=[Depends(csrf_guard), Depends(page_admin)])

KINDS = [("rating", "rate each response"), ("pair", "compare pairs"), ("ranking", "rank all responses")]
EXPORT_FILES = ("pairs.jsonl", "ratings.jsonl", "rankings.jsonl")
UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


def _index(request: Request, s: Session, status: int = 200, **extra) -> Response:
    ctx = {"projects": queries.project_rows(s), "annotators": service.list_annotators(s), **extra}
    return render(request, "admin/index.html", ctx, status=status)


@router.get("", name="admin_index")
def index(request: Request, s: Session = Depends(db)) -> Response:
    return _index(request, s)


@router.post("/projects", name="admin_create_project")
def create_project(request: Request, name: str = Form(...), scale_min: int = Form(1), scale_max: int = Form(3),
                   per_item: int = Form(2), gold_rate: float = Form(0.1), instructions: str = Form(""),
                   timeout_minutes: int = Form(30), s: Session = Depends(db)) -> Response:
    try:
        project = service.create_project(s, name.strip(), scale=(scale_min, scale_max), per_item=per_item,
                                         gold_rate=gold_rate, instructions=instructions.strip(),
                                         timeout_minutes=timeout_minutes)
    except FeedbackError as err:
        return _index(request, s, status=err.status, error=err.message)
    return see_other(request, "admin_project", project=project.id)


@router.post("/annotators", name="admin_add_annotator")
def add_annotator(request: Request, name: str = Form(...), admin: str = Form(""), s: Session = Depends(db)) -> Response:
    """Answer with the page itself (not a redirect): the plaintext token exists only in this response."""
    try:
        person, token = service.add_annotator(s, name.strip(), admin=admin == "1")
    except FeedbackError as err:
        return _index(request, s, status=err.status, error=err.message)
    return _index(request, s, new_token={"name": person.name, "token": token, "admin": person.is_admin})


@router.post("/annotators/{annotator}/token", name="admin_annotator_token")
def new_token(request: Request, annotator: RowId, s: Session = Depends(db)) -> Response:
    """Replace a lost token: the old one stops working and its browser sessions end."""
    person = service.get_annotator(s, annotator)
    token = service.reset_token(s, person)
    return _index(request, s, new_token={"name": person.name, "token": token, "admin": person.is_admin})


@router.post("/annotators/{annotator}/active", name="admin_annotator_active")
def set_active(request: Request, annotator: RowId, active: str = Form(...), user: Annotator = Depends(page_admin),
               s: Session = Depends(db)) -> Response:
    """Deactivate (their open items go back to the pool, their work stays) or re-activate someone."""
    person = service.get_annotator(s, annotator)
    if person.id == user.id:
        raise FeedbackError("you cannot deactivate yourself; ask another admin", 409)
    service.set_annotator_active(s, person, active == "1")
    return see_other(request, "admin_index")


def _project_page(request: Request, s: Session, project: Project, status: int = 200, **extra) -> Response:
    from ..export import export_rows
    from ..jobs import project_jobs

    progress = _progress_context(s, project)
    try:  # export links only for the files an export would write, with their row counts
        rows = export_rows(progress.pop("data"))
        exportable = {f"{name}.jsonl": len(table) for name, table in rows.items() if table}
    except ValueError:
        exportable = {}
    ctx = {"project": project, "kinds": KINDS, "exportable": exportable, "jobs": project_jobs(s, project),
           **progress, **extra}
    return render(request, "admin/project.html", ctx, status=status)


@router.get("/projects/{project}", name="admin_project")
def project_page(request: Request, project: RowId, s: Session = Depends(db)) -> Response:
    return _project_page(request, s, service.get_project(s, project))


def _progress_context(s: Session, project: Project) -> dict:
    """Counts plus the quality report (agreement, reliability, bias): what the page polls every 5 s."""
    progress = service.progress(s, project)
    from ..quality import report_rows  # lazy: numpy/krippendorff only when an admin looks

    data = service.collect(s, project)
    return {"progress": progress, "quality": report_rows(data) if data.annotators else None, "data": data,
            "updated": datetime.now(timezone.utc).strftime("%H:%M:%S UTC")}


@router.get("/projects/{project}/progress", name="admin_progress")
def progress_fragment(request: Request, project: RowId, s: Session = Depends(db)) -> Response:
    proj = service.get_project(s, project)
    return render(request, "admin/_progress.html", {"project": proj, **_progress_context(s, proj)})


def _kinds(values: list[str]) -> tuple[str, ...]:
    valid = {k for k, _ in KINDS}
    bad = [v for v in values if v not in valid]
    if bad or not values:
        raise FeedbackError(f"pick at least one kind of item from {sorted(valid)} (got {values or 'none'})", 422)
    return tuple(dict.fromkeys(values))


@router.post("/projects/{project}/import", name="admin_import")
async def import_upload(request: Request, project: RowId, s: Session = Depends(db)) -> Response:
    form = await request.form()
    upload = form.get("file")
    return await run_in_threadpool(_import_sync, request, s, project, upload, form.getlist("kinds"))


def _import_sync(request: Request, s: Session, project: int, upload, kinds: list[str]) -> Response:
    proj = service.get_project(s, project)
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise FeedbackError("choose a file to import", 422)
        suffix = Path(upload.filename).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise FeedbackError(f"{upload.filename}: unsupported file type {suffix or '(none)'}; "
                                f"use one of {', '.join(UPLOAD_SUFFIXES)}", 422)
        kinds_t = _kinds(kinds)
        with tempfile.TemporaryDirectory(prefix="rlhfkit-import-") as tmp:
            # Keep the suffix: load_records picks the format from it.
            path = Path(tmp) / (_safe_name(Path(upload.filename).stem) + suffix)
            _copy_limited(upload.file, path)
            try:
                summary = service.import_file(s, proj, path, kinds=kinds_t)
            except FeedbackError as err:  # name the uploaded file, not our temporary copy
                raise FeedbackError(err.message.replace(str(path), upload.filename), err.status) from None
    except FeedbackError as err:
        return _project_page(request, s, proj, status=err.status, error=err.message)
    return _project_page(request, s, proj, notice=f"Imported {upload.filename}: {_summary_text(summary)}.")


def _copy_limited(src, path: Path) -> None:
    total = 0
    with open(path, "wb") as out:
        while chunk := src.read(1 << 20):
            total += len(chunk)
            if total > MAX_UPLOAD_BYTES:
                raise FeedbackError(f"the file is larger than {MAX_UPLOAD_BYTES >> 20} MiB; import it with "
                                    f"'rlhfkit feedback import' on the server instead", 413)
            out.write(chunk)


def _summary_text(summary: dict) -> str:
    made = ", ".join(f"{n} {kind}" for kind, n in summary.get("items_created", {}).items() if n) or "none"
    return (f"{summary.get('rows', 0)} rows, {summary.get('prompts_created', 0)} new prompts, "
            f"{summary.get('responses_created', 0)} new responses; new items: {made}"
            f" ({summary.get('items_existing', 0)} already there)")


@router.post("/projects/{project}/generate", name="admin_generate")
def generate(request: Request, project: RowId, policy: str = Form(...), prompts: str = Form(...), n: int = Form(2),
             max_new_tokens: int = Form(64), kinds: list[str] = Form([]), s: Session = Depends(db)) -> Response:
    """Check the form now (a wrong policy path is a 422 naming it), then sample in a background job: the page
    shows its progress (``admin_job``) instead of this request waiting for the model."""
    from ..jobs import start_generation

    proj = service.get_project(s, project)
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    try:
        if not lines:
            raise FeedbackError("write at least one prompt (one per line)", 422)
        job = start_generation(request.app.state.sessions, proj.id, policy.strip(), lines, n=n,
                               max_new_tokens=max_new_tokens, kinds=_kinds(kinds))
    except FeedbackError as err:
        return _project_page(request, s, proj, status=err.status, error=err.message)
    s.commit()  # end this request's read snapshot (SQLite WAL), which began before the job's row existed
    return _project_page(request, s, proj, status=202,
                         notice=f"Generation job {job.id} started: {job.total} responses for {len(lines)} prompts. "
                                "Its progress shows below; you can leave this page.")


@router.get("/projects/{project}/jobs", name="admin_jobs")
def jobs_fragment(request: Request, project: RowId, s: Session = Depends(db)) -> Response:
    """The latest generation jobs (polled while one runs)."""
    from ..jobs import project_jobs

    proj = service.get_project(s, project)
    return render(request, "admin/_jobs.html", {"project": proj, "jobs": project_jobs(s, proj)})


def _export_dir(s: Session, project: Project) -> tuple[Path, dict[str, Path]]:
    from ..export import export

    tmp = Path(tempfile.mkdtemp(prefix="rlhfkit-export-"))
    try:
        files = export(service.collect(s, project), tmp)
    except ValueError as err:  # nothing judged yet, or nothing with a clear winner
        _cleanup(tmp)
        raise FeedbackError(str(err), 409) from None
    return tmp, {Path(p).name: Path(p) for p in files.values()}


def _cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@router.get("/projects/{project}/export.zip", name="admin_export_zip")
def export_zip(request: Request, project: RowId, s: Session = Depends(db)) -> Response:
    proj = service.get_project(s, project)
    tmp, files = _export_dir(s, proj)
    try:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, path in sorted(files.items()):
                zf.write(path, arcname=name)
    finally:
        _cleanup(tmp)
    filename = f"{_safe_name(proj.name)}-export.zip"
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"content-disposition": f'attachment; filename="{filename}"'})


@router.get("/projects/{project}/export/{name}", name="admin_export_file")
def export_file(request: Request, project: RowId, name: str, s: Session = Depends(db)) -> Response:
    if name not in EXPORT_FILES:
        raise FeedbackError(f"no export file {name!r}; choose one of {', '.join(EXPORT_FILES)}", 404)
    proj = service.get_project(s, project)
    tmp, files = _export_dir(s, proj)
    if name not in files:
        _cleanup(tmp)
        raise FeedbackError(f"the export wrote no {name}", 404)
    return FileResponse(files[name], media_type="application/jsonl",
                        filename=f"{_safe_name(proj.name)}-{name}", background=BackgroundTask(_cleanup, tmp))


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "project"


# Review (item browser, disagreements) and team (settings, members, invites) pages live in their own
# modules; included here so they share this router's /admin prefix, admin check and CSRF guard.
from . import routes_review, routes_team  # noqa: E402

router.include_router(routes_review.router)
router.include_router(routes_team.router)
