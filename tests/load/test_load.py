"""Load: 8 simulated annotators against one backend (gunicorn, as in production) and a real Label Studio 1.23.2, on
loopback only, bounded in time (LOAD_DURATION_S, default 120 s; e.g. LOAD_DURATION_S=900 for a local soak) and in
request count (every annotator thinks 0.3-1.5 s between actions), stopping by itself. It gates CI (scripts/test.sh).

Plain threads, not locust: locust needs gevent's monkey-patching of the whole interpreter, which fights pytest, the
harness's subprocess handling of LS and gunicorn, and requests' thread-local sessions used here; the mix is small
enough to drive directly.

The mix (seeded, reproducible): interactive prompts through LS's own endpoint (positive points and boxes, moved,
added or deleted) on one's own task and, for two annotators, on one shared task (different labels); saving
annotations (LS fires webhooks at the backend); unauthenticated webhooks straight at the backend; a batch "Retrieve
predictions" now and then. Caps at their defaults but MAX_SESSIONS (6 for 7 tasks: sessions are evicted and rebuilt)
and the memory caps. Checked: no 5xx anywhere (every answer and the backend's own request counters), no lost prompt
(every answer echoes every prompt region it was sent, and after the run LS holds each task's complete prediction
with every prompt of each task's latest saved annotation), /health p99 < 100 ms throughout (probed every 0.2 s on
HEALTH_PORT, the listener the README tells orchestrators to probe, from a process in a session of its own as an
orchestrator's prober is; each slow probe is split into the health process's own time and the CPU waits
of prober and server; the main port's /health must answer every probe and its p99 is printed), the backend's RSS
stays under a bound derived from its configured caps, and no leak: each task has its own frame size and frame
count, so a mask or a prompt of another task in its results would show up as a wrong size, frame index or region id
(the random-weight test model draws masks that do not follow the object, so mask positions cannot be used), and an
annotator's interactive answers on the shared task hold neither the other annotator's prompts nor masks of the
other's label. The summary
prints the CPU seconds of the backend, the health process, LS and the load generator, and the load average.
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import random
import re
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import psutil
import pytest
import requests

from tests import appkit as kit
from tests.load.probes import breakdown, canvas_pixels, cpu_model, cpu_s, sample
from tests.e2e.backend_server import AUTH, start_backend
from tests.e2e.frames_setup import frame_urls
from tests.e2e.ls_server import FRAMES_CONFIG, LSApiError

DURATION_S = float(os.environ.get("LOAD_DURATION_S", "120"))
ANNOTATORS = 8
# MAX_OBJECTS keeps its default (32): it counts one annotation's objects (tests/test_annotation_scopes.py), and each
# simulated annotator deletes a region once it holds MAX_REGIONS, as annotators do, so a soak stays under it.
MAX_REGIONS = 20
CAPS = {"MAX_SESSIONS": 6, "FEATURE_CACHE_MB": 128, "SESSION_MAX_MB": 256, "COND_CACHE_MB": 128,
        "ANSWER_CACHE_MB": 64, "JOB_WORKERS": 2, "THREADS": 8, "PREDICT_TIME_BUDGET_S": 3, "WRITE_INTERVAL_S": 2}
# every in-memory cache's cap, each with the gauge that reports its bytes in /metrics
MEMORY_CAPS = {"FEATURE_CACHE_MB": "sam2_feature_cache_bytes", "SESSION_MAX_MB": "sam2_session_bytes",
               "COND_CACHE_MB": "sam2_conditioned_cache_bytes", "ANSWER_CACHE_MB": "sam2_answer_cache_bytes"}
RSS_SLACK_MB = 400  # allocator slack, OpenVINO scratch, thread stacks, Python objects of 8 x requests in flight


@dataclass
class Task:
    id: int
    frames: int
    size: tuple[int, int]  # width, height
    labels: dict[int, str] = field(default_factory=dict)  # annotator -> label used on this task


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    health_ms: list[float] = field(default_factory=list)
    health_port_ms: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    last_context: dict[tuple[int, int], list[dict]] = field(default_factory=dict)  # (annotator, task) -> regions
    submitted: dict[int, list[dict]] = field(default_factory=dict)  # task -> regions of its latest saved annotation
    final: dict[int, tuple] = field(default_factory=dict)  # annotator -> (task, annotation id, regions)

    def count(self, what: str) -> None:
        with self.lock:
            self.actions[what] = self.actions.get(what, 0) + 1

    def error(self, msg: str) -> None:
        with self.lock:
            self.errors.append(msg)


def _frames(media_root, clip, folder: str, count: int, size: tuple[int, int]) -> None:
    out = media_root / folder
    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(clip))
    for i in range(count):
        ok, frame = cap.read()
        assert ok
        cv2.imwrite(str(out / f"{i:05d}.jpg"), cv2.resize(frame, size))
    cap.release()


@pytest.fixture(scope="module")
def load_setup(label_studio, model_128_f32, clips_dir, tmp_path_factory):
    api, root = label_studio.api, label_studio.media_root
    project = api.create_project("load", FRAMES_CONFIG)
    specs = []
    for i in range(ANNOTATORS - 1):  # 7 tasks: annotators 0 and 1 share task 0, the others have one each
        count, size = 8 + i, (320 + 32 * i, 240 + 16 * i)
        _frames(root, clips_dir / ("box.mp4" if i % 2 else "cup.mp4"), f"load/t{i}", count, size)
        specs.append((f"load/t{i}", count, size))
    api.add_local_storage(project, root / "load", sync=False, title="load")
    ids = api.import_tasks(project, [{"frames": frame_urls(folder, count)} for folder, count, _ in specs])
    tasks = [Task(tid, count, size) for tid, (_, count, size) in zip(ids, specs)]
    backend = start_backend(model_128_f32, tmp_path_factory.mktemp("load-backend"), ls_url=label_studio.url,
                            token=label_studio.token, media_root=root,
                            extra_env={k: str(v) for k, v in CAPS.items()})
    ml = api.connect_ml(project, backend.url, basic_auth=AUTH)
    yield api, project, ml, tasks, backend, label_studio
    backend.stop()


def _worker_process(backend) -> psutil.Process:
    master = psutil.Process(backend.proc.pid)
    procs = [master] + master.children(recursive=True)
    return max(procs, key=lambda p: p.memory_info().rss)


def _health_process(backend) -> psutil.Process | None:
    for p in psutil.Process(backend.proc.pid).children(recursive=True):
        try:
            if "backend.serving.healthd" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            continue
    return None


def _annotator(n: int, api, project: int, ml: int, tasks: list[Task], backend, stats: Stats, stop: threading.Event):
    rng = random.Random(1000 + n)
    task = tasks[0] if n < 2 else tasks[n - 1]
    label = ("Car", "Person")[n % 2]
    task.labels[n] = label
    regions: list[dict] = []
    annotation_id = None
    session = requests.Session()
    session.auth = AUTH
    k = 0
    while not stop.is_set():
        roll = rng.random()
        try:
            if roll < 0.6 or not regions:
                k += 1
                frame = rng.randrange(task.frames)
                x, y = rng.uniform(10, 70), rng.uniform(10, 70)
                rid = f"t{task.id}-a{n}-{k}"
                if len(regions) >= MAX_REGIONS or (len(regions) > 1 and rng.random() < 0.1):
                    regions.pop(rng.randrange(len(regions)))  # deleted in the editor: LS sends the others
                    stats.count("delete")
                elif rng.random() < 0.3 and regions:  # move an earlier prompt (same id, new place)
                    i = rng.randrange(len(regions))
                    regions[i] = {**regions[i], "value": {**regions[i]["value"], "x": x, "y": y}}
                elif rng.random() < 0.5:
                    regions.append(kit.point(rid, frame, x, y, task.size, label=label))
                else:
                    regions.append(kit.rect(rid, frame, x, y, 20, 20, task.size, label=label))
                for attempt in range(4):  # a busy task answers 409 + Retry-After; the annotator clicks again
                    answer = api.interactive(ml, task.id, regions)
                    busy = isinstance(answer, dict) and "409" in str(answer.get("errors", ""))
                    if not busy:
                        break
                    stats.count("busy 409, retried")
                    stop.wait(2)
                stats.count("interactive")
                _check_answer(answer, task, regions, stats, f"annotator {n} task {task.id}", n)
                with stats.lock:
                    stats.last_context[(n, task.id)] = list(regions)
            elif roll < 0.75:
                result = list(regions)
                if annotation_id is None:
                    annotation_id = api.create_annotation(task.id, result)["id"]
                else:
                    api.update_annotation(annotation_id, result)
                stats.count("save (LS webhook)")
            elif roll < 0.9:
                body = {"action": "ANNOTATION_UPDATED", "task": {"id": rng.choice(tasks).id},
                        "annotation": {"id": rng.randrange(1, 10**6), "result": []}}
                resp = requests.post(backend.url + "/webhook", json=body, timeout=10)
                stats.count("raw webhook")
                if resp.status_code >= 500:
                    stats.error(f"raw webhook -> {resp.status_code}: {resp.text[:200]}")
            elif n == 0:
                api.retrieve_predictions(project)
                stats.count("batch retrieve")
        except LSApiError as e:
            stats.error(f"annotator {n}: LS answered an error: {str(e)[:300]}")
        except requests.RequestException as e:
            stats.error(f"annotator {n}: {type(e).__name__}: {e}")
        stop.wait(rng.uniform(0.3, 1.5))
    with stats.lock:
        stats.final[n] = (task, annotation_id, list(regions))


def _check_answer(answer, task: Task, sent: list[dict], stats: Stats, who: str, annotator: int) -> None:
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or "result" not in data:
        stats.error(f"{who}: no prediction in LS's answer: {str(answer)[:300]}")
        return
    result = data["result"]
    echoed = {r["id"] for r in result if r["type"] in ("keypointlabels", "rectanglelabels")}
    missing = {r["id"] for r in sent} - echoed
    if missing:
        stats.error(f"{who}: prompts lost from the answer: {sorted(missing)[:5]}")
    _check_no_leak(result, task, stats, who, annotator)


def _check_no_leak(result: list[dict], task: Task, stats: Stats, who: str, annotator: int | None = None) -> None:
    """Nothing of another task in `result`; with `annotator` (an interactive answer to them), nothing of another
    annotator either: on the shared task the two annotators use different labels, so a mask of the other label or a
    prompt id of the other annotator is their work leaking into this annotator's editor."""
    for r in result:
        if r["type"] in ("keypointlabels", "rectanglelabels") and not r["id"].startswith(f"t{task.id}-"):
            stats.error(f"{who}: a prompt of another task in the results: {r['id']}")
        elif r["type"] in ("keypointlabels", "rectanglelabels") and annotator is not None \
                and not r["id"].startswith(f"t{task.id}-a{annotator}-"):
            stats.error(f"{who}: another annotator's prompt in the answer: {r['id']}")
        if r["type"] != "brushlabels":
            continue
        labels = {task.labels[annotator]} if annotator is not None else set(task.labels.values())
        if (r["original_width"], r["original_height"]) != task.size or not 0 <= r["item_index"] < task.frames:
            stats.error(f"{who}: a mask of another task ({r['original_width']}x{r['original_height']}, frame "
                        f"{r['item_index']}) on a {task.size[0]}x{task.size[1]} {task.frames}-frame task")
        elif r["value"]["brushlabels"][0] not in labels:
            stats.error(f"{who}: a mask labelled {r['value']['brushlabels']} where only {sorted(labels)} belong "
                        "(another annotator's or another task's object)")
        elif (drawn := canvas_pixels(r["value"])) != task.size[0] * task.size[1]:  # from its header, not decoded
            stats.error(f"{who}: a mask drawn on a canvas of {drawn} pixels on a {task.size} task")


def _cache_mb(backend) -> dict[str, float]:
    """MB each capped cache holds now, by its setting."""
    text = backend.get("/metrics").text
    values = {ln.split(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("sam2_")}
    return {cap: round(values.get(gauge, float("nan")) / 2**20, 1) for cap, gauge in MEMORY_CAPS.items()}


def _server_5xx(backend) -> dict[str, float]:
    text = backend.get("/metrics").text
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
            if ln.startswith("sam2_requests_total") and 'status="5' in ln}


def test_eight_annotators_for_a_bounded_time(load_setup):
    api, project, ml, tasks, backend, label_studio = load_setup
    # baseline: the model loaded, no session yet; sessions and features may add up to their caps
    worker, healthd = _worker_process(backend), _health_process(backend)
    assert healthd is not None or not backend.health_port, "the HEALTH_PORT process is not running"
    baseline_rss = worker.memory_info().rss / 2**20
    ls = psutil.Process(label_studio.proc.pid)
    groups = {"backend worker": [worker], "health process": [healthd] if healthd else [],
              "Label Studio": [ls] + ls.children(recursive=True), "load generator (pytest)": [psutil.Process()]}
    priorities = {"worker nice": worker.nice(), "health nice": healthd.nice() if healthd else None,
                  "worker threads": worker.num_threads()}
    before_5xx = _server_5xx(backend)  # e.g. /health 503 while the model loaded: not part of the run
    stats, stop = Stats(), threading.Event()
    ctx = multiprocessing.get_context("fork")  # started before any annotator thread exists
    received, sent = ctx.Pipe(duplex=False)
    sampler = ctx.Process(target=sample, args=(int(backend.url.rsplit(":", 1)[1]), backend.health_port, worker.pid,
                                                healthd.pid if healthd else None, DURATION_S, sent), daemon=True)
    sampler.start()
    threads = [threading.Thread(target=_annotator, args=(n, api, project, ml, tasks, backend, stats, stop),
                                daemon=True) for n in range(ANNOTATORS)]
    cpu0 = cpu_s(groups)
    t0 = time.monotonic()
    for t in threads:
        t.start()
    stop.wait(DURATION_S)
    stop.set()
    cpu1 = cpu_s(groups)
    for t in threads:
        t.join(130)  # an interactive call may still be in flight (LS gives /predict 100 s)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "a simulated annotator did not stop"
    assert received.poll(60), "the health/RSS sampler sent nothing"
    stats.health_ms, side, stats.rss_mb, load, sampler_errors = received.recv()
    stats.health_port_ms = [s[0] for s in side]
    sampler.join(10)
    stats.errors[:0] = sampler_errors  # first: a failed probe must show in the assertion message

    # "Submit", one annotator after the other (so the latest annotation of the shared task is well defined): what
    # the editor holds is saved; unsaved prompts live only in the editor and in the backend's session, which
    # MAX_SESSIONS may evict, and a session is rebuilt from the task's latest annotation
    for n in sorted(stats.final):
        task, annotation_id, regions = stats.final[n]
        if not regions:
            continue
        if annotation_id is None:
            api.create_annotation(task.id, regions)
        else:
            api.update_annotation(annotation_id, regions)
        stats.submitted[task.id] = regions
        time.sleep(1.1)  # LS orders annotations by updated_at (1 s resolution in some views)

    # quiescence: the final saves reach the backend (LS webhooks), jobs end, and LS's prediction of each task holds
    # every prompt of the task's latest saved annotation
    version = backend.get("/versions").json()["model_version"]
    end = time.monotonic() + 240
    final = {}
    for task in tasks:
        prompts = {r["id"] for r in stats.submitted.get(task.id, [])}
        while True:
            mine = [p for p in api.predictions(task.id) if p["model_version"] == version]
            echoed = {r["id"] for p in mine[-1:] for r in p["result"]
                      if r["type"] in ("keypointlabels", "rectanglelabels")}
            if prompts <= echoed or time.monotonic() > end:
                break
            time.sleep(1)
        final[task.id] = (len(mine), prompts)
        if prompts - echoed:
            stats.error(f"task {task.id}: saved prompts missing from LS's prediction: {sorted(prompts - echoed)}")
        for p in mine:
            _check_no_leak(p["result"], task, stats, f"LS prediction {p['id']} of task {task.id}")

    server_5xx = {k: v - before_5xx.get(k, 0.0) for k, v in _server_5xx(backend).items()
                  if v > before_5xx.get(k, 0.0)}
    health = np.array(stats.health_ms)
    # the p99 bound applies to the /health that orchestrators are told to probe: the dedicated HEALTH_PORT listener,
    # built to answer while every request thread is busy; the main port's /health (LS asks it when a
    # backend is connected) must answer every probe, and its p99 is reported
    probed = np.array(stats.health_port_ms) if stats.health_port_ms else health
    p99 = float(np.percentile(probed, 99)) if len(probed) else float("inf")
    main_p99 = float(np.percentile(health, 99)) if len(health) else float("inf")
    limit_mb = baseline_rss + sum(CAPS[cap] for cap in MEMORY_CAPS) + RSS_SLACK_MB
    held = _cache_mb(backend)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    summary = (f"{elapsed:.0f} s, actions {stats.actions}, main-port /health n={len(health)} "
               f"p50={np.median(health):.1f} ms p99={main_p99:.1f} ms max={health.max():.1f} ms"
               + (f", {breakdown(side)}" if side else "")
               + f", RSS baseline {baseline_rss:.0f} MB max {max(stats.rss_mb, default=0):.0f} MB (bound "
               f"{limit_mb:.0f} MB; caches hold MB {held}; RSS MB at each quarter of the run "
               f"{[round(stats.rss_mb[min(len(stats.rss_mb) - 1, len(stats.rss_mb) * q // 4)]) for q in (1, 2, 3, 4)] if stats.rss_mb else []}"
               f"), predictions per task {[n for n, _ in final.values()]}, CPU seconds in the "
               f"{DURATION_S:.0f} s of load {({k: round(v, 1) for k, v in cpu.items()})} of "
               f"{DURATION_S * (os.cpu_count() or 1):.0f} available, {priorities}, load avg (1 min) during the run "
               f"{min(load, default=0):.1f}-{max(load, default=0):.1f} on {os.cpu_count()} cores "
               f"({platform.processor() or platform.machine()}, {cpu_model()})")
    print("\nLOAD SUMMARY:", summary)
    assert sum(stats.actions.values()) >= ANNOTATORS, summary
    assert not server_5xx, f"the backend answered 5xx: {server_5xx}\n{summary}"
    refused = [line for line in backend.log().splitlines() if re.search(r" -> 4\d\d: ", line)]
    assert not stats.errors, (f"{len(stats.errors)} errors, first: {stats.errors[:8]}\nthe backend's 4xx log lines: "
                              f"{refused[:8]}\n{summary}")
    assert np.isfinite(health).all(), f"a main-port /health probe failed or was not 200\n{summary}"
    assert p99 < 100, f"/health p99 {p99:.1f} ms >= 100 ms\n{summary}"
    assert max(stats.rss_mb, default=0) <= limit_mb, f"RSS above the caps' bound\n{summary}"
    assert all(n <= 1 for n, _ in final.values()), f"more than one prediction of our version on a task\n{summary}"
