"""The app's endpoints in-process under arbitrary bodies: every answer is 2xx/4xx (or 502/503 for upstream media or
a model still loading), never a 500, always JSON `{"error": ...}` without a traceback when it is an error, and the
service keeps serving a real task afterwards. Bodies: raw bytes, any JSON, deep nesting, and LS-shaped requests
whose tasks and regions are fuzzed."""
from __future__ import annotations

import copy
import json

from hypothesis import example, given
from hypothesis import strategies as st

from tests import appkit as kit
from tests.appkit import AUTH
from tests.fuzz.test_fuzz_regions import json_value, mutated

SIZE = (640, 480)  # the app fixture's cup frames
ENDPOINTS = ["/predict", "/setup", "/webhook"]


def _check(resp):
    assert resp.status_code < 500 or resp.status_code in (502, 503), (resp.status_code, resp.get_data()[:500])
    if resp.status_code >= 400:
        body = resp.get_json(silent=True)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), resp.get_data()[:300]
        assert "Traceback" not in body["error"] and "/work/" not in body["error"]


tasks = st.builds(
    lambda tid, frames, extra: {"id": tid, "data": {"frames": frames}, **extra},
    st.one_of(st.integers(-5, 10**15), json_value),
    st.one_of(st.lists(st.sampled_from(["/data/local-files/?d=cup/00000.jpg", "/data/local-files/?d=cup/00001.jpg",
                                        "/data/local-files/?d=../../etc/passwd", "/data/local-files/?d=%00",
                                        "http://127.0.0.1:1/x.jpg", "", "x"]), max_size=3), json_value),
    st.dictionaries(st.sampled_from(["annotations", "drafts", "predictions", "data"]), json_value, max_size=2),
)
contexts = st.one_of(st.none(), json_value,
                     st.builds(lambda r: {"result": r}, st.lists(st.one_of(mutated(), json_value), max_size=3)))
predict_bodies = st.builds(
    lambda ts, cfg, ctx, project: {"tasks": ts, "label_config": cfg, "project": project,
                                   "params": {"context": ctx}},
    st.one_of(st.lists(tasks, min_size=1, max_size=2), json_value),
    st.one_of(st.sampled_from([kit.FRAMES_CONFIG, kit.VIDEO_CONFIG, "<View/>", "<View><Image", ""]), json_value),
    contexts, st.one_of(st.sampled_from(["1.1700000000", "x", ""]), json_value))
webhook_bodies = st.builds(
    lambda action, task, ann: {"action": action, "project": {"id": 1, "label_config": kit.FRAMES_CONFIG},
                               "task": task, "annotation": ann},
    st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "PROJECT_UPDATED", "X"]), tasks,
    st.one_of(json_value, st.builds(lambda r: {"id": 1, "result": r}, st.lists(mutated(), max_size=3))))


@given(path=st.sampled_from(ENDPOINTS), raw=st.one_of(st.binary(max_size=300), st.text(max_size=300)),
       ctype=st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1", ""]),
       auth=st.booleans())
def test_raw_bodies_never_500(app, path, raw, ctype, auth):
    client = app.test_client()
    _check(client.post(path, data=raw, content_type=ctype or None, headers=AUTH if auth else {}))


@given(path=st.sampled_from(ENDPOINTS), body=json_value, auth=st.booleans())
def test_any_json_never_500(app, path, body, auth):
    _check(app.test_client().post(path, json=body, headers=AUTH if auth else {}))


@given(depth=st.integers(1, 300_000), opener=st.sampled_from(["[", '{"a":']), path=st.sampled_from(ENDPOINTS))
def test_deep_nesting_is_a_400_not_a_recursion_error(app, depth, opener, path):
    resp = app.test_client().post(path, data=opener * depth, content_type="application/json", headers=AUTH)
    _check(resp)
    assert resp.status_code in (400, 413, 202)


_CUP = {"id": 991, "data": {"frames": ["/data/local-files/?d=cup/00000.jpg", "/data/local-files/?d=cup/00001.jpg"]}}
_CUP_VIDEO = {"id": 992, "data": {"video": "/data/local-files/?d=cup.mp4"}}


@given(body=predict_bodies)
@example(body={"tasks": [_CUP], "label_config": kit.FRAMES_CONFIG,  # an unhashable `type` (found by this test)
               "params": {"context": {"result": [{"id": "x", "type": [], "from_name": "box"}]}}})
@example(body={"tasks": [_CUP_VIDEO], "label_config": kit.VIDEO_CONFIG,  # an unhashable region id in a labels result
               "params": {"context": {"result": [{"id": [1], "type": "labels", "from_name": "videoLabels",
                                                  "value": {"labels": ["Car"]}}]}}})
def test_ls_shaped_predict_requests_never_500(app, body):
    _check(app.test_client().post("/predict", json=body, headers=AUTH))


@given(body=webhook_bodies, auth=st.booleans())
def test_ls_shaped_webhooks_never_500(app, body, auth):
    _check(app.test_client().post("/webhook", json=body, headers=AUTH if auth else {}))


@given(name=st.text(max_size=20), password=st.text(max_size=20), path=st.sampled_from(ENDPOINTS + ["/metrics"]))
def test_any_basic_auth_credentials_are_401_or_accepted_never_500(app, name, password, path):
    import base64
    token = base64.b64encode(f"{name}:{password}".encode("utf-8", "surrogatepass")).decode()
    client = app.test_client()
    resp = client.post(path, json={}, headers={"Authorization": "Basic " + token}) if path != "/metrics" else \
        client.get(path, headers={"Authorization": "Basic " + token})
    _check(resp)


def test_the_service_still_serves_after_the_fuzzing(app, media):
    _, size = media
    task = kit.frames_task(990, "cup", 3)
    resp = kit.predict(app.test_client(), task, kit.FRAMES_CONFIG, [kit.rect("r", 0, 30, 20, 40, 60, size)],
                       headers=AUTH)
    assert resp.status_code == 200 and len(kit.brushes(resp.get_json()["results"][0]["result"])) == 3
    json.dumps(copy.deepcopy(resp.get_json()))
