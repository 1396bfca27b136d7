"""The backend's own CPU cost of one interactive /predict on a grown frames task, in-process (no LS, no HTTP server).

    python benchmarks/predict_cost.py --frames 200 --objects 3 --clicks 20            # default: 128 px model
    python benchmarks/predict_cost.py --context-brushes --profile                      # context also holds our masks

Builds the state a task reaches after tracking: `--objects` objects clicked on frame 0 of `--frames` frames of
cup.mp4 (640x360, /work/shared/clips), then every frame of every object filled with a mask (the frame-0 mask shifted
by one pixel per frame: distinct masks, as a real track has), recorded as propagation records them; no propagation
runs during the measurement. Then it sends the request LS sends for an embedded click: the task with our prediction
(every tracked mask as RLE, as LS stores it) and the context (the label's keypoints; with --context-brushes also
every brush result of our last answer, which is what a context holding our earlier answers costs). The prompts do
not change, so no engine work runs: what is measured is parsing the body, folding the context, rendering the answer
and its JSON. Prints the CPU ms per request (p50/p95, thread CPU time of the request), the answer's size and the
sha256 of the answer bytes (same prompts, same masks: the same bytes before and after an optimisation).
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import logging
import pstats
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import appkit as kit  # noqa: E402
from tests import models  # noqa: E402
from tests.servicekit import make_app  # noqa: E402

log = logging.getLogger("predict_cost")
LABELS = ("Car", "Person", "Car#1", "Car#2")  # one label per object: a point inside another object's mask joins it


def grow(tracker, frames: int) -> None:
    """Fill every frame of every object with a distinct smooth mask (an ellipse moving one pixel per frame, as a
    tracked object's mask looks), kept as `TaskTracker.record` keeps propagated frames."""
    from backend.ls.tasktrack import mask_digest
    w, h = tracker.size
    yy, xx = np.mgrid[0:h, 0:w]
    with tracker.lock:
        for i, obj in enumerate(sorted(tracker.book.labels)):
            for f in range(1, frames):
                cx, cy = w * (0.2 + 0.3 * i) + f % 80, h * 0.5 + (f % 50) - 25
                m = ((xx - cx) / (w * 0.12)) ** 2 + ((yy - cy) / (h * 0.2)) ** 2 <= 1
                bits = np.packbits(m.ravel())
                tracker.packed[(obj, f)] = zlib.compress(bits.tobytes(), 1)
                tracker.emitted_digests.setdefault((obj, f), set()).add(mask_digest(bits))
                tracker._rendered.pop((obj, f), None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--clicks", type=int, default=20)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--context-brushes", action="store_true", help="the context also carries our last answer's masks")
    p.add_argument("--profile", action="store_true", help="print the top functions of one request (cProfile)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="predict_cost_"))
    size = kit.extract_frames(Path("/work/shared/clips/cup.mp4"), tmp / "media" / "cup", a.frames)
    app = make_app(tmp / "media", models.export_dir(a.image_size, "f32"), tmp, INTERACTIVE_WAIT_S=0)
    service = app.config["SERVICE"]
    client = app.test_client()
    task = kit.frames_task(7, "cup", a.frames)
    points = []
    try:
        for i in range(a.objects):  # one object per click, spread over the frame
            points.append(kit.point(f"kp{i}", 0, 20 + 25 * i, 50, size, label=LABELS[i % len(LABELS)]))
            r = kit.predict(client, task, kit.FRAMES_CONFIG, points, headers=kit.AUTH)
            assert r.status_code == 200, r.get_data(as_text=True)
            job = service.jobs.cancel(7)  # only the clicked frame: no propagation while we measure
            if job is not None:
                job.wait(60)
                job.state = "done"  # else an unchanged click restarts the cancelled propagation (and grows the track)
        entry = service.sessions.peek(7)
        grow(entry.tracker, a.frames)
        answer = kit.predict(client, task, kit.FRAMES_CONFIG, points, headers=kit.AUTH).get_json()["results"][0]
        task = dict(task, predictions=[{"id": 1, "model_version": answer["model_version"], "result": answer["result"],
                                        "score": None}])
        context = points + ([r for r in answer["result"] if r["type"] == "brushlabels"] if a.context_brushes else [])
        body = {"tasks": [task], "label_config": kit.FRAMES_CONFIG, "project": "1.1700000000",
                "params": {"login": None, "password": None, "context": {"result": context}}}
        raw = json.dumps(body).encode()
        post = lambda: client.post("/predict", data=raw, content_type="application/json", headers=kit.AUTH)  # noqa
        first = post()
        assert first.status_code == 200, first.get_data(as_text=True)[:300]
        digest = hashlib.sha256(first.get_data()).hexdigest()
        cpu, wall = [], []
        for _ in range(a.clicks):
            t0, c0 = time.perf_counter(), time.thread_time()
            r = post()
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - t0)
            assert hashlib.sha256(r.get_data()).hexdigest() == digest, "the answer changed between identical clicks"
        if a.profile:
            prof = cProfile.Profile()
            prof.runcall(post)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        out = {"frames": a.frames, "objects": a.objects, "frame_size": size, "context_brushes": a.context_brushes,
               "request_bytes": len(raw), "answer_bytes": len(first.get_data()),
               "answer_results": len(answer["result"]), "answer_sha256": digest,
               "cpu_ms_p50": 1000 * float(np.percentile(cpu, 50)), "cpu_ms_p95": 1000 * float(np.percentile(cpu, 95)),
               "wall_ms_p50": 1000 * float(np.percentile(wall, 50))}
        print(json.dumps(out, indent=1))
        if a.json:
            a.json.write_text(json.dumps(out, indent=1))
    finally:
        service.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
