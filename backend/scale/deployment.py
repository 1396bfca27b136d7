"""The Ray Serve deployment: N `TaskTracker` replicas, each a `SessionHost`; a task's session is the multiplexed model.

Requests come through Serve's HTTP proxy from the front (`backend.scale.front`) with the header
`serve_multiplexed_model_id: <task id>`, so Serve routes every request for task T to the replica that holds T's
session when one does, and to the replica with the fewest sessions when none does (that replica rebuilds the
session from the task's annotations and our prediction in LS); `backend.scale.routing.TaskAffinityRouter` (a Serve
request-router plugin) keeps a burst of new tasks from piling onto one replica. `MAX_SESSIONS` is `max_num_models_per_replica`:
Serve evicts the least recently used task and `SessionHost` closes it in the background.

Routes (under the application's route prefix, JSON in and out; errors `{"error", "replica"}` with the status that
says whose fault it is, like the front's):
  POST /predict  {LS predict body with exactly one task}           -> {"result": {...}, "replica", "stats"}
  POST /webhook  {"body": LS webhook payload, "trusted": bool}     -> {"answer": {...}, "replica", "stats"}
  POST /setup    {LS setup body} (no task id)                      -> {"answer": {...}, "replica", "stats"}
  GET  /jobs/<task>, POST /jobs/<task>/cancel                      -> {"job": status | null, "replica", "stats"}
  GET  /health (no task id)                                        -> {"health": {...}, "replica", "stats"}

Start it with `serve run docker/serve-config.yaml` (or `serve deploy`), or `serve.run(backend.serve_app.build_app({...}))`
(the wiring that injects the Label Studio adapter's service; this module imports no adapter).
Replica settings come from the environment of the Ray workers (the same variables as the in-process backend:
MODEL_DIR, LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, MAX_SESSIONS, OV_THREADS, JOB_WORKERS, ...); `build_app`'s
`env` argument (serve config `args.env`) adds to it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.metrics import Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse

from backend.engine import FrameError, PromptError, SessionBusy
from backend.scale.host import ServiceFactory, SessionHost
from backend.serving.errors import BackendError
from backend.settings import Settings, SettingsError

logger = logging.getLogger(__name__)
_JOB_PATH = re.compile(r"/jobs/(\d+)(/cancel)?$")
_GAUGES = {  # stats key -> (metric name, description); Serve adds the replica, deployment and application tags
    "sessions": ("sam2_replica_sessions", "Tracking sessions held by the replica"),
    "running_jobs": ("sam2_replica_running_jobs", "Propagation jobs running on the replica"),
    "queued_jobs": ("sam2_replica_queued_jobs", "Propagation jobs waiting for a worker thread on the replica"),
    "requests_in_flight": ("sam2_replica_requests_in_flight", "Requests being served by the replica"),
    "frames_propagated": ("sam2_replica_frames_propagated", "Frames the replica propagated since it started"),
}


class _Fail(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@serve.deployment(name="TaskTracker", health_check_period_s=10, graceful_shutdown_timeout_s=30,
                  request_router_config=RequestRouterConfig(
                      request_router_class="backend.scale.routing:TaskAffinityRouter"))
class TaskTracker:
    def __init__(self, env: dict[str, str] | None, service_factory: ServiceFactory):
        try:
            settings = Settings.from_env({**os.environ, **(env or {})})
        except SettingsError as e:
            raise RuntimeError(f"configuration error: {e}") from None
        logging.getLogger("backend").setLevel(settings.log_level)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.host = SessionHost(settings, self.replica, service_factory)
        # The task's session handle; Serve keeps at most MAX_SESSIONS of them per replica (LRU).
        host = self.host

        async def open_task(model_id: str):  # a plain function: Serve keeps its LRU as an attribute of it
            return host.open(int(model_id))
        self._session = serve.multiplexed(max_num_models_per_replica=settings.max_sessions)(open_task)
        self._pool = ThreadPoolExecutor(max_workers=settings.ray.max_ongoing_requests, thread_name_prefix="task")
        self._gauges = {k: Gauge(name, description=doc) for k, (name, doc) in _GAUGES.items()}
        self._stop = threading.Event()
        threading.Thread(target=self._export_metrics, name="metrics", daemon=True).start()
        logger.info("replica %s up: MAX_SESSIONS=%d, JOB_WORKERS=%d, OV_THREADS=%d", self.replica,
                    settings.max_sessions, settings.job_workers, settings.ov_threads)

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        try:
            if path.endswith("/health"):
                return self._ok(health=self.host.health())
            if path.endswith("/setup"):
                body = await self._json(request)
                return self._ok(answer=await self._run(lambda: self.host.setup(body)))
            tid = self._task_id()
            if path.endswith("/predict"):
                body = await self._json(request)
                await self._session(str(tid))
                return self._ok(result=await self._run(lambda: self.host.predict(body)))
            if path.endswith("/webhook"):
                body = await self._json(request)
                await self._session(str(tid))
                payload, trusted = body.get("body"), body.get("trusted") is True
                return self._ok(answer=await self._run(lambda: self.host.webhook(payload, trusted)))
            m = _JOB_PATH.search(path)
            if m and int(m.group(1)) == tid:
                await self._session(str(tid))
                if m.group(2):
                    return self._ok(job=await self._run(lambda: self.host.cancel(tid)))
                return self._ok(job=self.host.job_status(tid))
            raise _Fail(404, f"no route {request.method} {path} (or its task id differs from the multiplexed id)")
        except Exception as e:  # every answer is JSON with a whose-fault status, never a traceback
            status, message = self._status_of(e)
            return JSONResponse({"error": message, "replica": self.replica}, status_code=status)

    # ---- helpers ------------------------------------------------------------------------------
    async def _run(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    @staticmethod
    def _task_id() -> int:
        mid = serve.get_multiplexed_model_id()
        if not mid or not mid.isdigit():
            raise _Fail(400, f"task routes need the header serve_multiplexed_model_id: <task id>, got {mid!r}")
        return int(mid)

    @staticmethod
    async def _json(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Fail(400, "the body must be a JSON object")
        return body

    def _ok(self, **payload) -> JSONResponse:
        return JSONResponse({**payload, "replica": self.replica, "stats": self.host.stats()})

    def _status_of(self, e: Exception) -> tuple[int, str]:
        if isinstance(e, _Fail):
            return e.status, str(e)
        if isinstance(e, BackendError):
            return e.status, str(e)
        if isinstance(e, (PromptError, FrameError)):
            return 400, str(e)
        if isinstance(e, SessionBusy):
            return 409, f"{e}; the task is busy, retry in a moment"
        ref = uuid.uuid4().hex[:8]
        logger.exception("replica %s: unexpected error %s", self.replica, ref)
        return 500, f"internal error {ref} on replica {self.replica}; the replica's log has the details"

    def _export_metrics(self) -> None:
        while not self._stop.wait(2.0):
            try:
                stats = self.host.stats()
                for key, gauge in self._gauges.items():
                    gauge.set(stats[key])
            except Exception:
                logger.exception("replica %s: metrics export failed", self.replica)

    def check_health(self) -> None:
        """Serve's health check: a replica whose model failed to load is replaced."""
        if self.host.service.model.state == "failed":
            raise RuntimeError(f"model failed to load: {self.host.service.model.error}")

    def __del__(self):
        self._stop.set()
        self.host.shutdown()


def build_app(args: dict | None = None, *, service_factory: ServiceFactory | None = None):
    """The Serve application: `TaskTracker` replicas, each serving what `service_factory(settings)` builds (the
    adapter's service, injected by the wiring: `backend.serve_app.build_app` is the `import_path` to use).

    args: `env` (dict of settings for the replicas, added to the workers' environment); replicas, CPUs per replica
    and max ongoing requests default to RAY_REPLICAS, RAY_REPLICA_CPUS and RAY_MAX_ONGOING_REQUESTS from that env
    (a serve config's `deployments:` section overrides them).
    """
    if service_factory is None:
        raise ValueError("backend.scale.deployment.build_app needs the adapter's service factory; deploy "
                         "`import_path: backend.serve_app:build_app`, which wires the Label Studio adapter")
    env = {str(k): str(v) for k, v in ((args or {}).get("env") or {}).items()}
    from backend.settings import RaySettings
    ray_settings = RaySettings.from_env({**os.environ, **env})
    return TaskTracker.options(
        num_replicas=ray_settings.replicas, max_ongoing_requests=ray_settings.max_ongoing_requests,
        ray_actor_options={"num_cpus": ray_settings.replica_cpus},
    ).bind(env, service_factory)
