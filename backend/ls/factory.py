"""Build the Label Studio adapter's service from settings (the in-process app and every Ray replica use this).

Also what the Ray front needs to route LS requests by task (`route_task`, `route_webhook`): the front forwards the LS
protocol without knowing it, so the wiring (`backend.app.build_service`) hands it these two readers.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from backend.ls import taskio
from backend.ls.errors import BackendError
from backend.ls.lsclient import LabelStudioClient
from backend.ls.service import TrackingService
from backend.ls.webhooks import ACTIONS
from backend.serving.media import MediaResolver
from backend.serving.model import ModelHolder
from backend.settings import Settings

logger = logging.getLogger(__name__)


def build_tracking_service(settings: Settings) -> TrackingService:
    """The LS service: the model loads in the background (health says so), an LS client for reads and writes."""
    model = ModelHolder(settings)
    model.start()
    media = MediaResolver(settings.media)
    client = LabelStudioClient(settings.media.ls_url, media.tokens, settings.media.timeout_s) \
        if settings.media.ls_url else None
    if client is None:
        logger.warning("LABEL_STUDIO_URL is not set: interactive answers work, but complete results cannot be "
                       "written into Label Studio and LS-hosted media cannot be downloaded")
    return TrackingService(settings, model, media, client)


route_task = taskio.task_id_of  # an LS task object -> its id (BadRequest when it has none)


def route_webhook(body: Mapping) -> int | None:
    """The task an LS webhook is for, or None when any replica may answer it (an action we ignore, no task id:
    every replica gives the same answer or error as the in-process service)."""
    if body.get("action") not in ACTIONS:
        return None
    try:
        return taskio.task_id_of(body.get("task"))
    except BackendError:
        return None
