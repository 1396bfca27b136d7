"""End-to-end tests: every test under tests/e2e (and any test using `label_studio`) is marked `e2e` (tests/conftest.py), and
they share one real Label Studio per test session (the `label_studio` and `backend` fixtures live in tests/conftest.py
so the fault and load suites reuse the same LS instead of starting their own)."""

import pytest

from tests.e2e import backend_server


@pytest.fixture(scope="session")
def backend_instant(label_studio, model_128_f32, tmp_path_factory) -> backend_server.BackendServer:
    """The backend with the product's click defaults (INTERACTIVE_WAIT_S=0: a click answers once its frame is ready,
    PREDICT_TIME_BUDGET_S=20), wired to `label_studio`; its log must end without a traceback."""
    server = backend_server.start_backend(model_128_f32, tmp_path_factory.mktemp("backend-instant"),
                                          ls_url=label_studio.url, token=label_studio.token,
                                          media_root=label_studio.media_root,
                                          extra_env={"INTERACTIVE_WAIT_S": "0", "PREDICT_TIME_BUDGET_S": "20"})
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
