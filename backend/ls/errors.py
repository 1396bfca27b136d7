"""Label Studio errors; the generic ones (with whose-fault statuses) live in `backend.serving.errors`."""
from __future__ import annotations

from backend.serving.errors import BackendError, BadRequest, MediaError

__all__ = ["BackendError", "BadRequest", "LabelConfigError", "MediaError"]


class LabelConfigError(BadRequest):
    """The project's label config has no tag pair this backend supports: 400 (the caller must fix the config)."""

    status = 400
