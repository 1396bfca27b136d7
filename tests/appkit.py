"""Helpers for tests of the Flask app: frames on disk, label configs and LS region dicts as the editor sends them."""
from __future__ import annotations

import base64
import contextlib
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from backend.ls.maskurl import value_mask
from backend.ls.rle import mask_to_rle
from backend.ls.tasktrack import TaskTracker

N = 16  # frames in the app tests' task


def basic_auth(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic_auth("ls", "secret")
FRAMES_CONFIG = ('<View><Image name="frames" valueList="$frames"/>'
                 '<BrushLabels name="mask" toName="frames"><Label value="Car"/><Label value="Person"/>'
                 '<Label value="Car#1"/><Label value="Car#2"/></BrushLabels>'
                 '<KeyPointLabels name="kp" toName="frames" smart="true"><Label value="Car"/><Label value="Person"/>'
                 '<Label value="Car#1"/><Label value="Car#2"/></KeyPointLabels>'
                 '<RectangleLabels name="box" toName="frames" smart="true"><Label value="Car"/><Label value="Person"/>'
                 '</RectangleLabels></View>')
VIDEO_CONFIG = ('<View><Labels name="videoLabels" toName="video"><Label value="Car"/><Label value="Person"/></Labels>'
                '<Video name="video" value="$video" framerate="25.0"/>'
                '<VideoRectangle name="box" toName="video" smart="true"/></View>')


def extract_frames(video: Path, out: Path, count: int) -> tuple[int, int]:
    """Write the first `count` frames of `video` as JPEGs out/00000.jpg...; returns (width, height)."""
    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    for i in range(count):
        ok, frame = cap.read()
        assert ok, f"{video} has fewer than {count} frames"
        cv2.imwrite(str(out / f"{i:05d}.jpg"), frame)
    cap.release()
    return frame.shape[1], frame.shape[0]


def write_video(frames: Path, out: Path, fps: float) -> None:
    """Encode the JPEGs in `frames` (sorted) into an mp4 at `fps`."""
    paths = sorted(frames.glob("*.jpg"))
    first = cv2.imread(str(paths[0]))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.shape[1], first.shape[0]))
    for p in paths:
        writer.write(cv2.imread(str(p)))
    writer.release()


def frames_task(task_id: int, folder: str, count: int, **extra) -> dict:
    data = {"frames": [f"/data/local-files/?d={folder}/{i:05d}.jpg" for i in range(count)]}
    return {"id": task_id, "data": data, "annotations": [], "drafts": [], "predictions": [], **extra}


def rect(rid: str, frame: int, x: float, y: float, w: float, h: float, size, label="Car") -> dict:
    return {"id": rid, "from_name": "box", "to_name": "frames", "type": "rectanglelabels",
            "original_width": size[0], "original_height": size[1], "image_rotation": 0, "item_index": frame,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}


def point(rid: str, frame: int, x: float, y: float, size, label="Car", positive=True) -> dict:
    return {"id": rid, "from_name": "kp", "to_name": "frames", "type": "keypointlabels", "is_positive": positive,
            "original_width": size[0], "original_height": size[1], "image_rotation": 0, "item_index": frame,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}}


def brush(rid: str, frame: int, mask: np.ndarray, label="Car") -> dict:
    return {"id": rid, "from_name": "mask", "to_name": "frames", "type": "brushlabels",
            "original_width": mask.shape[1], "original_height": mask.shape[0], "image_rotation": 0,
            "item_index": frame, "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}}


def brushes(results: list[dict]) -> list[dict]:
    """The brush-mask results (the backend also echoes the keypoint/rectangle prompts)."""
    return [r for r in results if r["type"] == "brushlabels"]


def masks_of(results: list[dict]) -> dict[tuple[str, int], np.ndarray]:
    """(region id, item_index) -> bool mask of every brush result."""
    return {(r["id"], r["item_index"]): value_mask(r["value"], r["original_height"], r["original_width"])
            for r in results if r["type"] == "brushlabels"}


def masks_by_frame(results: list[dict]) -> dict[int, np.ndarray]:
    """item_index -> bool mask of every brush result (one object's results), whichever form its mask came in."""
    return {frame: mask for (_, frame), mask in masks_of(results).items()}


def as_saved(results: list[dict]) -> list[dict]:
    """Results as the editor saves (or sends in a context) what it got from us: a brush region that came as a PNG
    data URL is saved as the RLE of the image's alpha channel (LSF `Region2RLE`), every other field unchanged."""
    out = []
    for r in results:
        value = r.get("value") or {}
        if r.get("type") == "brushlabels" and "maskDataURL" in value:
            mask = value_mask(value, r["original_height"], r["original_width"])
            value = {**{k: v for k, v in value.items() if k != "maskDataURL"}, "rle": mask_to_rle(mask)}
            r = dict(r, value=value)
        out.append(r)
    return out


def predict(client, task: dict, config: str, context: list | None, **kw):
    body = {"tasks": [task], "label_config": config, "project": "1.1700000000",
            "params": {"login": None, "password": None, "context": None if context is None else {"result": context}}}
    return client.post("/predict", json=body, **kw)


def wait_job(client, task_id: int, timeout: float = 120.0, **kw) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.get(f"/jobs/{task_id}", **kw).get_json()
        if status.get("state") in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job of task {task_id} did not finish in {timeout} s")


def tracked_box(client, task_id: int, size, **task_kw) -> tuple[dict, dict]:
    """A cup task with one box on frame 0 (region r1), tracked to the end: (task, the box result)."""
    task = frames_task(task_id, "cup", N, **task_kw)
    box = rect("r1", 0, 30, 20, 40, 60, size)
    r = predict(client, task, FRAMES_CONFIG, [box], headers=AUTH)
    assert r.status_code == 200, r.get_data(as_text=True)
    wait_job(client, task_id, headers=AUTH)
    return task, box


def wait_ready(client, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while client.get("/health").status_code != 200:
        assert time.monotonic() < end, "model did not load"
        time.sleep(0.1)


def drop_session(service, task_id: int) -> None:
    """Close a task's tracking session as a restart or an LRU eviction does (`TrackingService.drop`; before the
    session store landed: `_drop` under the service lock)."""
    if hasattr(service, "drop"):
        service.drop(task_id)
    else:
        with service._lock:
            service._drop(task_id)


@contextlib.contextmanager
def held_jobs(jobs, task_id: int, timeout_s: float = 60.0):
    """Hold `task_id`'s propagation jobs after their first frame until the block ends (or the job is cancelled), so
    a test sees a job that is certainly still running. Frames answered on the request thread are not held."""
    release, request_thread = threading.Event(), threading.get_ident()
    record = TaskTracker.record

    def held(self, result):
        record(self, result)
        if self.task_id == task_id and threading.get_ident() != request_thread:
            end = time.monotonic() + timeout_s
            while not release.wait(0.02) and time.monotonic() < end:
                job = jobs.get(task_id)
                if job is not None and job.cancel_event.is_set():
                    return
    TaskTracker.record = held
    try:
        yield
    finally:
        release.set()
        TaskTracker.record = record
