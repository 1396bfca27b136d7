"""The front's service in `TRACKING_BACKEND=ray` mode: `TrackingService`'s methods, forwarded to Serve replicas.

The Flask app (auth, protocol, validation, limits) stays what Label Studio talks to; this object replaces the
in-process `TrackingService` behind it. Each task's work (interactive prompt, batch item, webhook, job status,
cancel) is one HTTP call to Serve's proxy with the header `serve-multiplexed-model-id: <task id>`, so it reaches
the replica that holds the task's session (see `backend.scale.deployment`). A batch is split per task and sent
in parallel. A call that reaches no replica (a replica died mid-request, the proxy restarting) is retried, and
lands on another replica that rebuilds the task from Label Studio. No Ray import here: the front needs only
`requests`, so it runs from the ordinary runtime image.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import requests
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from backend.serving.errors import BackendError, BadRequest
from backend.serving.model import model_version
from backend.settings import Settings

logger = logging.getLogger(__name__)
HEADER = "serve-multiplexed-model-id"  # Serve 2.60 reads it as serve_multiplexed_model_id; nginx drops "_" headers
_STATS = ("sessions", "running_jobs", "queued_jobs", "requests_in_flight", "evictions", "frames_propagated",
          "feature_cache_bytes", "media_cache_bytes")
_FORGET_REPLICA_S = 120.0  # a replica not heard from this long leaves the front's metrics


class ReplicasUnavailable(BackendError):
    status = 503


class _RemoteModel:
    """What the app reads of the model (name, version, state) without loading it in the front.

    `state` is the replicas' model state as a background thread last saw it (every 2 s), so /health answers at once
    ("loading" until the first answer, "unreachable" while Serve does not answer)."""

    def __init__(self, client: RayTrackingClient, manifest: dict, version: str):
        self._client = client
        self.manifest = manifest
        self.version = version
        self.name = manifest.get("model", "sam2")
        self.error: str | None = None
        self.state = "loading"
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="replica-health", daemon=True).start()

    def _watch(self) -> None:
        while True:
            try:
                health = self._client._call("GET", "/health", None, attempts=1, timeout=10)["health"]
                self.state, self.error = health["state"], health.get("error")
            except BackendError as e:
                self.state, self.error = "unreachable", str(e)
            if self._stop.wait(2.0):
                return

    def get(self, timeout: float = 0.0):
        """Stand-in for the predictor the app's feature-cache gauge reads: the replicas' total."""
        return SimpleNamespace(features=SimpleNamespace(nbytes=self._client.total("feature_cache_bytes")))


class RayTrackingClient:
    remote = True

    def __init__(self, settings: Settings, *, task_id_of: Callable[[object], int],
                 webhook_task_id: Callable[[Mapping], int | None], session: requests.Session | None = None):
        """`task_id_of` (a task object of a predict body -> its id; raises BackendError when it has none) and
        `webhook_task_id` (a webhook body -> the task it is for, None: any replica may answer) read the forwarded
        protocol (the LS adapter's, wired by `backend.app.build_service`); the front knows no tool."""
        self.settings = settings
        self.task_id_of, self.webhook_task_id = task_id_of, webhook_task_id
        self.url = settings.ray.serve_url
        self.http = session or requests.Session()
        manifest = json.loads((Path(settings.model_dir) / "manifest.json").read_text())
        self.model = _RemoteModel(self, manifest, settings.model_version or model_version(manifest))
        self._configs: dict[str, str] = {}
        self._replicas: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()
        self._batch = ThreadPoolExecutor(max_workers=8, thread_name_prefix="forward")
        self.jobs = SimpleNamespace(running=lambda: self.total("running_jobs") + self.total("queued_jobs"),
                                    cancel=self.cancel)
        self.media = SimpleNamespace(cache=_Total(self, "media_cache_bytes"))
        self.forwarded = Counter("sam2_forwarded_requests", "Requests the front forwarded, by route and replica",
                                 ["route", "replica"], registry=None)

    # ---- TrackingService's methods -----------------------------------------------------------
    def setup(self, body: Mapping) -> dict:
        answer = self._call("POST", "/setup", None, body)["answer"]  # a replica validates the config
        project, schema = str(body.get("project") or "").split(".")[0], body.get("schema")
        if project and isinstance(schema, str) and schema.strip():
            with self._lock:
                self._configs[project] = schema
        return answer

    def predict(self, body: Mapping) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise BadRequest("'tasks' must be a non-empty list of LS tasks")
        body = dict(body)
        if not (isinstance(body.get("label_config"), str) and body["label_config"].strip()):
            with self._lock:
                config = self._configs.get(str(body.get("project") or "").split(".")[0])
            if config is None:
                raise BadRequest("the request has no label_config; send the project's label config")
            body["label_config"] = config
        params = body.get("params") if isinstance(body.get("params"), Mapping) else {}
        if params.get("context") is not None:  # interactive: one task, errors go back to LS as they are
            tid = self.task_id_of(tasks[0])
            return {"results": [self._call("POST", "/predict", tid, dict(body, tasks=[tasks[0]]))["result"]]}
        futures = [self._batch.submit(self._batch_one, body, task) for task in tasks]
        return {"results": [f.result() for f in futures]}

    def webhook(self, body: Mapping, *, trusted: bool = True) -> dict:
        tid = self.webhook_task_id(body)  # None: any replica answers as the in-process service would
        return self._call("POST", "/webhook", tid, {"body": body, "trusted": trusted})["answer"]

    def job_status(self, task_id: int) -> dict | None:
        return self._call("GET", f"/jobs/{task_id}", task_id)["job"]

    def cancel(self, task_id: int) -> dict | None:
        return self._call("POST", f"/jobs/{task_id}/cancel", task_id, {})["job"]

    def active_sessions(self) -> int:
        return self.total("sessions")

    @property
    def frames_propagated(self) -> int:
        return self.total("frames_propagated")

    def shutdown(self) -> None:
        self.model._stop.set()
        self._batch.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    # ---- metrics -----------------------------------------------------------------------------
    def replicas(self) -> dict[str, dict]:
        """Latest stats each replica sent with its answers (replicas silent for 2 minutes are dropped)."""
        now = time.monotonic()
        with self._lock:
            for r in [r for r, (t, _) in self._replicas.items() if now - t > _FORGET_REPLICA_S]:
                del self._replicas[r]
            return {r: s for r, (_, s) in self._replicas.items()}

    def total(self, key: str) -> int:
        return sum(int(s.get(key) or 0) for s in self.replicas().values())

    def register_metrics(self, metrics) -> None:
        metrics.registry.register(self.forwarded)
        metrics.registry.register(_ReplicaCollector(self))

    # ---- transport ---------------------------------------------------------------------------
    def _batch_one(self, body: Mapping, task: object) -> dict:
        """Never raises, like the in-process batch: a task we cannot serve gets an empty result and a log line."""
        try:
            tid = self.task_id_of(task)
            return self._call("POST", "/predict", tid, dict(body, tasks=[task]))["result"]
        except BackendError as e:
            logger.warning("batch predict: task %s skipped: %s", getattr(task, "get", lambda k: None)("id"), e)
            return {"result": [], "model_version": self.model.version}

    def _call(self, method: str, route: str, task_id: int | None, body: Mapping | None = None, *,
              attempts: int = 3, timeout: float | None = None) -> dict:
        headers = {HEADER: str(task_id)} if task_id is not None else {}
        timeout = timeout or self.settings.ray.request_timeout_s
        problem = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(2.0 * attempt, 5.0))
            try:
                resp = self.http.request(method, self.url + route, json=body, headers=headers,
                                         timeout=(5, timeout))
            except requests.Timeout:
                raise ReplicasUnavailable(f"no tracking replica answered {route} within {timeout:.0f} s",
                                          status=504) from None
            except requests.RequestException as e:
                problem = f"Serve at {self.url} is unreachable ({type(e).__name__})"
                continue
            try:
                answer = resp.json()
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or "replica" not in answer:
                # Not a replica's answer: the proxy found no live replica (one died mid-request), retry
                problem = f"Serve answered {resp.status_code} without a replica ({resp.text[:120]!r})"
                logger.warning("%s %s (task %s): %s; attempt %d of %d", method, route, task_id, problem,
                               attempt + 1, attempts)
                continue
            replica = str(answer["replica"])
            self.forwarded.labels(route.split("/")[1], replica).inc()
            if isinstance(answer.get("stats"), dict):
                with self._lock:
                    self._replicas[replica] = (time.monotonic(), answer["stats"])
            if resp.status_code >= 400:
                raise BackendError(str(answer.get("error") or resp.reason), status=resp.status_code)
            return answer
        raise ReplicasUnavailable(f"the tracking replicas are unavailable: {problem}; check the Ray cluster "
                                  "(`serve status`)")


class _Total:
    """`.nbytes` = the replicas' total of one stat (the app's media-cache gauge reads `service.media.cache.nbytes`)."""

    def __init__(self, client: RayTrackingClient, key: str):
        self.client, self.key = client, key

    @property
    def nbytes(self) -> int:
        return self.client.total(self.key)


class _ReplicaCollector:
    """Per-replica gauges from the stats the replicas send with every answer (label: replica id)."""

    def __init__(self, client: RayTrackingClient):
        self.client = client

    def describe(self):
        return []

    def collect(self):
        replicas = self.client.replicas()
        for key in _STATS:
            family = GaugeMetricFamily(f"sam2_replica_{key}", f"{key.replace('_', ' ')} on each tracking replica "
                                                              "(as of its last answer)", labels=["replica"])
            for replica, stats in sorted(replicas.items()):
                family.add_metric([replica], float(stats.get(key) or 0))
            yield family
