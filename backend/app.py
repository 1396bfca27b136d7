"""Flask app factory: Label Studio's ML backend protocol over `TrackingService` (no model logic here).

Routes: GET /health, POST /setup, POST /predict, POST /webhook, GET /versions, GET /metrics, GET /jobs/<task>,
POST /jobs/<task>/cancel.
Errors answer JSON `{"error": "..."}` with a status that says whose fault it is (4xx: the request; 502: upstream
media or LS; 503: still loading; 500: ours, with an id to find the traceback in the log).
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid

from flask import Flask, Response, g, jsonify, request
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from backend.engine import FrameError, PromptError, SessionBusy
from backend.ls.errors import BackendError
from backend.ls.lsclient import LabelStudioClient
from backend.ls.service import TrackingService
from backend.metrics import Metrics
from backend.serving.media import MediaResolver
from backend.serving.model import ModelHolder
from backend.settings import Settings

logger = logging.getLogger(__name__)
_OPEN_ROUTES = {"health"}  # reachable without basic auth (Docker HEALTHCHECK, load balancers)
# LS sends webhooks without the ML backend's basic auth: an unauthenticated webhook is accepted, but its payload is
# not trusted (the service re-reads the task and annotation from LS with its own token).
_UNTRUSTED_OK = {"webhook"}


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def build_service(settings: Settings) -> TrackingService:
    if settings.ray.enabled:  # scale-out: this process is only the front; replicas track (Ray imported there only)
        from backend.scale.front import RayTrackingClient
        return RayTrackingClient(settings)
    model = ModelHolder(settings)
    model.start()
    media = MediaResolver(settings.media)
    client = LabelStudioClient(settings.media.ls_url, media.tokens, settings.media.timeout_s) \
        if settings.media.ls_url else None
    if client is None:
        logger.warning("LABEL_STUDIO_URL is not set: interactive answers work, but complete results cannot be "
                       "written into Label Studio and LS-hosted media cannot be downloaded")
    return TrackingService(settings, model, media, client)


def create_app(settings: Settings | None = None, service: TrackingService | None = None) -> Flask:
    settings = settings or Settings.from_env()
    service = service or build_service(settings)
    app = Flask(__name__)
    app.config["SERVICE"] = service
    metrics = Metrics()
    metrics.gauge("sam2_active_sessions", "Tracked videos held in memory", service.active_sessions)
    metrics.gauge("sam2_running_jobs", "Propagation jobs queued or running", service.jobs.running)
    metrics.gauge("sam2_frames_propagated_total", "Frames propagated since start",
                       lambda: service.frames_propagated)
    metrics.gauge("sam2_feature_cache_bytes", "Bytes of image features in the cache",
                  lambda: service.model.get(0).features.nbytes if service.model.state == "ready" else 0)
    metrics.gauge("sam2_media_cache_bytes", "Bytes of media in the disk cache", lambda: service.media.cache.nbytes)
    if getattr(service, "remote", False):  # Ray mode: per-replica sessions, jobs, queues (backend/scale/front.py)
        service.register_metrics(metrics)

    @app.before_request
    def _auth_and_clock():
        g.t0 = time.perf_counter()
        g.trusted = True
        if settings.basic_auth is None or request.endpoint in _OPEN_ROUTES:
            return None
        auth = request.authorization
        user, password = settings.basic_auth
        if auth is None or auth.type != "basic" or not (
                hmac.compare_digest(auth.username or "", user) and hmac.compare_digest(auth.password or "", password)):
            if request.endpoint in _UNTRUSTED_OK:
                g.trusted = False
                return None
            resp, status = _error(401, "HTTP basic auth required: set the ML backend's basic auth user and password "
                                       "in the Label Studio project settings")
            resp.headers["WWW-Authenticate"] = 'Basic realm="sam2-backend"'
            return resp, status
        return None

    @app.after_request
    def _count(resp):
        endpoint = request.endpoint or "unknown"
        metrics.requests.labels(endpoint, str(resp.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - g.get("t0", time.perf_counter()))
        return resp

    @app.errorhandler(BackendError)
    def _backend_error(e: BackendError):
        logger.warning("%s %s -> %d: %s", request.method, request.path, e.status, e)
        return _error(e.status, str(e))

    @app.errorhandler(PromptError)
    @app.errorhandler(FrameError)
    def _client_error(e: Exception):
        logger.warning("%s %s -> 400: %s", request.method, request.path, e)
        return _error(400, str(e))

    @app.errorhandler(SessionBusy)
    def _busy(e: SessionBusy):
        return _error(409, f"{e}; the task is busy, retry in a moment")

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        return _error(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        ref = uuid.uuid4().hex[:8]
        logger.exception("unexpected error %s on %s %s", ref, request.method, request.path)
        return _error(500, f"internal error {ref}; the backend log has the details")

    def _json() -> dict:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BackendError("the body must be a JSON object (Content-Type: application/json)", status=400)
        return body

    @app.get("/health")
    @app.get("/", endpoint="health")
    def health():
        state = service.model.state
        body = {"status": "UP" if state == "ready" else state.upper(), "model_class": "SAM2VideoOpenVINO",
                "model": service.model.name, "model_version": service.model.version, "state": state,
                "random_weights": bool(service.model.manifest.get("random_weights"))}
        if service.model.error:
            body["error"] = service.model.error
        return jsonify(body), 200 if state == "ready" else 503

    @app.post("/setup")
    def setup():
        return jsonify(service.setup(_json()))

    @app.post("/predict")
    def predict():
        return jsonify(service.predict(_json()))

    @app.post("/webhook")
    def webhook():
        return jsonify(service.webhook(_json(), trusted=g.trusted))

    @app.get("/versions")
    def versions():
        return jsonify(versions=[service.model.version], model_version=service.model.version)

    @app.get("/jobs/<int:task_id>")
    def job(task_id: int):
        status = service.job_status(task_id)
        if status is None:
            return _error(404, f"no propagation job for task {task_id} since this backend started")
        return jsonify(status)

    @app.post("/jobs/<int:task_id>/cancel")
    def cancel_job(task_id: int):
        service.jobs.cancel(task_id)  # in Ray mode: on the task's replica
        status = service.job_status(task_id)
        if status is None:
            return _error(404, f"no propagation job for task {task_id} since this backend started")
        return jsonify(status)

    @app.get("/metrics")
    def prometheus():
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

    return app
