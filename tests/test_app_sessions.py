"""MAX_SESSIONS and JOB_WORKERS exercised through the app: LRU eviction frees the tracker, an evicted task is rebuilt
from its saved annotation with the same masks, eviction of a task whose job runs does not stall the next request,
and JOB_WORKERS bounds how many propagations run at once."""
from __future__ import annotations

import gc
import time
import weakref

import numpy as np
import pytest

from tests import appkit as kit
from tests.appkit import AUTH, N
from tests.servicekit import make_app, running


def _prompt(client, tid: int, size, **kw):
    box = kit.rect(f"r{tid}", 0, 20 + tid % 5 * 5, 20, 30, 40, size)
    task = kit.frames_task(tid, "cup", N, annotations=[{"id": tid, "result": [box]}])
    return task, kit.predict(client, task, kit.FRAMES_CONFIG, [box], headers=AUTH, **kw)


def _final(client, task) -> dict:
    return kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                        ["results"][0]["result"])


@pytest.fixture(scope="module")
def two_sessions(media, model_128_f32, tmp_path_factory):
    root, _ = media
    with running(make_app(root, model_128_f32, tmp_path_factory.mktemp("s2"), MAX_SESSIONS=2, JOB_WORKERS=2,
                          PREDICT_TIME_BUDGET_S=1)) as app:
        yield app


def test_max_sessions_evicts_the_least_recent_frees_it_and_rebuilds_it_the_same(two_sessions, media):
    app, (_, size) = two_sessions, media
    client, service = app.test_client(), two_sessions.config["SERVICE"]
    tasks, masks = {}, {}
    for tid in (501, 502):
        tasks[tid], resp = _prompt(client, tid, size)
        assert resp.status_code == 200, resp.get_json()
        kit.wait_job(client, tid, headers=AUTH)
        masks[tid] = _final(client, tasks[tid])
    assert service.active_sessions() == 2
    ref = weakref.ref(service._entries[501].tracker)
    _final(client, tasks[502])  # 502 is now the most recently used: 501 goes first
    tasks[503], resp = _prompt(client, 503, size)
    assert resp.status_code == 200
    kit.wait_job(client, 503, headers=AUTH)
    assert service.active_sessions() == 2 and set(service._entries) == {502, 503}
    gc.collect()
    assert ref() is None, "the evicted tracker (and its engine session) is still referenced"
    # 501 comes back from its saved annotation (a box): same masks as before, and 502 (least recent) goes
    rebuilt = kit.predict(client, tasks[501], kit.FRAMES_CONFIG, None, headers=AUTH)
    assert rebuilt.status_code == 200
    kit.wait_job(client, 501, headers=AUTH)
    again = _final(client, tasks[501])
    assert again.keys() == masks[501].keys() and all(np.array_equal(again[k], masks[501][k]) for k in again)
    assert set(service._entries) == {501, 503}
    metrics = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert "sam2_active_sessions 2.0" in metrics


def test_job_workers_two_run_two_propagations_at_once(two_sessions, media):
    app, (_, size) = two_sessions, media
    client, service = app.test_client(), app.config["SERVICE"]
    with kit.held_jobs(service.jobs, 511), kit.held_jobs(service.jobs, 512):
        for tid in (511, 512):
            _prompt(client, tid, size)
        a, b = service.jobs.get(511), service.jobs.get(512)
        end = time.monotonic() + 10
        while not (a.state == b.state == "running") and time.monotonic() < end:
            time.sleep(0.02)
        assert (a.state, b.state) == ("running", "running")
        assert service.jobs.running() == 2
    assert a.wait(60) and b.wait(60) and a.state == b.state == "done"


@pytest.fixture(scope="module")
def one_session(media, model_128_f32, tmp_path_factory):
    root, _ = media
    with running(make_app(root, model_128_f32, tmp_path_factory.mktemp("s1"), MAX_SESSIONS=1, JOB_WORKERS=1,
                          PREDICT_TIME_BUDGET_S=1)) as app:
        yield app


def test_evicting_a_task_whose_job_runs_does_not_stall_the_next_request(one_session, media):
    """MAX_SESSIONS=1: task A's propagation is running (held) when task B arrives. B must be answered promptly
    (nothing waits for A's job while holding a shared lock), A's job is cancelled and A's tracker freed."""
    app, (_, size) = one_session, media
    client, service = app.test_client(), app.config["SERVICE"]
    with kit.held_jobs(service.jobs, 531):
        task_a, resp = _prompt(client, 531, size)
        assert resp.status_code == 200
        job_a = service.jobs.get(531)
        assert job_a.state == "running"
        ref = weakref.ref(service._entries[531].tracker)
        t0 = time.monotonic()
        task_b, resp = _prompt(client, 532, size)
        elapsed = time.monotonic() - t0
        assert resp.status_code == 200, resp.get_json()
        assert kit.brushes(resp.get_json()["results"][0]["result"]), "task B got no masks"
        assert elapsed < 15, f"task B waited {elapsed:.1f} s behind the evicted task's job"
        assert job_a.wait(10) and job_a.state == "cancelled"
        assert set(service._entries) == {532}
    kit.wait_job(client, 532, headers=AUTH)
    gc.collect()
    assert ref() is None, "the evicted task's tracker is still alive"
    # and A is rebuilt from its saved box on its next request
    resp = kit.predict(client, task_a, kit.FRAMES_CONFIG, None, headers=AUTH)
    assert resp.status_code == 200
    assert kit.wait_job(client, 531, headers=AUTH)["state"] == "done"
    assert len(_final(client, task_a)) == N
