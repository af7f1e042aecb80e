"""The one exception the feedback store raises for bad requests.

Every refusal carries the HTTP status the web app should answer with, so the app maps
``FeedbackError`` to a response in one place and the CLI turns it into ``error: ...``
without guessing which mistakes are the caller's:

- 400: the request does not fit the item (a rating sent for a pair item),
- 401: no or unknown token,
- 403: not yours (another annotator's assignment) or admin only,
- 404: no such project / item / assignment,
- 409: it already exists or was already submitted,
- 422: a value is out of range or malformed (a score of 7 on a 1-3 scale).
"""

from __future__ import annotations


class FeedbackError(Exception):
    """A refused request: ``status`` is the HTTP code, ``message`` says what to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"FeedbackError({self.message!r}, status={self.status})"


def not_found(what: str) -> FeedbackError:
    return FeedbackError(f"{what} not found", 404)


def forbidden(message: str) -> FeedbackError:
    return FeedbackError(message, 403)


def conflict(message: str) -> FeedbackError:
    return FeedbackError(message, 409)


def invalid(message: str) -> FeedbackError:
    return FeedbackError(message, 422)
