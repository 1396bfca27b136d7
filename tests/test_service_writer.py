"""Issue 9: one prediction per task and model version (serialised, idempotent, also across a restart), and a
final write that lands once LS is back after being down or answering 5xx."""
from __future__ import annotations

import threading
import time

import pytest

from backend.ls.lsclient import LabelStudioClient, LabelStudioUnavailable
from backend.ls.writer import PredictionWriter
from backend.serving.tokens import TokenProvider
from tests import appkit as kit
from tests.appkit import AUTH
from tests.fakehttp import LEGACY
from tests.servicekit import FakeLS, make_app, running

V = "sam2-test-v1"


@pytest.fixture()
def ls():
    fake = FakeLS()
    yield fake
    fake.close()


def _client(url: str) -> LabelStudioClient:
    return LabelStudioClient(url, TokenProvider(url, LEGACY, timeout_s=5), timeout_s=5)


def test_first_write_adopts_the_newest_of_ours_and_deletes_our_duplicates(ls):
    """What a kill -9 mid-job leaves behind: two of ours (stale 6 frames, newer 24), one of another model version."""
    stale = ls.add_prediction(1, [{"n": 6}], V)
    newer = ls.add_prediction(1, [{"n": 24}], V)
    other = ls.add_prediction(1, [{"n": 3}], "someone-else")
    pid = PredictionWriter(_client(ls.url), retry_s=0).write(1, [{"n": 24, "new": True}], V, known_id=None,
                                                               final=True)
    assert pid == newer
    assert [p["id"] for p in ls.ours(1, V)] == [newer] and ls.predictions[newer]["result"] == [{"n": 24, "new": True}]
    assert other in ls.predictions and stale not in ls.predictions


def test_concurrent_first_writes_create_exactly_one(ls):
    writer = PredictionWriter(_client(ls.url), retry_s=0)
    slow = ls.host.routes["/api/predictions/"]
    ls.host.routes["/api/predictions/"] = lambda r: (time.sleep(0.3), slow(r))[1]  # widen the race window
    threads = [threading.Thread(target=writer.write, args=(2, [{"i": i}], V), kwargs={"known_id": None, "final": False})
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ls.ours(2, V)) == 1


def test_a_deleted_prediction_is_recreated(ls):
    writer = PredictionWriter(_client(ls.url), retry_s=0)
    pid = writer.write(3, [{"a": 1}], V, known_id=None, final=True)
    del ls.predictions[pid]
    pid2 = writer.write(3, [{"a": 2}], V, known_id=pid, final=True)
    assert pid2 != pid and [p["result"] for p in ls.ours(3, V)] == [[{"a": 2}]]


def test_a_final_write_is_retried_with_backoff_until_ls_answers(ls):
    ls.fail_writes = 3
    writer = PredictionWriter(_client(ls.url), retry_s=10, first_delay_s=0.1)
    t0 = time.monotonic()
    pid = writer.write(4, [{"ok": 1}], V, known_id=None, final=True)
    assert ls.predictions[pid]["result"] == [{"ok": 1}] and len(ls.ours(4, V)) == 1
    assert 0.1 + 0.2 + 0.4 - 0.05 < time.monotonic() - t0 < 5  # three backoffs, doubling


def test_a_partial_write_is_not_retried_and_a_final_one_gives_up_after_its_budget(ls):
    ls.fail_writes = 1000
    writer = PredictionWriter(_client(ls.url), retry_s=0.5, first_delay_s=0.1)
    with pytest.raises(LabelStudioUnavailable):
        writer.write(5, [], V, known_id=None, final=False)
    posts = len([s for s in ls.host.seen if s["method"] == "POST"])
    assert posts == 1
    t0 = time.monotonic()
    with pytest.raises(LabelStudioUnavailable):
        writer.write(5, [], V, known_id=None, final=True)
    assert time.monotonic() - t0 < 2


def test_ls_down_while_a_job_writes_then_back(media, model_128_f32, tmp_path, ls):
    """The job's final write meets LS answering 503; it retries (holding no lock: the task answers meanwhile) and
    the prediction lands once LS is back. One prediction of our version in the end."""
    size = media[1]
    ls.add_task(kit.frames_task(601, "cup", 8))
    with running(make_app(media[0], model_128_f32, tmp_path, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY="0" * 40,
                          WRITE_INTERVAL_S=300, LS_WRITE_RETRY_S=30, PREDICT_TIME_BUDGET_S=1)) as app:
        client, version = app.test_client(), app.config["SERVICE"].model.version
        ls.fail_writes = 10**6
        task = kit.frames_task(601, "cup", 8)
        assert kit.predict(client, task, kit.FRAMES_CONFIG, [kit.point("a", 0, 50, 50, size)],
                           headers=AUTH).status_code == 200
        deadline = time.monotonic() + 60
        while not client.get("/jobs/601", headers=AUTH).get_json().get("write_error") and \
                len([s for s in ls.host.seen if s["method"] == "POST"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/jobs/601", headers=AUTH).get_json()["state"] == "running"  # still retrying
        t0 = time.monotonic()
        resp = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.point("a", 0, 50, 50, size)], headers=AUTH)
        assert resp.status_code == 200 and time.monotonic() - t0 < 5  # the retrying job holds no lock
        ls.fail_writes = 0
        status = kit.wait_job(client, 601, timeout=60, headers=AUTH)
        assert status["state"] == "done" and status["write_error"] is None, status
        ours = ls.ours(601, version)
        assert len(ours) == 1 and len(kit.brushes(ours[0]["result"])) == 8


def test_reconcile_keeps_the_given_one_and_deletes_our_other_duplicates(ls):
    a, b = ls.add_prediction(7, [{"n": 1}], V), ls.add_prediction(7, [{"n": 2}], V)
    other = ls.add_prediction(7, [], "other")
    assert PredictionWriter(_client(ls.url), retry_s=0).reconcile(7, V, keep=a) == a
    assert set(ls.predictions) >= {a, other} and b not in ls.predictions


def test_a_batch_answer_that_ls_stores_beside_our_job_leaves_one_prediction(media, model_128_f32, tmp_path, ls):
    """LS stores a batch /predict answer as a prediction of our version itself; our job writes its own: within a
    few seconds one is left, complete."""
    size = media[1]
    task = kit.frames_task(602, "cup", 6, annotations=[{"id": 3, "result": [kit.point("a", 0, 50, 50, size)]}])
    ls.add_task(task)
    with running(make_app(media[0], model_128_f32, tmp_path, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY="0" * 40,
                          PREDICT_TIME_BUDGET_S=60)) as app:
        client, version = app.test_client(), app.config["SERVICE"].model.version
        body = {"tasks": [task], "label_config": kit.FRAMES_CONFIG, "project": "1.1", "params": {"context": None}}
        answer = client.post("/predict", json=body, headers=AUTH).get_json()["results"][0]
        assert kit.wait_job(client, 602, headers=AUTH)["state"] == "done"
        ls.add_prediction(602, answer["result"], answer["model_version"])  # what LS does with the answer
        assert len(ls.ours(602, version)) == 2
        deadline = time.monotonic() + 20
        while len(ls.ours(602, version)) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        ours = ls.ours(602, version)
        assert len(ours) == 1 and len(kit.brushes(ours[0]["result"])) == 6
