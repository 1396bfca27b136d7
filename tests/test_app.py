"""The Flask backend end to end in-process (no Label Studio): protocol, prompts, propagation, corrections, batch."""
from __future__ import annotations

import time

import numpy as np
import pytest

from backend.engine.frames import ImageSequenceSource
from tests import appkit as kit
from tests.appkit import AUTH, N


def _encoder_calls(app) -> int:
    return app.config["SERVICE"].model.get().runtime.calls("image_encoder")


def _engine_masks(app, media, box, fix_frame: int, fix_mask) -> dict[int, np.ndarray]:
    """Oracle: the engine driven directly (no LS layer) with the box on frame 0, propagated, then `fix_mask` added on
    `fix_frame` and propagated from there: frame -> object 1's mask."""
    root, _ = media
    predictor = app.config["SERVICE"].model.get()
    session = predictor.start_session(ImageSequenceSource([root / "cup" / f"{i:05d}.jpg" for i in range(N)]))
    try:
        predictor.add_points(session, 0, 1, box=box)
        out = {r.frame: r.masks()[1] for r in predictor.propagate(session, start=0)}
        predictor.add_mask(session, fix_frame, 1, fix_mask)
        out.update({r.frame: r.masks()[1] for r in predictor.propagate(session, start=fix_frame)})
        return out
    finally:
        session.close()


def test_health_setup_versions_answer_fast_and_report_the_model(client):
    t0 = time.perf_counter()
    health = client.get("/health")
    setup = client.post("/setup", json={"project": "3.1700000000", "schema": kit.FRAMES_CONFIG}, headers=AUTH)
    elapsed = time.perf_counter() - t0
    assert health.status_code == 200 and health.get_json()["status"] == "UP"
    assert health.get_json()["random_weights"] is True
    assert setup.status_code == 200 and setup.get_json()["model_version"] == health.get_json()["model_version"]
    assert "random" in setup.get_json()["model_version"]
    assert elapsed < 1.0, "LS gives /setup 3 s and /health 1 s"
    versions = client.get("/versions", headers=AUTH).get_json()
    assert versions["versions"] == [setup.get_json()["model_version"]]


def test_basic_auth_guards_everything_but_health(client):
    assert client.get("/health").status_code == 200
    for method, path in (("post", "/setup"), ("post", "/predict"), ("get", "/metrics"), ("get", "/jobs/1"),
                         ("get", "/versions")):
        resp = getattr(client, method)(path, json={})
        assert resp.status_code == 401, path
        assert "basic auth" in resp.get_json()["error"]
    wrong = kit.basic_auth("ls", "nope")
    assert client.post("/setup", json={}, headers=wrong).status_code == 401


def test_box_and_negative_point_propagate_to_every_frame(app, client, media):
    _, size = media
    task = kit.frames_task(101, "cup", N)
    ctx = [kit.rect("r1", 0, 30, 20, 40, 60, size), kit.point("k1", 5, 50, 50, size, positive=False)]
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, ctx, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    (pred,) = resp.get_json()["results"]
    results = kit.brushes(pred["result"])
    assert sorted(r["item_index"] for r in results) == list(range(N))  # one object, every frame
    # the prompts come back too (LS drops a smart prompt once its suggestion is accepted)
    assert {r["id"] for r in pred["result"] if r["type"] != "brushlabels"} == {"r1", "k1"}
    for r in results:
        assert r["id"] == f"sam2-1-{r['item_index']}" and r["type"] == "brushlabels"
        assert r["from_name"] == "mask" and r["to_name"] == "frames" and r["value"]["brushlabels"] == ["Car"]
        assert (r["original_width"], r["original_height"]) == size and r["meta"] == {"text": ["Car 1"]}
    masks = kit.masks_of(results)
    assert all(m.any() for m in masks.values())
    status = kit.wait_job(client, 101, headers=AUTH)
    assert status["state"] == "done" and status["frames_done"] == N
    # the negative point is part of object 1's prompts on frame 5 (one object, not two)
    tracker = app.config["SERVICE"]._entries[101].tracker
    assert set(tracker.book.labels) == {1}
    assert tracker.applied[(1, 5)].points == ((pytest.approx(size[0] / 2), pytest.approx(size[1] / 2), 0),)


def test_correction_repropagates_from_its_frame_only(app, client, media):
    _, size = media
    task = kit.frames_task(102, "cup", N)
    first = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r1", 0, 30, 20, 40, 60, size)], headers=AUTH)
    before = kit.masks_of(first.get_json()["results"][0]["result"])
    calls = _encoder_calls(app)
    k = 8
    corrected = np.zeros((size[1], size[0]), bool)
    corrected[10:60, 20:90] = True
    ann = [kit.brush(f"sam2-1-{i}", i, before[(f"sam2-1-{i}", i)]) for i in range(N)]  # accepted output ...
    ann[k] = kit.brush(f"sam2-1-{k}", k, corrected)  # ... with one frame corrected by hand
    resp = client.post("/webhook", headers=AUTH, json={
        "action": "ANNOTATION_UPDATED", "project": {"id": 1, "label_config": kit.FRAMES_CONFIG},
        "task": {k2: v for k2, v in task.items() if k2 != "annotations"}, "annotation": {"id": 7, "result": ann}})
    assert resp.status_code == 200 and resp.get_json()["status"] == "propagating"
    status = kit.wait_job(client, 102, headers=AUTH)
    assert status["state"] == "done" and status["frames_done"] == N - k  # forward from the corrected frame only
    after = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                         ["results"][0]["result"])
    for i in range(k):
        assert np.array_equal(after[(f"sam2-1-{i}", i)], before[(f"sam2-1-{i}", i)]), f"frame {i} changed"
    assert np.array_equal(after[(f"sam2-1-{k}", k)], corrected)
    assert any(not np.array_equal(after[(f"sam2-1-{i}", i)], before[(f"sam2-1-{i}", i)]) for i in range(k + 1, N))
    assert _encoder_calls(app) == calls, "cached frames must not run the image encoder again"
    # the correction had its full effect, not just "some pixel changed": every frame after it is exactly what the
    # engine gives when the corrected mask enters its memory (random weights: masks need not look like the object)
    box = app.config["SERVICE"]._entries[102].tracker.applied[(1, 0)].box
    oracle = _engine_masks(app, media, box, k, corrected)
    for i in range(k + 1, N):
        assert np.array_equal(after[(f"sam2-1-{i}", i)], oracle[i]), f"frame {i} is not the engine's answer"


def test_a_second_correction_on_the_same_frame_repropagates(app, client, media):
    """The annotator corrects frame k, saves, then corrects the same frame again: the second mask must reach the
    engine and re-propagate (not be taken for the first one)."""
    _, size = media
    task = kit.frames_task(109, "cup", N)
    first = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r1", 0, 30, 20, 40, 60, size)], headers=AUTH)
    kit.wait_job(client, 109, headers=AUTH)
    before = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                          ["results"][0]["result"])
    assert first.status_code == 200
    k = 6
    fixes = [np.zeros((size[1], size[0]), bool) for _ in range(2)]
    fixes[0][10:60, 20:90] = True
    fixes[1][200:400, 300:600] = True
    for n, fix in enumerate(fixes):
        ann = [kit.brush(f"sam2-1-{i}", i, before[(f"sam2-1-{i}", i)]) for i in range(N)]
        ann[k] = kit.brush(f"sam2-1-{k}", k, fix)
        resp = client.post("/webhook", headers=AUTH, json={
            "action": "ANNOTATION_UPDATED", "project": {"id": 1, "label_config": kit.FRAMES_CONFIG},
            "task": task, "annotation": {"id": 9, "result": ann}})
        assert resp.get_json()["status"] == "propagating", f"correction {n + 1}: {resp.get_json()}"
        status = kit.wait_job(client, 109, headers=AUTH)
        assert status["state"] == "done" and status["frames_done"] == N - k
        after = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                             ["results"][0]["result"])
        assert np.array_equal(after[(f"sam2-1-{k}", k)], fix), f"correction {n + 1} is not on frame {k}"
    tracker = app.config["SERVICE"]._entries[109].tracker
    assert np.array_equal(tracker.applied[(1, k)].mask, fixes[1])
    box = tracker.applied[(1, 0)].box
    oracle = _engine_masks(app, media, box, k, fixes[1])
    assert all(np.array_equal(after[(f"sam2-1-{i}", i)], oracle[i]) for i in range(k + 1, N))


def test_unchanged_accepted_masks_are_not_prompts(client, media):
    _, size = media
    task = kit.frames_task(103, "cup", N)
    first = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r1", 2, 30, 20, 40, 60, size)], headers=AUTH)
    kit.wait_job(client, 103, headers=AUTH)
    results = kit.brushes(first.get_json()["results"][0]["result"])
    masks = kit.masks_of(results)
    accepted = [kit.brush(r["id"], r["item_index"], masks[(r["id"], r["item_index"])]) for r in results]
    resp = client.post("/webhook", headers=AUTH, json={
        "action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": kit.FRAMES_CONFIG},
        "task": task, "annotation": {"id": 8, "result": accepted + [kit.rect("r1", 2, 30, 20, 40, 60, size)]}})
    assert resp.get_json()["status"] == "unchanged"


def test_backward_propagation_from_a_middle_frame(client, media):
    _, size = media
    task = kit.frames_task(104, "cup", N)
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.point("k1", 10, 40, 40, size)], headers=AUTH)
    kit.wait_job(client, 104, headers=AUTH)
    final = kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()["results"][0]["result"]
    assert resp.status_code == 200
    assert sorted(r["item_index"] for r in kit.brushes(final)) == list(range(N))  # frames 0-9 came from the backward pass


def test_two_objects_per_instance_labels_and_point_identity(app, client, media):
    _, size = media
    task = kit.frames_task(105, "cup", N)
    ctx = [kit.point("a", 0, 25, 30, size, label="Car#1"), kit.point("b", 3, 70, 60, size, label="Car#2"),
           kit.point("c", 6, 30, 35, size, label="Car#1")]
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, ctx, headers=AUTH)
    kit.wait_job(client, 105, headers=AUTH)
    tracker = app.config["SERVICE"]._entries[105].tracker
    assert tracker.book.labels == {1: "Car#1", 2: "Car#2"}
    assert {(o, f) for o, f in tracker.applied} == {(1, 0), (2, 3), (1, 6)}
    metas = {r["meta"]["text"][0] for r in kit.brushes(resp.get_json()["results"][0]["result"])}
    assert metas == {"Car #1", "Car #2"}


def test_replacing_an_objects_only_region_tracks_it_from_the_new_one_alone(app, client, media):
    """A click on frame 0, tracked; in one request the annotator deletes it and clicks inside the object's mask on
    frame 6, so the new click joins the object: the object is tracked from the new click alone, as a new object
    clicked there would be, and no mask tracked from the deleted click is left in the answer."""
    _, size = media
    task = kit.frames_task(110, "cup", N)
    other = kit.point("q", 12, 80, 80, size, label="Person")  # another object of the annotation: its scope
    first = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.point("p0", 0, 40, 40, size), other], headers=AUTH)
    assert first.status_code == 200, first.get_json()
    kit.wait_job(client, 110, headers=AUTH)
    k = 6
    tracked = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                           ["results"][0]["result"])[(f"sam2-1-{k}", k)]
    ys, xs = np.nonzero(tracked)
    assert len(xs), "the object has no mask on the clicked frame"
    i = len(xs) // 2
    click = kit.point("p1", k, (xs[i] + 0.5) / size[0] * 100, (ys[i] + 0.5) / size[1] * 100, size)
    service = app.config["SERVICE"]
    budget = service.settings.predict_time_budget_s
    service.settings = type(service.settings)(**{**service.settings.__dict__, "predict_time_budget_s": 0})
    try:  # answer at once: the clicked frame and what was tracked before (the job waits for the answer)
        resp = kit.predict(client, task, kit.FRAMES_CONFIG, [click, other], headers=AUTH)
    finally:
        service.settings = type(service.settings)(**{**service.settings.__dict__, "predict_time_budget_s": budget})
    assert resp.status_code == 200, resp.get_json()
    assert {r["id"] for r in resp.get_json()["results"][0]["result"] if r["type"] != "brushlabels"} == {"p1", "q"}
    tracker = app.config["SERVICE"]._entries[110].tracker
    assert set(tracker.applied) == {(1, k), (2, 12)}, "the click must join the object whose mask it is in"
    answered = kit.masks_of(resp.get_json()["results"][0]["result"])
    kit.wait_job(client, 110, headers=AUTH)
    after = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                         ["results"][0]["result"])
    # oracle: the engine with one new object clicked on frame 6, tracked both ways
    root, _ = media
    predictor = app.config["SERVICE"].model.get()
    session = predictor.start_session(ImageSequenceSource([root / "cup" / f"{i:05d}.jpg" for i in range(N)]))
    try:
        prompt = tracker.applied[(1, k)]
        predictor.add_points(session, k, 1, points=[[x, y] for x, y, _ in prompt.points], labels=[1])
        oracle = {r.frame: r.masks()[1] for r in predictor.propagate(session, start=k)}
        oracle.update({r.frame: r.masks()[1] for r in predictor.propagate(session, start=k, reverse=True)})
    finally:
        session.close()
    assert sorted(f for rid, f in after if rid.startswith("sam2-1-")) == list(range(N))
    for i in range(N):
        assert np.array_equal(after[(f"sam2-1-{i}", i)], oracle[i]), f"frame {i} is not tracked from frame {k} alone"
    # the interactive answer holds the object's mask on the clicked frame only: none tracked from the deleted click
    assert {i for rid, i in answered if rid.startswith("sam2-1-")} == {k}
    assert np.array_equal(answered[(f"sam2-1-{k}", k)], oracle[k])


def test_newer_prompt_cancels_the_older_job(app, client, media):
    _, size = media
    service = app.config["SERVICE"]
    service.settings = type(service.settings)(**{**service.settings.__dict__, "predict_time_budget_s": 0.5})
    try:
        task = kit.frames_task(106, "cup", N)
        kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r1", 0, 30, 20, 40, 60, size)], headers=AUTH)
        old = service.jobs.get(106)
        kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r1", 0, 10, 10, 40, 60, size)], headers=AUTH)
        assert old.finished.is_set() and (old.state == "cancelled" or old.done == old.total)
        assert service.jobs.get(106) is not old
    finally:
        service.settings = type(service.settings)(**{**service.settings.__dict__, "predict_time_budget_s": 90})
    assert kit.wait_job(client, 106, headers=AUTH)["state"] == "done"


def test_resending_the_same_prompts_keeps_the_running_job(app, client, media):
    """LS calls /predict again when a task is opened: unchanged prompts must not restart the propagation.

    The job is held on its first frame, so it is certainly running when the prompts come again: the same job object
    must still be the task's job, never cancelled, and then finish every frame."""
    _, size = media
    service = app.config["SERVICE"]
    box = kit.rect("r1", 0, 30, 20, 40, 60, size)
    task = kit.frames_task(108, "cup", N, annotations=[{"id": 1, "result": [box]}])
    service.settings = type(service.settings)(**{**service.settings.__dict__, "predict_time_budget_s": 0.5})
    try:
        with kit.held_jobs(service.jobs, 108):
            kit.predict(client, task, kit.FRAMES_CONFIG, [box], headers=AUTH)
            job = service.jobs.get(108)
            assert job is not None and job.state == "running" and job.done <= 1
            for context in (None, [box]):  # batch (LS opening the task) and interactive with the same prompts
                resp = kit.predict(client, task, kit.FRAMES_CONFIG, context, headers=AUTH)
                assert resp.status_code == 200
                assert service.jobs.get(108) is job, "unchanged prompts replaced the running job"
                assert job.state == "running" and not job.cancel_event.is_set(), "unchanged prompts cancelled it"
    finally:
        service.settings = type(service.settings)(**{**service.settings.__dict__, "predict_time_budget_s": 90})
    status = kit.wait_job(client, 108, headers=AUTH)
    assert service.jobs.get(108) is job and status["state"] == "done" and status["frames_done"] == N


def test_batch_mode_never_crashes(client, media):
    _, size = media
    empty = kit.frames_task(201, "cup", N)
    prompted = kit.frames_task(202, "cup", N, annotations=[{"id": 1, "result": [kit.rect("r9", 1, 20, 20, 50, 50,
                                                                                           size)]}])
    broken = kit.frames_task(203, "nowhere", 3, annotations=[{"id": 2, "result": [kit.rect("r", 0, 1, 1, 5, 5, size)]}])
    resp = kit.predict(client, empty, kit.FRAMES_CONFIG, None, headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["results"][0]["result"] == []
    body = {"tasks": [empty, prompted, broken, "junk"], "label_config": kit.FRAMES_CONFIG, "params": {"context": None}}
    resp = client.post("/predict", json=body, headers=AUTH)
    assert resp.status_code == 200
    results = [r["result"] for r in resp.get_json()["results"]]
    assert len(results) == 4 and results[0] == [] and results[2] == [] and results[3] == []
    assert sorted(r["item_index"] for r in kit.brushes(results[1])) == list(range(N))


def test_metrics_count_requests_frames_and_sessions(client):
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'sam2_requests_total{endpoint="predict",status="200"}' in text
    frames = float(next(line.split()[-1] for line in text.splitlines()
                        if line.startswith("sam2_frames_propagated_total ")))
    assert frames >= N
    sessions = float(next(line.split()[-1] for line in text.splitlines() if line.startswith("sam2_active_sessions ")))
    assert sessions >= 1
    assert "sam2_feature_cache_bytes" in text and "sam2_request_seconds_bucket" in text

    def gauge(name):
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))
    # earlier tests tracked frames and clicked on tracked ones: both caches hold something, within their caps
    settings = client.application.config["SERVICE"].settings
    assert 0 < gauge("sam2_conditioned_cache_bytes") <= settings.conditioned_cache_bytes
    assert 0 < gauge("sam2_answer_cache_bytes") <= settings.answer_cache_bytes


def test_a_lost_session_is_rebuilt_from_the_saved_annotation(app, client, media):
    """Restart or eviction: the task's annotation (prompts + a correction) and our prediction rebuild the same masks."""
    _, size = media
    task = kit.frames_task(107, "cup", N)
    box = kit.rect("r1", 0, 30, 20, 40, 60, size)
    first = kit.predict(client, task, kit.FRAMES_CONFIG, [box], headers=AUTH).get_json()["results"][0]
    kit.wait_job(client, 107, headers=AUTH)
    first = kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()["results"][0]
    masks = kit.masks_of(first["result"])
    corrected = np.zeros((size[1], size[0]), bool)
    corrected[100:300, 200:400] = True
    saved = [kit.brush(rid, i, corrected if i == 5 else m) for (rid, i), m in masks.items()] + [box]
    task["annotations"] = [{"id": 1, "result": saved}]
    task["predictions"] = [dict(first, id=1)]
    client.post("/webhook", headers=AUTH, json={"action": "ANNOTATION_CREATED", "task": task,
                                                "project": {"id": 1, "label_config": kit.FRAMES_CONFIG},
                                                "annotation": task["annotations"][0]})
    kit.wait_job(client, 107, headers=AUTH)
    live = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                        ["results"][0]["result"])
    service = app.config["SERVICE"]
    # the saved annotation still holds the masks from before the correction's re-propagation: not corrections
    assert set(service._entries[107].tracker.applied) == {(1, 0), (1, 5)}
    kit.drop_session(service, 107)  # what a restart or an LRU eviction does
    kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH)
    kit.wait_job(client, 107, headers=AUTH)
    rebuilt = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                           ["results"][0]["result"])
    assert rebuilt.keys() == live.keys()
    assert all(np.array_equal(rebuilt[k], live[k]) for k in live)
    assert np.array_equal(rebuilt[("sam2-1-5", 5)], corrected)
    # only the real correction became a prompt: accepted frames stayed output
    assert set(service._entries[107].tracker.applied) == {(1, 0), (1, 5)}
