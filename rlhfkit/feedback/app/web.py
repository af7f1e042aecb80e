"""Request plumbing shared by the page, admin and API routes.

- :class:`SessionMiddleware` decodes the signed cookie into ``request.state.session`` before a
  route runs and writes it back (plus security headers) when the route changed it.
- Dependencies: :func:`db` (one SQLAlchemy session per request), :func:`page_user` /
  :func:`page_admin` (cookie sign-in for HTML pages), :func:`csrf_guard` (every browser POST),
  :func:`api_user` / :func:`api_admin` (bearer token or cookie + CSRF header for ``/api``).
- :func:`render` adds what every template needs (user, CSRF token).
- :func:`install_error_handlers`: one place that turns ``FeedbackError``, HTTP errors and
  validation errors into an error page, an htmx fragment or ``{"detail": ...}`` JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Annotated, Any, Iterator, Optional
from urllib.parse import quote

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import pass_context
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import cookie_parser

from .. import service
from ..base import MAX_ID
from ..errors import FeedbackError
from ..store import Annotator
from . import auth

# A strict policy is possible because the pages use no inline script or style: htmx reads its
# config from a <meta> tag and app.js is a file.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "object-src 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


# The one check of every id and project in a URL: a row id is 1..2^63-1 (64-bit on both backends), a
# project is named by id or by a name of printable characters. Anything else is a 422 naming the parameter,
# before it can reach the database driver (an id past 64 bits overflows it; PostgreSQL refuses NUL).
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description=f"a row id, 1..{MAX_ID}")]
ProjectRef = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                                 description="a project id or name (printable characters)")]


class SessionMiddleware:
    """Pure ASGI middleware: cookie in, ``request.state.session``, cookie out when changed."""

    def __init__(self, app, signer: auth.Signer):
        self.app = app
        self.signer = signer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Starlette's lenient parser: one odd cookie from another app on the host must not hide ours.
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie"), "")
        state = scope.setdefault("state", {})
        state["session"] = auth.load_session(self.signer, cookie_parser(header).get(auth.SESSION_COOKIE))
        static = scope.get("path", "").startswith(scope.get("root_path", "") + "/static/")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                session: auth.BrowserSession = state["session"]
                if session.dirty and not static:
                    headers.append("set-cookie", _cookie_header(scope, self.signer.sign(session.to_payload())))
                for key, value in SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
                if not static and "cache-control" not in headers:
                    headers["cache-control"] = "no-store"  # pages show personal data and one-time tokens
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookie_header(scope, value: str) -> str:
    cookie = SimpleCookie()
    cookie[auth.SESSION_COOKIE] = value
    morsel = cookie[auth.SESSION_COOKIE]
    morsel["path"] = scope.get("root_path") or "/"
    morsel["max-age"] = auth.SESSION_MAX_AGE
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if scope.get("scheme") == "https":
        morsel["secure"] = True
    return morsel.OutputString()


# ---------------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------------

def db(request: Request) -> Iterator[Session]:
    """One session per request; ``service`` commits its own writes, so nothing is committed here."""
    with request.app.state.sessions() as session:
        yield session


@dataclass(frozen=True)
class ShownUser:
    """What pages show of the signed-in person, as plain values: an error page rendered after a write was
    rolled back (which expires every ORM object of the request's session, closed by then) must not need
    the database to print the header."""
    id: int
    name: str
    is_admin: bool


def shown(user: Optional[Annotator]) -> Optional[ShownUser]:
    return None if user is None else ShownUser(user.id, user.name, user.is_admin)


class SignInRequired(Exception):
    """Raised by page dependencies; the handler redirects to the sign-in form (or answers 401)."""


def _session_user(request: Request, s: Session) -> Optional[Annotator]:
    """The annotator the cookie names, if they are still active and their token was not rotated."""
    sess = auth.session_of(request)
    if sess.annotator_id is None:
        return None
    user = s.get(Annotator, sess.annotator_id)
    if user is None or not user.active or sess.token_prefix != auth.token_prefix(user.token_hash):
        auth.sign_out(request)  # drop the stale cookie
        return None
    return user


def optional_user(request: Request, s: Session = Depends(db)) -> Optional[Annotator]:
    user = _session_user(request, s)
    request.state.user = shown(user)
    return user


def page_user(user: Optional[Annotator] = Depends(optional_user)) -> Annotator:
    if user is None:
        raise SignInRequired()
    return user


def page_admin(user: Annotator = Depends(page_user)) -> Annotator:
    if not user.is_admin:
        raise FeedbackError("this page is for project admins only", 403)
    return user


async def csrf_guard(request: Request) -> None:
    """Reject a browser POST whose CSRF token (form field or header) is missing or wrong (403)."""
    if request.method != "POST":
        return
    sent = request.headers.get(auth.CSRF_HEADER)
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # Starlette caches it; the route reads the same form
            value = form.get(auth.CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not auth.csrf_ok(request, sent):
        raise FeedbackError("the form's security token is missing or out of date; reload the page and "
                            "submit again", 403)


def api_user(request: Request, s: Session = Depends(db)) -> Annotator:
    """Bearer token (scripts; no CSRF needed) or the browser cookie (CSRF header needed for POST)."""
    token = auth.bearer_token(request)
    if token is not None:
        user = service.authenticate(s, token)
        if user is None:
            raise FeedbackError("unknown or inactive token in the Authorization header", 401)
        request.state.user = shown(user)
        return user
    user = _session_user(request, s)
    if user is None:
        raise FeedbackError("sign in first: send 'Authorization: Bearer <your token>'", 401)
    if request.method == "POST" and not auth.csrf_ok(request, request.headers.get(auth.CSRF_HEADER)):
        raise FeedbackError(f"cookie-authenticated API calls must send the {auth.CSRF_HEADER} header", 403)
    request.state.user = shown(user)
    return user


def api_admin(user: Annotator = Depends(api_user)) -> Annotator:
    if not user.is_admin:
        raise FeedbackError("admin token required", 403)
    return user


# ---------------------------------------------------------------------------------------------
# Rendering and errors
# ---------------------------------------------------------------------------------------------

def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(request: Request, name: str, context: Optional[dict[str, Any]] = None, status: int = 200) -> HTMLResponse:
    ctx = {"user": getattr(request.state, "user", None), "csrf": auth.session_of(request).csrf}
    ctx.update(context or {})
    return request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status)


def path_for(request: Request, name: str, /, **params: Any) -> str:
    """A route's path (with the app's root path), not an absolute URL: links and redirects then
    stay right behind a reverse proxy that does not forward the scheme and host."""
    return request.scope.get("root_path", "") + str(request.app.url_path_for(name, **params))


@pass_context
def _template_url_for(context: dict, name: str, /, **params: Any) -> str:
    return path_for(context["request"], name, **params)


def install_templates(templates) -> None:
    from .markdown import chat_turns, render_markdown

    templates.env.globals["url_for"] = _template_url_for
    templates.env.filters["md"] = render_markdown
    templates.env.filters["chat_turns"] = chat_turns


def see_other(request: Request, route: str, /, **params: Any) -> Response:
    """Post/redirect/get: 303 so a reload never re-submits the form."""
    return RedirectResponse(path_for(request, route, **params), status_code=303)


def _is_api(request: Request) -> bool:
    root = request.scope.get("root_path", "")
    path = request.url.path
    return (path[len(root):] if root and path.startswith(root) else path).startswith("/api/")


def error_response(request: Request, status: int, message: str) -> Response:
    if _is_api(request):
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    ctx = {"status": status, "title": HTTPStatus(status).phrase, "message": message}
    return render(request, "_error.html" if is_htmx(request) else "error.html", ctx, status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FeedbackError)
    async def _feedback_error(request: Request, exc: FeedbackError):
        return error_response(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and message == "Not Found":
            message = f"nothing at {request.url.path}"
        response = error_response(request, exc.status_code, message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        message = "; ".join(parts) or "invalid request"
        if _is_api(request):
            return JSONResponse({"detail": message, "errors": _plain_errors(exc)}, status_code=422)
        return error_response(request, 422, message)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired):
        target = path_for(request, "signin") + "?next=" + quote(_local_path(request), safe="/")
        if is_htmx(request):  # a swapped fragment cannot redirect the page; ask htmx to
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method == "GET":
            return RedirectResponse(target, status_code=303)
        return error_response(request, 401, "your session ended; sign in again")


def _plain_errors(exc: RequestValidationError) -> list[dict]:
    return [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg"))} for e in exc.errors()]


def _local_path(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def safe_next(target: Optional[str], default: str) -> str:
    """Only same-site paths are allowed as a post-sign-in target (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default
