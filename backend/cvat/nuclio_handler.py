"""nuclio entry points: `init_context` loads the model once per worker, `handler` answers CVAT tracker calls.

The function's environment configures it like the service (MODEL_DIR, PRECISION, OV_THREADS, CVAT_* caps, see
backend/settings.py). Errors answer JSON {"error": ...} with a status that says whose fault it is; CVAT shows the
message to the annotator.
"""
from __future__ import annotations

import json
import logging
import os
import uuid

from backend.cvat.tracker import CvatTracker
from backend.serving.errors import BackendError
from backend.serving.model import ModelHolder
from backend.settings import Settings

logger = logging.getLogger(__name__)


def init_context(context) -> None:
    settings = Settings.from_env(os.environ)
    model = ModelHolder(settings)
    model.start()
    model.get(timeout=600)  # a nuclio worker is not ready before its model is
    context.user_data.model = model
    context.user_data.tracker = CvatTracker(settings.cvat, model.get)
    context.user_data.max_body = settings.cvat.max_body_bytes
    context.logger.info(f"SAM 2 tracker ready: {model.version}")


def _reply(context, status: int, body: dict):
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json", status_code=status)


def handler(context, event):
    body = event.body
    try:
        if isinstance(body, (bytes, bytearray, str)):
            if len(body) > context.user_data.max_body:
                return _reply(context, 413, {"error": f"the body is {len(body)} bytes; this tracker accepts at most "
                                                      f"{context.user_data.max_body} (CVAT_MAX_BODY_MB)"})
            try:
                body = json.loads(body or b"null")
            except ValueError:
                return _reply(context, 400, {"error": "the body must be JSON {image, shapes, states}"})
        return _reply(context, 200, context.user_data.tracker.track(body))
    except BackendError as e:
        context.logger.warn(f"tracker call refused ({e.status}): {e}")
        return _reply(context, e.status, {"error": str(e)})
    except Exception:
        ref = uuid.uuid4().hex[:8]
        logger.exception("unexpected error %s in the CVAT tracker", ref)
        return _reply(context, 500, {"error": f"internal error {ref}; the function log has the details"})
