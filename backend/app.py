"""Flask app factory: Label Studio's ML backend protocol over `TrackingService` (no model logic here).

Routes: GET /health, POST /setup, POST /predict, POST /webhook, GET /versions, GET /metrics, GET /jobs/<task>,
POST /jobs/<task>/cancel.
Errors answer JSON `{"error": "..."}` with a status that says whose fault it is (4xx: the request; 502: upstream
media or LS; 503: still loading; 500: ours, with an id to find the traceback in the log).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
import uuid
from pathlib import Path

from flask import Flask, Response, g, jsonify, request
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.engine import FrameError, PromptError, SessionBusy
from backend.ls.errors import BackendError
from backend.ls.factory import build_tracking_service, route_task, route_webhook
from backend.ls.service import TrackingService
from backend.metrics import Metrics
from backend.serving.bodies import parse_json_object, read_body
from backend.serving.health import HealthServer, health_report
from backend.serving.limits import WEBHOOK_SECRET_HEADER
from backend.serving import rawjson
from backend.settings import Settings

logger = logging.getLogger(__name__)
_OPEN_ROUTES = {"health"}  # reachable without basic auth (Docker HEALTHCHECK, load balancers)
# LS sends webhooks without the ML backend's basic auth: an unauthenticated webhook is accepted, but its payload is
# not trusted (the service re-reads the task and annotation from LS with its own token, rate-limited, and answers
# every such call the same). With basic auth unset, webhooks are trusted only with the WEBHOOK_SECRET header.
_UNTRUSTED_OK = {"webhook"}
CANCEL_WAIT_S = 10.0  # POST /jobs/<task>/cancel waits this long for the job to stop before answering its status


def _credentials_match(header: str | None, expected: bytes) -> bool:
    """Whether an Authorization header carries exactly `user:password` (compared as bytes, in constant time)."""
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip().encode("ascii", "strict"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


def _secret_matches(given: str | None, secret: str | None) -> bool:
    if not secret or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode("utf-8"))


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def build_service(settings: Settings) -> TrackingService:
    if settings.ray.enabled:  # scale-out: this process is only the front; replicas track (Ray imported there only)
        from backend.scale.front import RayTrackingClient
        return RayTrackingClient(settings, task_id_of=route_task, webhook_task_id=route_webhook)
    return build_tracking_service(settings)


def create_app(settings: Settings | None = None, service: TrackingService | None = None) -> Flask:
    settings = settings or Settings.from_env()
    service = service or build_service(settings)
    app = Flask(__name__)
    app.config["SERVICE"] = service
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_body_bytes  # werkzeug answers 413 before reading it
    metrics = Metrics()
    metrics.gauge("sam2_active_sessions", "Tracked videos held in memory", service.active_sessions)
    metrics.gauge("sam2_running_jobs", "Propagation jobs queued or running", service.jobs.running)
    metrics.gauge("sam2_frames_propagated_total", "Frames propagated since start",
                       lambda: service.frames_propagated)
    metrics.gauge("sam2_feature_cache_bytes", "Bytes of image features in the cache",
                  lambda: service.model.get(0).features.nbytes if service.model.state == "ready" else 0)
    metrics.gauge("sam2_media_cache_bytes", "Bytes of media in the disk cache", lambda: service.media.cache.nbytes)
    remote = getattr(service, "remote", False)  # Ray mode: replicas hold sessions, jobs and the engine
    if not remote:
        metrics.gauge("sam2_session_bytes", "Bytes of tracked masks held by task sessions",
                      lambda: service.sessions.nbytes)
        metrics.gauge("sam2_answer_cache_bytes", "Bytes of cached result JSON texts",
                      lambda: service.answer_texts.nbytes)
        metrics.gauge("sam2_conditioned_cache_bytes", "Bytes of memory-conditioned features kept for clicks",
                      lambda: service.model.get(0).conditioned.nbytes if service.model.state == "ready" else 0)
    credentials = f"{settings.basic_auth[0]}:{settings.basic_auth[1]}".encode() if settings.basic_auth else None
    if settings.limits.health_port:
        app.config["HEALTH_SERVER"] = HealthServer(service.model, settings.limits.health_port,
                                                   Path(settings.data_dir)).start()

    if settings.cvat.enabled and not remote:  # CVAT's nuclio-dashboard API over the same engine (backend/cvat)
        from backend.cvat import create_cvat_blueprint
        cvat = create_cvat_blueprint(settings.cvat, service.model)
        app.register_blueprint(cvat)
        metrics.gauge("sam2_cvat_sessions", "CVAT tracking sessions held", lambda: len(cvat.tracker.sessions))
        metrics.gauge("sam2_cvat_reinitialised_total", "CVAT objects re-initialised from a lost session's last box",
                      lambda: cvat.tracker.reinitialised)
    if remote:  # Ray mode: per-replica sessions, jobs, queues (backend/scale/front.py)
        service.register_metrics(metrics)

    @app.before_request
    def _auth_and_clock():
        g.t0 = time.perf_counter()
        g.trusted = True
        if request.endpoint in _OPEN_ROUTES:
            return None
        if request.endpoint in _UNTRUSTED_OK:  # trusted only when authenticated or signed, never by default
            g.trusted = (credentials is not None and _credentials_match(request.headers.get("Authorization"),
                                                                         credentials)) \
                or _secret_matches(request.headers.get(WEBHOOK_SECRET_HEADER), settings.limits.webhook_secret)
            return None
        if credentials is None or _credentials_match(request.headers.get("Authorization"), credentials):
            return None
        resp, status = _error(401, "HTTP basic auth required: set the ML backend's basic auth user and password "
                                   "in the Label Studio project settings")
        resp.headers["WWW-Authenticate"] = 'Basic realm="sam2-backend"'
        return resp, status

    @app.after_request
    def _count(resp):
        endpoint = request.endpoint or "unknown"
        metrics.requests.labels(endpoint, str(resp.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - g.get("t0", time.perf_counter()))
        return resp

    @app.errorhandler(BackendError)
    def _backend_error(e: BackendError):
        logger.warning("%s %s -> %d: %s", request.method, request.path, e.status, e)
        resp, status = _error(e.status, str(e))
        if e.status in (409, 429, 503):
            resp.headers["Retry-After"] = str(getattr(e, "retry_after", 2))
        return resp, status

    @app.errorhandler(PromptError)
    @app.errorhandler(FrameError)
    def _client_error(e: Exception):
        logger.warning("%s %s -> 400: %s", request.method, request.path, e)
        return _error(400, str(e))

    @app.errorhandler(SessionBusy)
    def _busy(e: SessionBusy):
        resp, status = _error(409, f"{e}; the task is busy, retry in a moment")
        resp.headers["Retry-After"] = "2"
        return resp, status

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e: RequestEntityTooLarge):
        return _error(413, f"the request body is larger than MAX_BODY_MB={settings.limits.max_body_bytes / (1 << 20):.3g} "
                           "MB; send fewer regions or raise MAX_BODY_MB")

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        return _error(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        ref = uuid.uuid4().hex[:8]
        logger.exception("unexpected error %s on %s %s", ref, request.method, request.path)
        return _error(500, f"internal error {ref}; the backend log has the details")

    def _json() -> dict:
        # a declared Content-Length over MAX_CONTENT_LENGTH is refused (413) before reading; a chunked body is read
        # up to the cap, and werkzeug's stream raises 413 on the first read past it (readall alone stops silently)
        raw = read_body(request.stream, request.environ.get("gunicorn.socket"), settings.limits.max_body_bytes,
                        settings.limits.body_timeout_s)
        return parse_json_object(raw, max_depth=settings.limits.max_json_depth)

    @app.get("/health")
    @app.get("/", endpoint="health")
    def health():
        body, status = health_report(service.model)
        return jsonify(body), status

    @app.post("/setup")
    def setup():
        return jsonify(service.setup(_json()))

    @app.post("/predict")
    def predict():
        answer = service.predict(_json())
        if app.debug or app.json.compact is False or not app.json.sort_keys or not app.json.ensure_ascii:
            return jsonify(answer)
        # the same bytes as jsonify, with each unchanged result's cached JSON spliced in (backend.serving.rawjson)
        return app.response_class(f"{rawjson.dumps(answer, app.json.default)}\n", mimetype=app.json.mimetype)

    @app.post("/webhook")
    def webhook():
        if not g.trusted:  # the same answer for every outcome: no oracle on tasks or annotations
            service.webhook(_json(), trusted=False)
            return jsonify(status="accepted"), 202
        return jsonify(service.webhook(_json(), trusted=True))

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
        job = service.jobs.cancel(task_id)  # in Ray mode: on the task's replica (which waits there)
        if hasattr(job, "wait"):  # in process: let the frame in flight finish (cancel itself never waits; no lock held)
            job.wait(CANCEL_WAIT_S)
        status = service.job_status(task_id)
        if status is None:
            return _error(404, f"no propagation job for task {task_id} since this backend started")
        return jsonify(status)

    @app.get("/metrics")
    def prometheus():
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

    return app
