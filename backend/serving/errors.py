"""Errors every front door turns into HTTP answers: each carries the status that says whose fault it is."""
from __future__ import annotations


class BackendError(Exception):
    """Base class: `status` is the HTTP status, `str(e)` the one-sentence message for the client."""

    status = 500

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(BackendError):
    """The request itself is wrong (missing fields, unknown label, frame past the end): 400."""

    status = 400


class MediaError(BackendError):
    """A task's media could not be fetched or decoded; status set by cause (400 bad/corrupt, 403 host not allowed, 502 upstream)."""

    status = 502
