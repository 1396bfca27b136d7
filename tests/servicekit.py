"""Helpers for the service hardening tests (tests/test_service_*.py): apps with chosen settings, a fake LS."""
from __future__ import annotations

import contextlib
import json
import threading

from werkzeug.wrappers import Response

from backend.app import create_app
from backend.settings import Settings
from tests import appkit as kit
from tests.fakehttp import LEGACY, FakeHost, json_response


def make_app(media_root, model_dir, tmp_path, **env):
    """A ready app on the 128 px random-init model with frames under `media_root`; `env` overrides settings."""
    base = {"MODEL_DIR": str(model_dir), "LOCAL_FILES_DOCUMENT_ROOT": str(media_root), "PRECISION": "f32",
            "MEDIA_CACHE_DIR": str(tmp_path / "cache"), "DATA_DIR": str(tmp_path / "data"),
            "PREDICT_TIME_BUDGET_S": "60", "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "secret"}
    base.update({k: str(v) for k, v in env.items() if v is not None})
    for k in [k for k, v in env.items() if v is None]:
        base.pop(k, None)
    app = create_app(Settings.from_env(base))
    kit.wait_ready(app.test_client())
    return app


@contextlib.contextmanager
def running(app):
    try:
        yield app
    finally:
        app.config["SERVICE"].shutdown()


class FakeLS:
    """Task, project and prediction endpoints of Label Studio over a FakeHost (in memory, thread-safe)."""

    def __init__(self, host: FakeHost | None = None):
        self.host = host or FakeHost("127.0.0.1")
        self.url = self.host.url
        self.tasks: dict[int, dict] = {}
        self.projects: dict[int, dict] = {}
        self.predictions: dict[int, dict] = {}
        self.next_id = 1000
        self.fail_writes = 0  # answer this many prediction writes with 503 first
        self.lock = threading.Lock()
        self.host.routes["/api/predictions/"] = self._predictions

    def add_task(self, task: dict, project: int = 1, config: str = kit.FRAMES_CONFIG) -> None:
        self.tasks[task["id"]] = dict(task, project=project)
        self.projects[project] = {"id": project, "label_config": config}
        self.host.routes[f"/api/tasks/{task['id']}/"] = lambda r, t=task["id"]: json_response(self.tasks[t])
        self.host.routes[f"/api/projects/{project}/"] = lambda r, p=project: json_response(self.projects[p])

    def add_prediction(self, task: int, result: list, model_version: str) -> int:
        with self.lock:
            self.next_id += 1
            self.predictions[self.next_id] = {"id": self.next_id, "task": task, "result": result,
                                              "model_version": model_version}
            pid = self.next_id
        self.host.routes[f"/api/predictions/{pid}/"] = self._one
        return pid

    def ours(self, task: int, model_version: str) -> list[dict]:
        with self.lock:
            return [p for p in self.predictions.values() if p["task"] == task and p["model_version"] == model_version]

    def reads(self, task: int) -> int:
        return len([s for s in self.host.seen if s["path"] == f"/api/tasks/{task}/"])

    def _predictions(self, request):
        if request.method == "GET":
            task = int(request.args["task"])
            with self.lock:
                return json_response([p for p in self.predictions.values() if p["task"] == task])
        with self.lock:
            if self.fail_writes > 0:
                self.fail_writes -= 1
                return Response("down", status=503)
        body = json.loads(request.get_data())
        pid = self.add_prediction(body["task"], body["result"], body["model_version"])
        return json_response(self.predictions[pid], 201)

    def _one(self, request):
        pid = int(request.path.rstrip("/").rsplit("/", 1)[1])
        with self.lock:
            if pid not in self.predictions:
                return json_response({"detail": "Not found."}, 404)
            if request.method == "DELETE":
                del self.predictions[pid]
                return Response(status=204)
            if self.fail_writes > 0:
                self.fail_writes -= 1
                return Response("down", status=503)
            body = json.loads(request.get_data())
            self.predictions[pid].update({k: body[k] for k in ("result", "model_version") if k in body})
            return json_response(self.predictions[pid])

    def close(self) -> None:
        self.host.close()


LEGACY_TOKEN = LEGACY
