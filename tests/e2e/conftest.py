"""End-to-end fixtures: one real Label Studio per test session (see ls_server.py). Every test here is marked `e2e`."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.e2e.backend_server import BackendServer, start_backend
from tests.e2e.ls_server import LS_BIN, LabelStudioServer, start_label_studio

logger = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudioServer:
    """A running Label Studio with `.url`, `.token`, `.media_root` (its LOCAL_FILES_DOCUMENT_ROOT) and `.api` (LSApi).

    The database starts as a copy of a cached migrated one (.cache/label-studio-db/, saves ~75 s per session);
    LS_E2E_FRESH_DB=1 migrates from scratch instead.
    """
    if not LS_BIN.is_file():
        pytest.fail(f"Label Studio is not installed ({LS_BIN} is missing); run `bash scripts/install_label_studio.sh`.",
                    pytrace=False)
    data_dir = tmp_path_factory.mktemp("ls-data")
    media_root = tmp_path_factory.mktemp("ls-media")
    server = start_label_studio(data_dir, media_root, db_template=os.environ.get("LS_E2E_FRESH_DB") != "1")
    logger.info("Label Studio at %s ready in %.1f s", server.url, server.startup_s)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def backend(label_studio, model_128_f32, tmp_path_factory) -> BackendServer:
    """The backend under gunicorn (docker/entrypoint.sh) wired to `label_studio`, with basic auth; its log must end
    without a traceback."""
    server = start_backend(model_128_f32, tmp_path_factory.mktemp("backend"), ls_url=label_studio.url,
                           token=label_studio.token, media_root=label_studio.media_root)
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
