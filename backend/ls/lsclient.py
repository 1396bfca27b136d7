"""Talk to the Label Studio REST API: pick the right Authorization header and wrap the few endpoints the backend uses.

Auth (LS 1.23.2, `jwt_auth/`): the header comes from `backend.serving.tokens.TokenProvider` (legacy token or PAT).

Endpoints (read from LS 1.23.2 `tasks/urls.py`, `tasks/api.py`, `data_import/urls.py`, `io_storages/urls.py`):
predictions are a DRF ModelViewSet at `/api/predictions/` (filter `?task=`, no pagination), tasks at `/api/tasks/`,
bulk import at `/api/projects/<id>/import`, local storages at `/api/storages/localfiles/`.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import requests

from backend.serving.errors import BackendError
from backend.serving.tokens import TokenProvider, is_jwt  # noqa: F401  (re-exported for callers)

logger = logging.getLogger(__name__)


class LabelStudioUnavailable(BackendError):
    """LS could not be reached or answered 5xx: 502, and worth retrying later (see `backend.ls.writer`)."""

    status = 502


def _looks_json(resp: requests.Response) -> bool:
    return "json" in resp.headers.get("Content-Type", "")


def _snippet(resp: requests.Response) -> str:
    text = (resp.text or "").strip().replace("\n", " ")
    return text[:300] + ("…" if len(text) > 300 else "")


class LabelStudioClient:
    """Thin wrapper over the LS REST API. Every call raises `BackendError` with one sentence on failure.

    Status mapping: LS 404 -> 404 (the id does not exist); anything else that fails (unreachable, timeout, 5xx,
    rejected payload, credentials still refused after one refresh) -> 502. `timeout_s` is per connect and per read.
    """

    def __init__(self, ls_url: str | None, token_provider: TokenProvider, timeout_s: float = 30.0):
        if not ls_url:
            raise BackendError("LABEL_STUDIO_URL is not set; set it to the Label Studio address "
                               "(e.g. http://localhost:8080).", status=500)
        self.ls_url = ls_url.rstrip("/")
        self.tokens = token_provider
        self.timeout_s = timeout_s
        self._local = threading.local()

    # -- endpoints -----------------------------------------------------------------------------------------------
    def get_task(self, task_id: int) -> dict:
        """GET /api/tasks/<id>/ -> the task dict (data, annotations, predictions...)."""
        return self._call("GET", f"/api/tasks/{int(task_id)}/")

    def get_project(self, project_id: int) -> dict:
        """GET /api/projects/<id>/ -> the project dict (label_config, ...)."""
        return self._call("GET", f"/api/projects/{int(project_id)}/")

    def list_predictions(self, task_id: int) -> list[dict]:
        """GET /api/predictions/?task=<id> -> all predictions of the task."""
        out = self._call("GET", "/api/predictions/", params={"task": int(task_id)})
        return out.get("results", []) if isinstance(out, dict) else list(out)

    def create_prediction(self, task_id: int, result: list[dict], *, score: float | None, model_version: str) -> dict:
        """POST /api/predictions/ {task, result, score, model_version} -> the stored prediction (with its `id`)."""
        body = {"task": int(task_id), "result": result, "score": score, "model_version": model_version}
        return self._call("POST", "/api/predictions/", json=body)

    def update_prediction(self, prediction_id: int, result: list[dict], *, score: float | None,
                          model_version: str) -> dict:
        """PATCH /api/predictions/<id>/ with result, score and model_version -> the updated prediction."""
        body = {"result": result, "score": score, "model_version": model_version}
        return self._call("PATCH", f"/api/predictions/{int(prediction_id)}/", json=body)

    def delete_prediction(self, prediction_id: int) -> None:
        """DELETE /api/predictions/<id>/."""
        self._call("DELETE", f"/api/predictions/{int(prediction_id)}/")

    def create_task(self, project_id: int, data: dict) -> dict:
        """POST /api/tasks/ {project, data} -> the created task (with its `id`)."""
        return self._call("POST", "/api/tasks/", json={"project": int(project_id), "data": data})

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        """POST /api/projects/<id>/import with a JSON list of tasks -> LS's import summary (task_count, ...)."""
        return self._call("POST", f"/api/projects/{int(project_id)}/import", json=list(tasks))

    def create_local_storage(self, project_id: int, path: str, title: str) -> dict:
        """POST /api/storages/localfiles/ {project, path, title, use_blob_urls: true} -> the storage (with `id`).

        LS validates that `path` exists under its LOCAL_FILES_DOCUMENT_ROOT; tasks appear after `sync_local_storage`.
        """
        body = {"project": int(project_id), "path": str(path), "title": title, "use_blob_urls": True}
        return self._call("POST", "/api/storages/localfiles/", json=body)

    def list_local_storages(self, project_id: int) -> list[dict]:
        """GET /api/storages/localfiles/?project=<id> -> the project's local-files storages."""
        return list(self._call("GET", "/api/storages/localfiles/", params={"project": int(project_id)}) or [])

    def sync_local_storage(self, storage_id: int) -> dict:
        """POST /api/storages/localfiles/<id>/sync: import every file of the storage as a task."""
        return self._call("POST", f"/api/storages/localfiles/{int(storage_id)}/sync")

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = self._local.session = requests.Session()
        return sess

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request (refresh + retry once on 401) and return the decoded JSON body (None when empty)."""
        url = self.ls_url + path
        for attempt in (1, 2):
            headers = self.tokens.headers()
            try:
                resp = self._session().request(method, url, headers=headers, timeout=self.timeout_s, **kwargs)
            except requests.RequestException as exc:
                raise LabelStudioUnavailable(f"Could not reach Label Studio at {self.ls_url} ({type(exc).__name__}); "
                                             "check LABEL_STUDIO_URL and that Label Studio is running.") from exc
            if resp.status_code == 401 and attempt == 1 and self.tokens.refreshable:
                logger.info("LS answered 401 to %s %s; refreshing the access token and retrying once", method, path)
                self.tokens.invalidate(headers)
                continue
            break
        if resp.status_code in (401, 403):
            raise BackendError(f"Label Studio refused {method} {path} (HTTP {resp.status_code}); set "
                               "LABEL_STUDIO_API_KEY to a valid token of a user with access to the project.",
                               status=502)
        if resp.status_code == 404:
            raise BackendError(f"Label Studio has no object at {method} {path} (HTTP 404); check the id.", status=404)
        if resp.status_code >= 500:
            raise LabelStudioUnavailable(f"Label Studio failed {method} {path} with HTTP {resp.status_code}: "
                                         f"{_snippet(resp)}")
        if not resp.ok:
            raise BackendError(f"Label Studio failed {method} {path} with HTTP {resp.status_code}: {_snippet(resp)}",
                               status=502)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise BackendError(f"Label Studio answered {method} {path} with non-JSON content; check LABEL_STUDIO_URL "
                               "points at Label Studio, not a proxy page.", status=502) from exc
