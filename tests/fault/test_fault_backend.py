"""Faults around a backend under gunicorn and a real Label Studio 1.23.2 (loopback only; the backend authenticates
with a personal access token LS issued):

- kill -9 in the middle of a propagation job, restart, prompt again: the session is rebuilt from LS, the saved
  annotation and our prediction survive, and exactly one prediction of our model version is left, complete;
- LS answers 5xx, then drops connections, while a job writes: the write is retried with backoff and lands when LS
  is back;
- the model folder is missing or corrupt at start: a clear 503 on /health naming MODEL_DIR, no crash loop.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import requests

from tests import appkit as kit
from tests.e2e.backend_server import AUTH, start_backend
from tests.e2e.frames_setup import create_frames_project
from tests.e2e.ls_server import create_pat, free_port
from tests.fault.proxy import LSProxy

NF = 48  # frames: more than the engine keeps resident per object (32), so memories spill to DATA_DIR/spill


def _until(cond, timeout: float, what: str, every: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = cond()
        if out:
            return out
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _ours(api, task: int, version: str) -> list[dict]:
    return [p for p in api.predictions(task) if p["model_version"] == version]


def _job(backend, task: int) -> dict:
    resp = requests.get(f"{backend.url}/jobs/{task}", auth=AUTH, timeout=5)
    return resp.json() if resp.status_code == 200 else {}


def test_kill_9_mid_job_restart_and_prompt_again_loses_nothing(label_studio, model_128_f32, clips_dir, tmp_path):
    api, pat, port = label_studio.api, create_pat(label_studio), free_port()
    work = tmp_path / "backend"
    env = {"PREDICT_TIME_BUDGET_S": "1", "WRITE_INTERVAL_S": "0.5"}

    def start():
        return start_backend(model_128_f32, work, ls_url=label_studio.url, token=pat,
                             media_root=label_studio.media_root, extra_env=env, port=port)
    backend = start()
    try:
        p = create_frames_project(api, label_studio.media_root, clips_dir / "box.mp4", backend.url, count=NF,
                                  folder="fault-kill", title="fault: kill -9")
        task, version = p.tasks[0], backend.get("/versions").json()["model_version"]
        box = kit.rect("kill-box", 0, 25, 25, 50, 50, p.size)
        answer = api.interactive(p.ml, task, [box])
        assert kit.brushes(answer["data"]["result"]), answer
        # the annotator accepts the suggestion and saves while the job still runs
        saved = api.create_annotation(task, [r for r in answer["data"]["result"] if r["type"] != "brushlabels"]
                                      + kit.brushes(answer["data"]["result"])[:1])
        def mid_job():
            s = _job(backend, task)
            running = s.get("state") == "running" and s.get("written_frames")
            return s if running and s["frames_done"] < s["frames_total"] - 8 else None
        status = _until(mid_job, 90, "a running job with a partial prediction written", every=0.05)
        spill = work / "data" / "spill"
        backend.kill()
        killed_at = time.time()
        partial = _ours(api, task, version)
        assert partial and len(kit.brushes(partial[0]["result"])) < NF, "the kill came too late to be mid-job"
        assert status["frames_done"] < NF

        backend = start()
        # leftovers of the dead process (spilled memories, half-downloaded media) are cleaned at start
        stale = [f for f in spill.rglob("*") if f.is_file() and f.stat().st_mtime < killed_at
                 and f.name != ".owner.lock"] if spill.exists() else []  # the folder's lock file is reused
        assert not stale, f"spill files of the killed process left behind: {stale[:3]}"
        assert not list((work / "media-cache").rglob("*.part*"))
        # prompt again (the box moved a little): the session is rebuilt from LS, object 1 stays object 1
        moved = kit.rect("kill-box", 0, 26, 25, 50, 50, p.size)
        again = api.interactive(p.ml, task, [moved])
        assert {r["id"].split("-")[1] for r in kit.brushes(again["data"]["result"])} == {"1"}
        done = _until(lambda: (o := _ours(api, task, version)) and len(kit.brushes(o[0]["result"])) == NF and o,
                      180, "a complete prediction after the restart")
        _until(lambda: _job(backend, task).get("state") in ("done", "failed"), 120, "the job to end")
        assert _job(backend, task)["state"] == "done"
        time.sleep(1.5)
        mine = _ours(api, task, version)
        assert len(mine) == 1, f"{len(mine)} predictions of {version}: the stale partial one stayed beside"
        assert len(kit.brushes(mine[0]["result"])) == NF and mine[0]["id"] == done[0]["id"]
        annotations = api.call("GET", f"/api/tasks/{task}/annotations/")
        assert [a["id"] for a in annotations] == [saved["id"]], "the saved annotation was lost or duplicated"
        assert annotations[0]["result"] == saved["result"]
    finally:
        backend.stop()
    assert "Traceback" not in backend.log().split("Booting worker")[-1], backend.log()[-3000:]


def test_ls_5xx_then_down_while_a_job_writes_retries_until_it_lands(label_studio, model_128_f32, clips_dir,
                                                                     tmp_path):
    api, proxy = label_studio.api, LSProxy(label_studio.url)
    backend = start_backend(model_128_f32, tmp_path / "backend", ls_url=proxy.url, token=create_pat(label_studio),
                            media_root=label_studio.media_root,
                            extra_env={"PREDICT_TIME_BUDGET_S": "1", "WRITE_INTERVAL_S": "0.5",
                                       "LS_WRITE_RETRY_S": "120"})
    try:
        p = create_frames_project(api, label_studio.media_root, clips_dir / "box.mp4", backend.url, count=24,
                                  folder="fault-5xx", title="fault: LS 5xx")
        task, version = p.tasks[0], backend.get("/versions").json()["model_version"]
        proxy.mode = "5xx"
        answer = api.interactive(p.ml, task, [kit.rect("ls-box", 0, 25, 25, 50, 50, p.size)])
        assert kit.brushes(answer["data"]["result"]), "the interactive answer must not depend on LS writes"
        _until(lambda: len(proxy.writes(503)) >= 2, 60, "two refused writes")
        t_refused = [time.monotonic()]
        status = _job(backend, task)
        assert status.get("state") != "done" or status.get("write_error"), status
        assert not _ours(api, task, version)
        proxy.mode = "down"
        time.sleep(4)
        assert backend.get("/health").status_code == 200
        proxy.mode = "pass"
        landed = _until(lambda: (o := _ours(api, task, version)) and len(kit.brushes(o[0]["result"])) == 24 and o,
                        90, "the prediction to land once LS is back")
        assert len(landed) == 1
        final = _until(lambda: (s := _job(backend, task)).get("state") in ("done", "failed") and s, 60, "job end")
        assert final["state"] == "done" and not final["write_error"] and final["written_frames"] == 24, final
        # backoff, not a busy loop: a handful of attempts over the outage, not hundreds
        refused = len(proxy.writes(503)) + len([s for s in proxy.seen if s[0] == "down"])
        assert 2 <= refused <= 30, f"{refused} write attempts during a ~{time.monotonic() - t_refused[0]:.0f} s outage"
    finally:
        backend.stop()
        proxy.close()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_model_folder_is_a_clear_503_without_a_crash_loop(model_128_f32, tmp_path, damage):
    model = tmp_path / "model"
    if damage == "missing":
        model_dir = Path("/nonexistent/sam2-model")
    else:
        shutil.copytree(model_128_f32, model)
        for f in model.glob("*.bin"):
            f.write_bytes(f.read_bytes()[:1000])  # truncated weights: the manifest still reads fine
        model_dir = model
    backend = start_backend(model_dir, tmp_path / "backend", ls_url="http://127.0.0.1:9", token="",
                            media_root=tmp_path, require_ready=False, timeout_s=60)
    try:
        answers = []
        for _ in range(10):
            resp = requests.get(backend.url + "/health", timeout=5)
            answers.append((resp.status_code, resp.json().get("state")))
            if answers[-1] == (503, "failed"):
                break
            time.sleep(1)
        assert answers[-1] == (503, "failed"), answers
        body = resp.json()
        assert "MODEL_DIR" in body["error"] and "Traceback" not in body["error"], body
        time.sleep(3)
        assert backend.proc.poll() is None, "the backend exited"
        assert requests.get(backend.url + "/health", timeout=5).status_code == 503
        predict = requests.post(backend.url + "/predict", auth=AUTH, timeout=10, json={
            "tasks": [{"id": 1, "data": {"frames": ["/data/local-files/?d=x.jpg"]}}],
            "label_config": kit.FRAMES_CONFIG, "params": {"context": {"result": []}}})
        assert predict.status_code in (400, 503) and "Traceback" not in predict.text
        log = backend.log()
        assert log.count("Booting worker") == 1, "gunicorn restarted its worker: a crash loop"
    finally:
        backend.stop()
