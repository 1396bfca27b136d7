"""Fixtures of the scale-out e2e tests: a local Ray cluster (loopback, 2 CPUs, small object store) with 2 tracking
replicas of the 128 px test model, the front (docker/entrypoint.sh, TRACKING_BACKEND=ray) and the real Label Studio
of tests/conftest.py (shared with tests/e2e). Every test in a *_e2e.py file here is marked `e2e`; without Ray installed they fail with the command that installs it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.e2e.backend_server import start_backend

_HERE = Path(__file__).resolve().parent
REPLICA_ENV = {"PRECISION": "f32", "OV_THREADS": "1", "JOB_WORKERS": "2", "MAX_SESSIONS": "2",
               "PREDICT_TIME_BUDGET_S": "10", "WRITE_INTERVAL_S": "1", "LOG_LEVEL": "INFO"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(item.path).resolve().parent == _HERE and Path(item.path).name.endswith("_e2e.py"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def ray_cluster(label_studio, model_128_f32, tmp_path_factory):  # noqa: F811
    if importlib.util.find_spec("ray") is None:
        pytest.fail("Ray is not installed; run `.venv/bin/pip install -r requirements-ray.txt` "
                    "(scripts/test.sh does)", pytrace=False)
    from tests.scale.ray_cluster import start_cluster

    cluster = start_cluster(num_cpus=2)
    work = tmp_path_factory.mktemp("replicas")
    env = {**REPLICA_ENV, "MODEL_DIR": str(model_128_f32), "LABEL_STUDIO_URL": label_studio.url,
           "LABEL_STUDIO_API_KEY": label_studio.token, "LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.media_root),
           "MEDIA_CACHE_DIR": str(work / "media-cache"), "DATA_DIR": str(work / "data")}
    try:
        cluster.deploy(env, replicas=2, replica_cpus=1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def front(ray_cluster, label_studio, model_128_f32, tmp_path_factory):  # noqa: F811
    """The LS-facing Flask front under gunicorn, forwarding to the replicas; its log must end without a traceback."""
    server = start_backend(model_128_f32, tmp_path_factory.mktemp("front"), ls_url=label_studio.url,
                           token=label_studio.token, media_root=label_studio.media_root,
                           extra_env={"TRACKING_BACKEND": "ray", "RAY_SERVE_URL": ray_cluster.serve_url,
                                      "RAY_REQUEST_TIMEOUT_S": "90"})
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
