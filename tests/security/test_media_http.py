"""Hostile media URLs and bomb frames through the HTTP front door: a one-sentence 4xx JSON answer, never a 500, no
server path in it (the app fixture: a 128 px model, LOCAL_FILES_DOCUMENT_ROOT holding cup's frames, no LS URL).
Every host in these URLs is a loopback address, so even a regressed parser cannot send traffic elsewhere."""
from __future__ import annotations

import pytest
from PIL import Image

from tests import appkit as kit
from tests.appkit import AUTH, N


def _answer(client, task, size):
    return kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r1", 0, 30, 20, 40, 60, size)], headers=AUTH)


@pytest.mark.parametrize("bad", [
    "/data/local-files/?d=%00",                       # before: ValueError('embedded null byte') -> 500
    "/data/local-files/?d=cup/..%2F..%2Fetc/passwd",
    "/data/local-files/?d=cup/\u2025/x.jpg",
    "http://127.0.0.1:1\\@127.0.0.2:1/x.jpg",         # the confirmed token-leak shape (loopback addresses only)
    "http://127.0.0.1:1\t@127.0.0.2:1/x.jpg",
    "http://user@127.0.0.1:1/x.jpg",
    "http://127.1:1/x.jpg",
])
def test_hostile_frame_url_is_a_4xx_sentence(client, media, bad):
    root, size = media
    task = kit.frames_task(401, "cup", N)
    task["data"]["frames"][3] = bad
    resp = _answer(client, task, size)
    body = resp.get_json()
    assert resp.status_code == 400, body
    assert set(body) == {"error"} and "Traceback" not in body["error"] and str(root) not in body["error"]


def test_decompression_bomb_frame_is_400_without_server_paths(client, media, tmp_path_factory):
    # before: PIL's DecompressionBombError escaped the frame reader: a 500 "internal error"
    root, size = media
    bomb_dir = root / "bomb"
    bomb_dir.mkdir(exist_ok=True)
    Image.new("1", (15000, 15000)).save(bomb_dir / "00000.jpg".replace(".jpg", ".png"))
    task = kit.frames_task(402, "cup", N)
    task["data"]["frames"][0] = "/data/local-files/?d=bomb/00000.png"
    resp = _answer(client, task, size)
    body = resp.get_json()
    assert resp.status_code == 400, body
    assert "too large" in body["error"] and str(root) not in body["error"]
