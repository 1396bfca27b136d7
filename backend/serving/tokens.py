"""The Label Studio origin's credential: the Authorization header for LS requests (media, API), refreshed as needed.

LABEL_STUDIO_API_KEY is either a legacy token (40 hex chars, sent as `Authorization: Token <key>`) or a Personal
Access Token. A PAT is a JWT *refresh* token: it is exchanged at `POST /api/token/refresh/ {"refresh": pat}` for a
short-lived access token sent as `Authorization: Bearer <access>`; the provider refreshes 30 s before `exp`, and
callers call `invalidate()` after a 401 and retry once.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time

import requests

from backend.serving.errors import BackendError

logger = logging.getLogger(__name__)

_REFRESH_MARGIN_S = 30.0  # refresh an access token this many seconds before its `exp`


def _jwt_payload(token: str) -> dict | None:
    """Return the (unverified) payload of a JWT, or None if `token` is not three base64url segments with JSON parts."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        header, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(header, dict) and isinstance(payload, dict) else None


def is_jwt(token: str) -> bool:
    """True if `token` looks like a JWT (a PAT or an access token); legacy LS tokens are plain hex and return False."""
    return _jwt_payload(token) is not None


class TokenProvider:
    """Thread-safe source of the LS Authorization header for one (ls_url, api_key) pair.

    `api_key=None` gives no header. A JWT whose `token_type` claim is "access" is used as is (it cannot be refreshed);
    any other JWT is treated as a PAT and exchanged for an access token, cached until 30 s before it expires.
    """

    def __init__(self, ls_url: str | None, api_key: str | None, *, timeout_s: float = 10.0):
        self.ls_url = ls_url.rstrip("/") if ls_url else None
        self._key = (api_key or "").strip() or None
        payload = _jwt_payload(self._key) if self._key else None
        self._is_pat = payload is not None and payload.get("token_type") != "access"
        self._static = None if self._key is None or self._is_pat else ("Bearer " if payload else "Token ") + self._key
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_exp: float = 0.0  # unix seconds; 0 = unknown

    @property
    def refreshable(self) -> bool:
        """True if a 401 can be cured by `invalidate()` + retry (the key is a PAT)."""
        return self._is_pat

    def headers(self) -> dict[str, str]:
        """Return `{"Authorization": ...}` for LS requests (empty without a key); may call LS to refresh a PAT."""
        if not self._is_pat:
            return {"Authorization": self._static} if self._static else {}
        with self._lock:
            if self._access is None or (self._access_exp and time.time() > self._access_exp - _REFRESH_MARGIN_S):
                self._refresh_locked()
            return {"Authorization": f"Bearer {self._access}"}

    def invalidate(self, failed: dict[str, str] | None = None) -> None:
        """Drop the cached access token so the next `headers()` refreshes it.

        Pass the headers that got the 401 as `failed`: if another thread already refreshed since, nothing is dropped,
        so N threads hitting one expired token cause one refresh, not N.
        """
        with self._lock:
            if failed is None or failed.get("Authorization") == f"Bearer {self._access}":
                self._access = None

    def _refresh_locked(self) -> None:
        if not self.ls_url:
            raise BackendError("LABEL_STUDIO_API_KEY is a Personal Access Token but LABEL_STUDIO_URL is not set; "
                               "set LABEL_STUDIO_URL so the token can be exchanged.", status=500)
        url = f"{self.ls_url}/api/token/refresh/"
        try:
            resp = requests.post(url, json={"refresh": self._key}, timeout=self._timeout_s)
        except requests.RequestException as exc:
            raise BackendError(f"Could not reach Label Studio at {self.ls_url} to refresh the access token ({exc}); "
                               "check LABEL_STUDIO_URL and that Label Studio is running.", status=502) from exc
        if resp.status_code in (400, 401, 403):
            raise BackendError(f"Label Studio rejected the Personal Access Token (HTTP {resp.status_code}); set "
                               "LABEL_STUDIO_API_KEY to a valid, unrevoked token.", status=502)
        access = resp.json().get("access") if resp.ok and "json" in resp.headers.get("Content-Type", "") else None
        if not access:
            raise BackendError(f"Label Studio answered the token refresh with HTTP {resp.status_code} and no access "
                               "token; check LABEL_STUDIO_URL points at Label Studio.", status=502)
        self._access = access
        self._access_exp = float((_jwt_payload(access) or {}).get("exp") or 0.0)
        logger.debug("refreshed LS access token (exp=%s)", self._access_exp or "unknown")
