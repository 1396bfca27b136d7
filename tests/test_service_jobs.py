"""Issue 9, High 2 and 3: eviction never freezes the service, queued jobs cancel at once and free their tracker,
a failed apply keeps the prompt for the retry, and a busy task answers 409 with Retry-After instead of hanging."""
from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from backend.serving.jobs import JobManager, Pass
from tests import appkit as kit
from tests.appkit import AUTH
from tests.servicekit import FakeLS, make_app, running


# ---- JobManager with a fake engine: frames take `frame_s` each, or block until `gate` opens ----
class _Result:
    def __init__(self, frame):
        self.frame = frame


class _Predictor:
    def __init__(self, frame_s=0.0, gate: threading.Event | None = None):
        self.frame_s, self.gate = frame_s, gate

    def propagate(self, session, start, reverse=False, objects=None):  # as VideoPredictor
        for f in range(start, session.num_frames):
            if self.gate is not None:
                self.gate.wait(30)
            time.sleep(self.frame_s)
            yield _Result(f)


class _Session:
    num_frames = 20


class _Tracker:
    def __init__(self, tid):
        self.task_id, self.version, self.session = tid, 1, _Session()
        self.payload = bytearray(10 << 20)  # what an evicted tracker would keep alive

    def frames_in(self, plan):
        return 20

    def record(self, result):
        pass


def test_a_queued_job_cancels_at_once_and_frees_its_tracker():
    gate = threading.Event()
    jobs = JobManager(lambda: _Predictor(gate=gate), workers=1, write_interval_s=60)
    try:
        jobs.start(_Tracker(1), [Pass(0)], lambda j, f: None)  # occupies the only worker
        queued_tracker = _Tracker(2)
        ref = weakref.ref(queued_tracker)
        queued = jobs.start(queued_tracker, [Pass(0)], lambda j, f: None)
        del queued_tracker
        t0 = time.monotonic()
        jobs.cancel(2)
        assert time.monotonic() - t0 < 0.5
        assert queued.finished.is_set() and queued.state == "cancelled" and queued.done == 0
        gc.collect()
        assert ref() is None, "a cancelled queued job still holds its tracker"
    finally:
        gate.set()
        jobs.shutdown()


def test_cancel_never_waits_for_a_running_job():
    jobs = JobManager(lambda: _Predictor(frame_s=1.0), workers=1, write_interval_s=60)
    try:
        job = jobs.start(_Tracker(1), [Pass(0)], lambda j, f: None)
        time.sleep(0.2)
        t0 = time.monotonic()
        assert jobs.cancel(1) is job
        assert time.monotonic() - t0 < 0.1
        assert job.wait(5) and job.state == "cancelled"
    finally:
        jobs.shutdown()


def test_after_runs_when_the_job_has_left_the_engine():
    gate = threading.Event()
    jobs = JobManager(lambda: _Predictor(gate=gate), workers=1, write_interval_s=60)
    try:
        jobs.start(_Tracker(1), [Pass(0)], lambda j, f: None)
        time.sleep(0.1)
        calls = []
        jobs.cancel(1)
        jobs.after(1, lambda: calls.append(1))
        assert calls == []  # still inside a frame
        gate.set()
        jobs.get(1).wait(5)
        assert calls == [1]
        jobs.after(1, lambda: calls.append(2))  # no running job: at once
        assert calls == [1, 2]
    finally:
        gate.set()
        jobs.shutdown()


def test_finished_jobs_are_bounded():
    jobs = JobManager(lambda: _Predictor(), workers=2, write_interval_s=60, keep_finished=3)
    try:
        for tid in range(10):
            jobs.start(_Tracker(tid), [Pass(19)], lambda j, f: None).wait(5)
        time.sleep(0.05)
        assert len(jobs._jobs) <= 3 and jobs.get(9) is not None
    finally:
        jobs.shutdown()


# ---- the service ----
@pytest.fixture()
def ls():
    fake = FakeLS()
    yield fake
    fake.close()


def test_eviction_while_a_job_writes_does_not_freeze_other_requests(media, model_128_f32, tmp_path, ls):
    """MAX_SESSIONS=1, LS slow to store predictions: prompting a second task evicts the first while its job is in a
    write; the second task's answer must not wait for that write (it stalled 30 s behind the service lock)."""
    slow = ls.host.routes["/api/predictions/"]
    ls.host.routes["/api/predictions/"] = lambda r: (time.sleep(6 if r.method != "GET" else 0), slow(r))[1]
    size = media[1]
    with running(make_app(media[0], model_128_f32, tmp_path, MAX_SESSIONS=1, WRITE_INTERVAL_S=0.5,
                          PREDICT_TIME_BUDGET_S=1, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY="0" * 40)) as app:
        client = app.test_client()
        assert kit.predict(client, kit.frames_task(801, "cup", 16), kit.FRAMES_CONFIG,
                           [kit.point("a", 0, 50, 50, size)], headers=AUTH).status_code == 200
        deadline = time.monotonic() + 30
        while not any(s["method"] != "GET" for s in ls.host.seen) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first job is now inside a (slow) write
        t0 = time.monotonic()
        resp = kit.predict(client, kit.frames_task(802, "cup", 4), kit.FRAMES_CONFIG,
                           [kit.point("b", 0, 40, 40, size)], headers=AUTH)
        took = time.monotonic() - t0
        assert resp.status_code == 200, resp.get_json()
        assert took < 3.5, f"the second task waited {took:.1f} s behind the first task's write"
        assert app.config["SERVICE"].active_sessions() == 1


def test_eviction_frees_the_evicted_tracker(media, model_128_f32, tmp_path):
    size = media[1]
    with running(make_app(media[0], model_128_f32, tmp_path, MAX_SESSIONS=1, JOB_WORKERS=1)) as app:
        client, service = app.test_client(), app.config["SERVICE"]
        kit.predict(client, kit.frames_task(811, "cup", 16), kit.FRAMES_CONFIG, [kit.point("a", 0, 50, 50, size)],
                    headers=AUTH)
        ref = weakref.ref(service.sessions.peek(811).tracker)
        kit.predict(client, kit.frames_task(812, "cup", 16), kit.FRAMES_CONFIG, [kit.point("b", 0, 50, 50, size)],
                    headers=AUTH)
        kit.wait_job(client, 812, headers=AUTH)
        assert 811 not in service.sessions
        deadline = time.monotonic() + 10
        while ref() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.1)
        assert ref() is None, "the evicted task's tracker is still referenced"


def test_a_failed_apply_keeps_the_prompt_for_the_retry(client, media, monkeypatch):
    """A fault after the ledger took a new prompt (here the model holder timing out once) must not make the retry
    'unchanged': the retried prompt reaches the engine."""
    size, service = media[1], client.application.config["SERVICE"]
    task = kit.frames_task(821, "cup", 8)
    first = [kit.point("a", 0, 50, 50, size)]
    assert kit.predict(client, task, kit.FRAMES_CONFIG, first, headers=AUTH).status_code == 200
    kit.wait_job(client, 821, headers=AUTH)
    real_get, calls = service.model.get, []

    def flaky_get(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("simulated: the engine did not answer in time")
        return real_get(*a, **kw)
    monkeypatch.setattr(service.model, "get", flaky_get)
    second = first + [kit.rect("r", 3, 20, 20, 30, 30, size, label="Person")]
    assert kit.predict(client, task, kit.FRAMES_CONFIG, second, headers=AUTH).status_code >= 400
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, second, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    tracker = service.sessions.peek(821).tracker
    assert any(p.box is not None for (_, f), p in tracker.applied.items() if f == 3), \
        "the retried box never reached the engine"


def test_a_busy_task_answers_409_with_retry_after(media, model_128_f32, tmp_path):
    size = media[1]
    with running(make_app(media[0], model_128_f32, tmp_path, TASK_LOCK_WAIT_S=0.5)) as app:
        service, client = app.config["SERVICE"], app.test_client()
        held, release = threading.Event(), threading.Event()

        def hold():
            with service.task_locks.hold(831):
                held.set()
                release.wait(30)
        threading.Thread(target=hold, daemon=True).start()
        held.wait(5)
        t0 = time.monotonic()
        resp = kit.predict(client, kit.frames_task(831, "cup", 4), kit.FRAMES_CONFIG,
                           [kit.point("a", 0, 50, 50, size)], headers=AUTH)
        release.set()
        assert resp.status_code == 409 and "TASK_LOCK_WAIT_S" in resp.get_json()["error"]
        assert int(resp.headers["Retry-After"]) >= 1 and time.monotonic() - t0 < 5
        # other tasks were never blocked, and the lock registry does not keep one lock per task ever seen
        assert kit.predict(client, kit.frames_task(832, "cup", 4), kit.FRAMES_CONFIG,
                           [kit.point("a", 0, 50, 50, size)], headers=AUTH).status_code == 200
        time.sleep(0.1)
        assert len(service.task_locks) == 0


def test_the_store_evicts_idle_sessions_before_busy_ones():
    from backend.serving.sessions import SessionStore
    closed = []
    busy = {1}
    store = SessionStore(max_items=2, close=lambda k, v: closed.append(k), busy=lambda k: k in busy)
    store.put(1, "a")  # least recently used, but its job still runs
    store.put(2, "b")
    store.put(3, "c")
    assert closed == [2] and 1 in store
    busy.clear()
    store.put(4, "d")
    assert closed == [2, 1]


def test_a_task_whose_job_an_eviction_stopped_is_rebuilt_from_ls(media, model_128_f32, tmp_path, ls):
    """MAX_SESSIONS=1: task A's job is stopped by the eviction before its final write; A is read again from LS
    later (its saved annotation), so LS ends with one complete prediction of A."""
    size = media[1]
    saved = [kit.point("saved", 0, 50, 50, size)]
    ls.add_task(kit.frames_task(841, "cup", 16, annotations=[{"id": 1, "result": saved}]))
    with running(make_app(media[0], model_128_f32, tmp_path, MAX_SESSIONS=1, JOB_WORKERS=1, PREDICT_TIME_BUDGET_S=0.5,
                          WEBHOOK_TASK_INTERVAL_S=0.5, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY="0" * 40)) as app:
        client, version = app.test_client(), app.config["SERVICE"].model.version
        kit.predict(client, kit.frames_task(841, "cup", 16), kit.FRAMES_CONFIG, saved, headers=AUTH)
        kit.predict(client, kit.frames_task(842, "cup", 4), kit.FRAMES_CONFIG, [kit.point("b", 0, 40, 40, size)],
                    headers=AUTH)  # evicts 841 while its job runs
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ours = ls.ours(841, version)
            if ours and len(kit.brushes(ours[-1]["result"])) == 16:
                break
            time.sleep(0.5)
        ours = ls.ours(841, version)
        assert len(ours) == 1 and len(kit.brushes(ours[0]["result"])) == 16, [len(p["result"]) for p in ours]
        assert any(r["id"] == "saved" for r in ours[0]["result"])
