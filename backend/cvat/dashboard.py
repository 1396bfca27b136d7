"""The three nuclio-dashboard endpoints community CVAT uses, so CVAT finds and calls our tracker without nuclio.

CVAT's `LambdaGateway` (``cvat/apps/lambda_manager/views.py``) lists functions with ``GET /api/functions`` (a dict
name -> function), reads one with ``GET /api/functions/<name>`` and, with ``CVAT_NUCLIO_INVOKE_METHOD=dashboard``,
invokes it with ``POST /api/function_invocations`` naming it in the ``x-nuclio-function-name`` header. Of a function
it reads ``metadata.name``, ``metadata.annotations`` (type, name, spec, version, supported_shape_types),
``spec.description`` (required) and ``status.httpPort``.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request

from backend.cvat.shapes import SHAPE_TYPES, TooLarge
from backend.cvat.tracker import CvatTracker
from backend.serving.errors import BackendError, BadRequest
from backend.settings import CvatSettings

DESCRIPTION = ("Segment Anything 2.1 video tracker on OpenVINO (CPU): a rectangle, polygon or mask in, SAM 2's "
               "memory tracks it frame by frame. The CVAT UI tracks rectangles; polygons and masks through the REST "
               "API (POST /api/lambda/functions/<id>).")


def _read_json(cap: int) -> object:
    """The request's JSON body, refused with 413 beyond `cap` bytes (declared or, for a chunked body, read)."""
    too_big = TooLarge(f"the body is over {cap} bytes, this tracker's cap (CVAT_MAX_BODY_MB)")
    if request.content_length is not None and request.content_length > cap:
        raise too_big
    if not request.is_json:
        raise BadRequest("the body must be JSON {image, shapes, states} with Content-Type: application/json")
    raw = request.stream.read(cap + 1)
    if len(raw) > cap:
        raise too_big
    try:
        return json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None


def function_spec(settings: CvatSettings, model_version: str, state: str = "ready") -> dict:
    """The function as nuclio's dashboard describes it (only the fields CVAT reads, plus a few nuclio shows)."""
    return {
        "metadata": {
            "name": settings.function_name,
            "namespace": "nuclio",
            "labels": {"nuclio.io/project-name": "cvat"},
            "annotations": {
                "type": "tracker",
                "name": "Segment Anything 2.1 tracker (OpenVINO)",
                "version": "1",
                "spec": "",
                "framework": "openvino",
                "supported_shape_types": ",".join(SHAPE_TYPES),
                "model_version": model_version,
            },
        },
        "spec": {"description": DESCRIPTION, "runtime": "python:3.11", "handler": "main:handler"},
        "status": {"state": state, "httpPort": settings.http_port},
    }


def create_blueprint(settings: CvatSettings, tracker: CvatTracker, model) -> Blueprint:
    """model: the `ModelHolder` (for the version and load state shown in the listing)."""
    bp = Blueprint("cvat", __name__)

    def spec() -> dict:
        state = {"ready": "ready", "loading": "building"}.get(model.state, "error")
        return function_spec(settings, model.version, state)

    def not_found(name: str) -> tuple[Response, int]:
        return jsonify(error=f"function {name!r} not found; this service serves {settings.function_name!r}"), 404

    @bp.get("/api/functions")
    def functions():
        return jsonify({settings.function_name: spec()})

    @bp.get("/api/functions/<name>")
    def function(name: str):
        if name != settings.function_name:
            return not_found(name)
        return jsonify(spec())

    @bp.post("/api/function_invocations")
    def invoke():
        name = request.headers.get("x-nuclio-function-name", "")
        if not name:
            raise BadRequest("the x-nuclio-function-name header is missing; CVAT sets it in dashboard invoke mode")
        if name != settings.function_name:
            return not_found(name)
        body = _read_json(settings.max_body_bytes)
        return jsonify(tracker.track(body))

    @bp.errorhandler(BackendError)
    def _backend_error(e: BackendError):
        return jsonify(error=str(e)), e.status

    return bp
