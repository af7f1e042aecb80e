"""Sessions, CSRF and bearer tokens for the feedback web app.

Why our own signed cookie: ``itsdangerous`` (which Starlette's SessionMiddleware needs) is not a
dependency, and the whole mechanism is a few lines of ``hmac``. The cookie holds a small JSON
payload ``{"aid": annotator id or null, "th": token-hash prefix, "csrf": token, "iat": issued}``,
base64url-encoded and followed by an HMAC-SHA256 tag. The server keeps no session table; what
makes a stolen-but-old cookie useless:

- ``iat`` + :data:`SESSION_MAX_AGE`: sessions expire after a week;
- ``th``: the first 16 hex digits of the annotator's token hash, so rotating a token (or
  deactivating the annotator) signs every browser of that person out.

CSRF: every session, signed in or not, carries a random token. Every POST from a browser must
send it back as the ``csrf_token`` form field or the ``X-CSRF-Token`` header (htmx sends the
header, set once on ``<body hx-headers>``). SameSite=Lax already stops most cross-site POSTs;
the token covers older browsers and same-site attackers. JSON API calls that authenticate with
``Authorization: Bearer <token>`` are exempt: a browser never attaches that header by itself,
so a forged cross-site request cannot carry it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import Request

SESSION_COOKIE = "rlhfkit_session"
SESSION_MAX_AGE = 7 * 24 * 3600  # seconds
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SECRET_ENV = "RLHFKIT_FEEDBACK_SECRET"


def resolve_secret(secret: Optional[str]) -> bytes:
    """The signing key: the argument, else ``$RLHFKIT_FEEDBACK_SECRET``, else random per process.

    A random key is fine for one server process but signs everybody out on restart and does not
    work behind several workers; the ``serve`` command says so when no secret is configured.
    """
    chosen = secret if secret is not None else os.environ.get(SECRET_ENV)
    if chosen is not None and len(chosen) < 16:
        raise ValueError(f"the session secret must be at least 16 characters (got {len(chosen)}); "
                         f"generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    raw = chosen.encode() if chosen is not None else secrets.token_bytes(32)
    # Derive a purpose-bound key so the same secret can safely sign other things later.
    return hmac.new(raw, b"rlhfkit.feedback.session.v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 signing of small JSON payloads: ``<base64url json>.<base64url tag>``."""

    def __init__(self, key: bytes):
        self._key = key

    def _tag(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def sign(self, payload: dict[str, Any]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._tag(body)}"

    def unsign(self, value: str) -> Optional[dict[str, Any]]:
        """The payload, or None when the value is malformed or the tag does not match."""
        body, dot, tag = value.partition(".")
        if not dot or not body or not tag:
            return None
        try:
            if not hmac.compare_digest(tag.encode("ascii"), self._tag(body).encode("ascii")):
                return None
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeError):
            return None
        return payload if isinstance(payload, dict) else None


@dataclass
class BrowserSession:
    """The decoded cookie; ``dirty`` means the middleware must send a new Set-Cookie."""
    csrf: str
    annotator_id: Optional[int] = None
    token_prefix: Optional[str] = None
    issued: int = field(default_factory=lambda: int(time.time()))
    dirty: bool = False

    @classmethod
    def fresh(cls) -> "BrowserSession":
        return cls(csrf=secrets.token_urlsafe(32), dirty=True)

    def to_payload(self) -> dict[str, Any]:
        return {"aid": self.annotator_id, "th": self.token_prefix, "csrf": self.csrf, "iat": self.issued}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], now: float) -> Optional["BrowserSession"]:
        csrf, aid, th, iat = payload.get("csrf"), payload.get("aid"), payload.get("th"), payload.get("iat")
        if not isinstance(csrf, str) or not isinstance(iat, int) or not (aid is None or isinstance(aid, int)):
            return None
        if iat + SESSION_MAX_AGE < now or iat > now + 60:
            return None
        return cls(csrf=csrf, annotator_id=aid, token_prefix=th if isinstance(th, str) else None, issued=iat)


def token_prefix(token_hash: str) -> str:
    """The part of an annotator's token hash stored in the cookie (see the module docstring)."""
    return token_hash[:16]


def load_session(signer: Signer, cookie: Optional[str]) -> BrowserSession:
    """The session a cookie carries, or a fresh anonymous one if it is missing, forged or expired."""
    if cookie:
        payload = signer.unsign(cookie)
        if payload is not None:
            sess = BrowserSession.from_payload(payload, time.time())
            if sess is not None:
                return sess
    return BrowserSession.fresh()


def sign_in(request: Request, annotator_id: int, token_hash: str) -> None:
    """Bind the browser to an annotator with a new CSRF token (so a token planted before sign-in is useless)."""
    sess = BrowserSession.fresh()
    sess.annotator_id, sess.token_prefix = annotator_id, token_prefix(token_hash)
    request.state.session = sess


def sign_out(request: Request) -> None:
    request.state.session = BrowserSession.fresh()


def session_of(request: Request) -> BrowserSession:
    return request.state.session


def csrf_ok(request: Request, sent: Optional[str]) -> bool:
    """True when ``sent`` (form field or header) equals this session's CSRF token."""
    expected = session_of(request).csrf
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


def bearer_token(request: Request) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
