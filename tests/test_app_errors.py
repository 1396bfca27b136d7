"""Bad input gets a clear 4xx (or 502 for upstream media) with a JSON message, and the task's state survives."""
from __future__ import annotations

import time

import pytest

from backend.settings import Settings, SettingsError
from tests import appkit as kit
from tests.appkit import AUTH, N


@pytest.fixture()
def tracked(client, media):
    """Task 301 tracked from a box on frame 0: returns its results before any bad request."""
    _, size = media
    task = kit.frames_task(301, "cup", N)
    kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r1", 0, 30, 20, 40, 60, size)], headers=AUTH)
    kit.wait_job(client, 301, headers=AUTH)
    return task, kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()["results"][0]["result"]


def _error(resp, status: int, *words: str) -> str:
    body = resp.get_json()
    assert resp.status_code == status, body
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    for w in words:
        assert w in body["error"], body["error"]
    return body["error"]


def _still_there(client, task, before) -> None:
    after = kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()["results"][0]["result"]
    assert kit.masks_of(after).keys() == kit.masks_of(before).keys()


def test_unknown_label(client, media, tracked):
    task, before = tracked
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r2", 3, 1, 1, 9, 9, media[1], label="Dog")],
                       headers=AUTH)
    _error(resp, 400, "Dog")
    _still_there(client, task, before)


def test_region_past_the_last_frame(client, media, tracked):
    task, before = tracked
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.point("k9", N + 3, 50, 50, media[1])], headers=AUTH)
    _error(resp, 400, "item_index", str(N + 3), f"{N} frames")
    _still_there(client, task, before)


def test_negative_point_cannot_start_an_object(client, media, tracked):
    task, before = tracked
    resp = kit.predict(client, task, kit.FRAMES_CONFIG,
                       [kit.point("kn", 2, 50, 50, media[1], label="Person", positive=False)], headers=AUTH)
    _error(resp, 400, "negative")
    _still_there(client, task, before)


def test_empty_context_and_malformed_bodies(client, media):
    task = kit.frames_task(302, "cup", N)
    _error(kit.predict(client, task, kit.FRAMES_CONFIG, [], headers=AUTH), 400, "context")
    _error(client.post("/predict", data="not json", headers=AUTH), 400, "JSON")
    _error(client.post("/predict", json={"tasks": []}, headers=AUTH), 400, "tasks")
    _error(client.post("/predict", json={"tasks": [task]}, headers=AUTH), 400, "label_config")
    _error(client.get("/jobs/999999", headers=AUTH), 404, "999999")
    _error(client.get("/nope", headers=AUTH), 404)


def test_media_not_allowed_or_unreachable(client, media):
    size = media[1]
    ctx = [kit.rect("r1", 0, 10, 10, 20, 20, size)]
    evil = {"id": 303, "data": {"frames": ["http://evil.example.com/0.jpg", "http://evil.example.com/1.jpg"]}}
    _error(kit.predict(client, evil, kit.FRAMES_CONFIG, ctx, headers=AUTH), 403, "evil.example.com")
    down = {"id": 304, "data": {"frames": ["http://media.example.org:1/0.jpg"]}}
    assert kit.predict(client, down, kit.FRAMES_CONFIG, ctx, headers=AUTH).status_code == 502


def test_corrupt_media(client, media):
    size = media[1]
    bad_frames = {"id": 305, "data": {"frames": ["/data/local-files/?d=bad/00000.jpg"]}}
    _error(kit.predict(client, bad_frames, kit.FRAMES_CONFIG, [kit.rect("r1", 0, 10, 10, 20, 20, size)],
                       headers=AUTH), 400, "decoded")
    bad_video = {"id": 306, "data": {"video": "/data/local-files/?d=bad.mp4"}}
    box = {"id": "v1", "from_name": "box", "to_name": "video", "type": "videorectangle",
           "value": {"labels": ["Car"], "sequence": [{"frame": 1, "x": 5, "y": 5, "width": 10, "height": 10,
                                                      "enabled": True, "rotation": 0, "time": 0.04}]}}
    _error(kit.predict(client, bad_video, kit.VIDEO_CONFIG, [box], headers=AUTH), 400, "video")


def test_unsupported_label_config(client):
    config = '<View><Image name="img" value="$image"/><Choices name="c" toName="img"><Choice value="a"/></Choices></View>'
    _error(client.post("/setup", json={"project": "5.1", "schema": config}, headers=AUTH), 400)
    task = {"id": 307, "data": {"image": "x.jpg"}}
    msg = _error(kit.predict(client, task, config, [{"id": "a", "type": "choices"}], headers=AUTH), 400)
    assert "BrushLabels" in msg or "VideoRectangle" in msg


@pytest.mark.parametrize("env, words", [
    ({}, "MODEL_DIR is not set"),
    ({"PRECISION": "fp16"}, "PRECISION"),
    ({"WORKERS": "4"}, "WORKERS"),
    ({"BASIC_AUTH_USER": "x"}, "BASIC_AUTH_PASS"),
    ({"PREDICT_TIME_BUDGET_S": "soon"}, "PREDICT_TIME_BUDGET_S"),
    ({"MAX_SESSIONS": "0"}, "MAX_SESSIONS"),
])
def test_settings_fail_fast_naming_the_variable(model_128_f32, env, words):
    base = {} if env == {} else {"MODEL_DIR": str(model_128_f32)}
    with pytest.raises(SettingsError, match=words):
        Settings.from_env({**base, **env})


def test_settings_defaults(model_128_f32):
    s = Settings.from_env({"MODEL_DIR": str(model_128_f32)})
    assert (s.precision, s.predict_time_budget_s, s.max_sessions, s.basic_auth) == ("auto", 20.0, 8, None)


def test_unauthenticated_webhook_is_not_trusted(client, media):
    """LS sends webhooks without basic auth: an unauthenticated one is accepted with the same answer whatever it
    names (no oracle), and its payload is never trusted (the task is re-read from LS later, if at all)."""
    task = kit.frames_task(308, "cup", N)
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": kit.FRAMES_CONFIG}, "task": task,
            "annotation": {"id": 1, "result": [kit.rect("r1", 0, 10, 10, 20, 20, media[1])]}}
    answers = [client.post("/webhook", json=b) for b in (body, {**body, "task": {"id": 999999}},
                                                           {"action": "PROJECT_UPDATED"})]
    assert [r.status_code for r in answers] == [202] * 3
    assert len({r.get_data() for r in answers}) == 1, "the answer must not reveal whether the task exists"
    assert client.get("/jobs/308", headers=AUTH).status_code == 404, "an untrusted payload started a job"


def test_a_missing_or_unreadable_model_folder_is_a_clear_503_not_a_crash(tmp_path):
    """No crash loop: the service starts, /health answers 503 naming MODEL_DIR, requests that need the model 503."""
    from backend.app import create_app
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    for model_dir, words in (("/nonexistent", "does not exist"), (str(bad), "manifest.json")):
        app = create_app(Settings.from_env({"MODEL_DIR": model_dir, "DATA_DIR": str(tmp_path / "d")}))
        client = app.test_client()
        health = client.get("/health")
        for _ in range(50):
            if health.get_json()["state"] != "loading":
                break
            time.sleep(0.1)
            health = client.get("/health")
        body = health.get_json()
        assert health.status_code == 503 and body["state"] == "failed", body
        assert "MODEL_DIR" in body["error"] and words in body["error"] and "Traceback" not in body["error"]
        task = kit.frames_task(309, "cup", 2)
        resp = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("r", 0, 1, 1, 5, 5, (64, 48))])
        assert resp.status_code == 503 and "MODEL_DIR" in resp.get_json()["error"], resp.get_json()
        app.config["SERVICE"].shutdown()
