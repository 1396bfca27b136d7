"""Faults inside one backend process (in-process app, loopback only): the media host dies in the middle of a
download, and the spill folder becomes unwritable while a job needs it. Each answers with a clear 4xx/5xx that
says whose fault it is, leaves no half-written file, and the service serves the next request normally."""
from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from tests import appkit as kit
from tests.appkit import AUTH
from tests.servicekit import make_app, running


class DyingMediaHost:
    """A raw loopback HTTP server: while `die` is set it sends the headers and `cut` bytes of the body, then closes
    the connection (a crashed host); otherwise it sends the whole file."""

    def __init__(self, body: bytes, cut: int):
        self.body, self.cut, self.die, self.requests = body, cut, True, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        with conn:
            conn.recv(65536)
            self.requests += 1
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len(self.body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            try:
                conn.sendall(head + (self.body[:self.cut] if self.die else self.body))
                if self.die:
                    time.sleep(0.2)
                    conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()


def _video_box(rid="v1"):
    return {"id": rid, "from_name": "box", "to_name": "video", "type": "videorectangle",
            "value": {"labels": ["Car"], "sequence": [{"frame": 1, "x": 20, "y": 20, "width": 30, "height": 40,
                                                       "enabled": True, "rotation": 0, "time": 0.04}]}}


def test_media_host_dying_mid_download_is_a_502_and_leaves_no_partial_file(media, model_128_f32, tmp_path):
    root, _ = media
    host = DyingMediaHost((root / "cup.mp4").read_bytes(), cut=20_000)
    try:
        with running(make_app(root, model_128_f32, tmp_path, ALLOWED_MEDIA_HOSTS=f"127.0.0.1:{host.port}",
                              MEDIA_TIMEOUT_S=5)) as app:
            client = app.test_client()
            task = {"id": 701, "data": {"video": f"http://127.0.0.1:{host.port}/cup.mp4"}}
            t0 = time.monotonic()
            resp = kit.predict(client, task, kit.VIDEO_CONFIG, [_video_box()], headers=AUTH)
            body = resp.get_json()
            assert resp.status_code == 502, body
            assert "Traceback" not in body["error"] and str(tmp_path) not in body["error"], body
            assert time.monotonic() - t0 < 30
            cache = tmp_path / "cache"
            leftovers = [p for p in cache.rglob("*") if p.is_file() and p.name != ".owner.lock"] \
                if cache.exists() else []  # the owner lock (backend/serving/leftovers.py) is not a download
            assert not leftovers, f"a cut download left {leftovers}"
            assert client.get("/health").status_code == 200
            # the host comes back: the same request now works (nothing poisoned the cache)
            host.die = False
            resp = kit.predict(client, task, kit.VIDEO_CONFIG, [_video_box()], headers=AUTH)
            assert resp.status_code == 200, resp.get_json()
            (res,) = resp.get_json()["results"][0]["result"]
            assert res["id"] == "v1" and res["value"]["sequence"]
    finally:
        host.close()


@pytest.fixture(scope="module")
def long_frames(tmp_path_factory, clips_dir):
    """40 frames of box.mp4 (more than the 32 frames of memories the engine keeps in RAM per object)."""
    root = tmp_path_factory.mktemp("long")
    kit.extract_frames(clips_dir / "box.mp4", root / "box40", 40)
    return root


def test_spill_folder_unwritable_while_a_job_runs_is_a_clear_error_and_the_service_recovers(long_frames,
                                                                                           model_128_f32, tmp_path):
    with running(make_app(long_frames, model_128_f32, tmp_path, PREDICT_TIME_BUDGET_S=1)) as app:
        client, service = app.test_client(), app.config["SERVICE"]
        spill = tmp_path / "data" / "spill"
        assert spill.is_dir()
        box = kit.rect("r", 0, 25, 25, 50, 50, (640, 480))
        with kit.held_jobs(service.jobs, 711):
            resp = kit.predict(client, kit.frames_task(711, "box40", 40), kit.FRAMES_CONFIG, [box], headers=AUTH)
            assert resp.status_code == 200, resp.get_json()
            assert service.jobs.get(711).state == "running"
            # the folder disappears under the running job and a file takes its place: every write in it fails
            # (a chmod would not stop root, which the tests may run as)
            shutil.rmtree(spill)
            spill.write_bytes(b"not a folder")
        status = kit.wait_job(client, 711, headers=AUTH, timeout=240)
        # the job needs the spill folder after 32 frames: it degrades (memories dropped, not spilled) or it fails
        # saying what to fix; never a silent hang, never a traceback
        assert status["state"] in ("done", "failed"), status
        if status["state"] == "failed":
            assert "DATA_DIR" in status["error"] and "Traceback" not in status["error"], status
        # a new task while the folder is broken: a 503 naming DATA_DIR (the operator's to fix), not a 500
        resp = kit.predict(client, kit.frames_task(712, "box40", 40), kit.FRAMES_CONFIG, [box], headers=AUTH)
        assert resp.status_code in (200, 503), resp.get_json()
        if resp.status_code == 503:
            assert "DATA_DIR" in resp.get_json()["error"]
        health = client.get("/health")
        assert health.status_code == 200 or "DATA_DIR" in health.get_json().get("error", ""), health.get_json()
        # the operator fixes the folder: the next prompt works without a restart, and memories spill again
        spill.unlink()
        spill.mkdir()
        resp = kit.predict(client, kit.frames_task(713, "box40", 40), kit.FRAMES_CONFIG, [box], headers=AUTH)
        assert resp.status_code == 200, resp.get_json()
        assert kit.wait_job(client, 713, headers=AUTH, timeout=240)["state"] == "done"
        assert any(spill.iterdir()), "memories beyond the resident 32 frames should spill again"
        assert client.get("/health").status_code == 200
