"""Personal access tokens as a real Label Studio 1.23.2 issues them (POST /api/token/), not a fake's: the LS client
exchanges the PAT at /api/token/refresh/, reads and writes predictions, downloads LS-hosted media with it, refreshes
an access token LS has stopped accepting, and a revoked PAT gives a 502 naming LABEL_STUDIO_API_KEY."""
from __future__ import annotations

import numpy as np
import pytest
import requests

from backend.ls.lsclient import LabelStudioClient
from backend.serving.errors import BackendError
from backend.serving.media import MediaResolver, MediaSettings
from backend.serving.tokens import TokenProvider, is_jwt
from tests import appkit as kit
from tests.e2e.ls_server import FRAMES_CONFIG, create_pat


@pytest.fixture
def pat(label_studio) -> str:
    return create_pat(label_studio)


@pytest.fixture(scope="module")
def task_with_upload(label_studio, tmp_path_factory):
    """A frames project whose one task points at an image uploaded into LS (/data/upload/...: needs the token)."""
    api = label_studio.api
    project = api.create_project("pat e2e", FRAMES_CONFIG)
    img = tmp_path_factory.mktemp("pat") / "frame.png"
    import cv2
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[10:30, 20:40] = (0, 200, 0)
    cv2.imwrite(str(img), frame)
    (task,) = api.upload_file(project, img)
    return project, task, api.get_task(task), frame


def test_ls_issues_a_jwt_pat_and_the_client_reads_and_writes_with_it(label_studio, pat, task_with_upload):
    _, task, _, _ = task_with_upload
    assert is_jwt(pat)
    provider = TokenProvider(label_studio.url, pat, timeout_s=10)
    assert provider.refreshable
    header = provider.headers()["Authorization"]
    assert header.startswith("Bearer ") and header != f"Bearer {pat}", "the PAT must be exchanged, not sent"
    client = LabelStudioClient(label_studio.url, provider, timeout_s=30)
    assert client.get_task(task)["id"] == task
    mask = np.zeros((48, 64), bool)
    mask[5:20, 5:30] = True
    created = client.create_prediction(task, [kit.brush("sam2-1-0", 0, mask)], score=None, model_version="pat-e2e")
    client.update_prediction(created["id"], [kit.brush("sam2-1-0", 0, ~mask)], score=None, model_version="pat-e2e")
    stored = [p for p in client.list_predictions(task) if p["model_version"] == "pat-e2e"]
    assert [p["id"] for p in stored] == [created["id"]]
    assert np.array_equal(kit.masks_of(stored[0]["result"])[("sam2-1-0", 0)], ~mask)


def test_media_from_ls_uploads_is_fetched_with_the_pat(label_studio, pat, task_with_upload, tmp_path):
    _, _, task, frame = task_with_upload
    url = next(iter(task["data"].values()))
    assert "/data/upload/" in url
    anonymous = requests.get(label_studio.url + url, timeout=10, allow_redirects=False)
    assert anonymous.status_code in (301, 302, 401, 403), "the upload must need the token for this test to mean much"
    resolver = MediaResolver(MediaSettings(ls_url=label_studio.url, api_key=pat, cache_dir=tmp_path / "cache",
                                           timeout_s=10))
    path = resolver.fetch(url, task_id=task["id"])
    import cv2
    assert np.array_equal(cv2.imread(str(path)), frame)


def test_an_access_token_ls_stops_accepting_is_refreshed_once(label_studio, pat, task_with_upload):
    _, task, _, _ = task_with_upload
    provider = TokenProvider(label_studio.url, pat, timeout_s=10)
    client = LabelStudioClient(label_studio.url, provider, timeout_s=30)
    first = provider.headers()
    # LS refuses a forged access token with the same shape: the client must refresh and retry, not give up
    provider._access = first["Authorization"].split(" ", 1)[1][:-4] + "AAAA"
    assert client.get_task(task)["id"] == task
    assert provider.headers()["Authorization"] != "Bearer " + provider._access[:-4] + "AAAA"


def test_a_revoked_pat_is_a_502_naming_the_variable(label_studio, pat, task_with_upload):
    _, task, _, _ = task_with_upload
    api = label_studio.api
    api.request("POST", "/api/token/blacklist/", json={"refresh": pat})
    label_studio.pat = None  # the next create_pat makes a new one
    client = LabelStudioClient(label_studio.url, TokenProvider(label_studio.url, pat, timeout_s=10), timeout_s=10)
    with pytest.raises(BackendError) as ei:
        client.get_task(task)
    assert ei.value.status == 502 and "LABEL_STUDIO_API_KEY" in str(ei.value)
    assert create_pat(label_studio) != pat
