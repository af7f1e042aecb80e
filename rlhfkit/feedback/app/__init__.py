"""The feedback web app: annotators rate, compare and rank in a browser; admins run projects.

    app = create_app("sqlite:///feedback.db", secret="...")   # or: rlhfkit feedback serve --db ...
    uvicorn.run(app)

Server-rendered Jinja2 pages with htmx (vendored, no CDN) as progressive enhancement: every
page works with plain form posts, htmx only swaps the next item in without a reload. Routes:

- ``routes_pages``: sign in/out, projects, the judging queue, "my judgements" (edit own work)
- ``routes_admin``: projects, annotators, import/generate, live progress + agreement, export
- ``routes_api``: the JSON API for scripts (bearer tokens)

Auth and CSRF are described in ``auth.py``; request plumbing (session middleware, error pages)
in ``web.py``.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ..db import connect, engine_of
from . import auth
from .web import SessionMiddleware, install_error_handlers, install_templates

HERE = Path(__file__).parent
HTMX_VERSION = "2.0.11"


def create_app(db_url: str, *, secret: Optional[str] = None, migrate: bool = True) -> FastAPI:
    """A FastAPI app on the feedback database at ``db_url`` (a URL or a SQLite path).

    ``secret`` signs the session cookies (else ``$RLHFKIT_FEEDBACK_SECRET``, else a random key
    per process: fine for one server, but everyone is signed out on restart). ``migrate``
    upgrades the schema to the newest revision first.
    """
    from . import routes_admin, routes_api, routes_pages

    signer = auth.Signer(auth.resolve_secret(secret))
    sessions = connect(db_url, upgrade=migrate)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine_of(sessions).dispose()

    # Swagger UI would load its assets from a CDN; the schema alone stays available for scripts.
    app = FastAPI(title="rlhfkit feedback", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.state.sessions = sessions
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    install_templates(app.state.templates)
    if secret is None and not os.environ.get(auth.SECRET_ENV):
        logging.getLogger("rlhfkit.feedback").warning(
            "no session secret (--secret or $%s): using a random one, so everyone is signed out when the "
            "server restarts and several workers would not share sessions", auth.SECRET_ENV)
    app.add_middleware(SessionMiddleware, signer=signer)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(routes_pages.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_api.router)
    return app


__all__ = ["create_app", "HTMX_VERSION"]
