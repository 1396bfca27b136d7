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
from tests.fakehttp import LEGACY, FakeHost

CLIPS = Path(os.environ.get("CLIPS_DIR", "/work/shared/clips"))


def pytest_configure(config):
    warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")


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
