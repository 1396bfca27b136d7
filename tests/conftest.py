import logging
import os
import warnings
from pathlib import Path

import pytest

from backend.app import create_app
from backend.serving.media import MediaResolver, MediaSettings
from backend.settings import Settings
from tests import appkit as kit
from tests import models
from tests.appkit import N
from tests.e2e import backend_server, ls_server
from tests.fakehttp import LEGACY, FakeHost

CLIPS = Path(os.environ.get("CLIPS_DIR", "/work/shared/clips"))
_HERE = Path(__file__).resolve().parent
_E2E_DIR = _HERE / "e2e"
logger = logging.getLogger(__name__)


def pytest_configure(config):
    warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")


def pytest_collection_modifyitems(config, items):
    """Mark `e2e` every test that needs a real Label Studio: all of tests/e2e, and any test (tests/fault,
    tests/load) that uses the `label_studio` fixture."""
    for item in items:
        if _E2E_DIR in Path(item.path).resolve().parents or "label_studio" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    if not (CLIPS / "box.mp4").is_file():
        pytest.fail(f"test clips not found in {CLIPS}; set CLIPS_DIR to the folder with box.mp4, cup.mp4, carphone_pristine.mp4")
    return CLIPS


@pytest.fixture(scope="session")
def model_256_f32() -> Path:
    return models.export_dir(256, "f32")


@pytest.fixture(scope="session")
def model_256_bf16() -> Path:
    return models.export_dir(256, "bf16")


@pytest.fixture(scope="session")
def model_128_f32() -> Path:
    return models.export_dir(128, "f32")


# ---- the Flask app on a random-init 128 px model, with frames of cup.mp4 under a local-files root ----
@pytest.fixture(scope="session")
def media(tmp_path_factory, clips_dir):
    root = tmp_path_factory.mktemp("media")
    size = kit.extract_frames(clips_dir / "cup.mp4", root / "cup", N)
    kit.write_video(root / "cup", root / "cup.mp4", fps=25.0)
    (root / "bad").mkdir()
    (root / "bad" / "00000.jpg").write_bytes(b"this is not a jpeg")
    (root / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated garbage")
    return root, size


@pytest.fixture(scope="session")
def app(media, model_128_f32, tmp_path_factory):
    root, _ = media
    env = {"MODEL_DIR": str(model_128_f32), "LOCAL_FILES_DOCUMENT_ROOT": str(root), "PRECISION": "f32",
           "MEDIA_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "DATA_DIR": str(tmp_path_factory.mktemp("d")),
           "PREDICT_TIME_BUDGET_S": "90", "INTERACTIVE_WAIT_S": "90", "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "secret",
           "ALLOWED_MEDIA_HOSTS": "media.example.org"}
    app = create_app(Settings.from_env(env))
    kit.wait_ready(app.test_client())
    yield app
    app.config["SERVICE"].shutdown()


@pytest.fixture()
def client(app):
    return app.test_client()


# ---- a fake Label Studio (werkzeug in a thread) and MediaResolvers pointed at it, for the media tests ----
@pytest.fixture
def ls():
    server = FakeHost("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def make(tmp_path, ls):
    def factory(**kw) -> MediaResolver:
        kw.setdefault("ls_url", ls.url)
        kw.setdefault("api_key", LEGACY)
        kw.setdefault("cache_dir", tmp_path / "cache")
        kw.setdefault("timeout_s", 5.0)
        return MediaResolver(MediaSettings(**kw))
    return factory


# ---- a real Label Studio 1.23.2 and the backend under gunicorn (tests/e2e, tests/fault, tests/load) ----
@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> ls_server.LabelStudioServer:
    """A running Label Studio with `.url`, `.token`, `.media_root` (its LOCAL_FILES_DOCUMENT_ROOT) and `.api` (LSApi).

    The database starts as a copy of a cached migrated one (.cache/label-studio-db/, saves ~75 s per session);
    LS_E2E_FRESH_DB=1 migrates from scratch instead.
    """
    if not ls_server.LS_BIN.is_file():
        pytest.fail(f"Label Studio is not installed ({ls_server.LS_BIN} is missing); "
                    "run `bash scripts/install_label_studio.sh`.", pytrace=False)
    data_dir = tmp_path_factory.mktemp("ls-data")
    media_root = tmp_path_factory.mktemp("ls-media")
    server = ls_server.start_label_studio(data_dir, media_root, db_template=os.environ.get("LS_E2E_FRESH_DB") != "1")
    logger.info("Label Studio at %s ready in %.1f s", server.url, server.startup_s)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def backend(label_studio, model_128_f32, tmp_path_factory) -> backend_server.BackendServer:
    """The backend under gunicorn (docker/entrypoint.sh) wired to `label_studio`, with basic auth; its log must end
    without a traceback."""
    server = backend_server.start_backend(model_128_f32, tmp_path_factory.mktemp("backend"), ls_url=label_studio.url,
                                          token=label_studio.token, media_root=label_studio.media_root)
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
