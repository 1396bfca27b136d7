"""The nuclio-dashboard endpoints as CVAT's LambdaGateway calls them (headers, bodies, URL with credentials)."""
import io
import json
import threading
from dataclasses import replace

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from backend.cvat.dashboard import create_blueprint
from backend.settings import CvatSettings
from tests.appkit import AUTH
from tests.cvat.test_shapes import b64_image
from tests.cvat.test_tracker import as_cvat

NAME = "sam2-tracker"
# what CVAT's LambdaGateway._http adds to every dashboard call (settings NUCLIO: namespace nuclio, timeout 120 s)
GATEWAY = {"x-nuclio-project-name": "cvat", "x-nuclio-function-namespace": "nuclio",
           "x-nuclio-invoke-via": "domain-name", "X-Nuclio-Invoke-Timeout": "120s"}
INVOKE = {**GATEWAY, "x-nuclio-function-name": NAME, "x-nuclio-path": "/"}


def cvat_reads(item: dict) -> dict:
    """The fields CVAT's LambdaFunction reads from a dashboard function, checked the way it uses them."""
    meta = item["metadata"]["annotations"]
    shapes = [s.strip() for s in meta["supported_shape_types"].split(",") if s.strip()]
    json.loads(meta.get("spec") or "[]")
    return {"id": item["metadata"]["name"], "kind": meta["type"], "name": meta.get("name"),
            "version": int(meta.get("version", "1")), "description": item["spec"]["description"],
            "port": item["status"].get("httpPort"), "shapes": shapes}


def test_cvat_lists_and_reads_the_tracker(client):
    listed = client.get("/api/functions", headers={**GATEWAY, **AUTH})
    assert listed.status_code == 200 and list(listed.json) == [NAME]
    got = cvat_reads(listed.json[NAME])
    assert got["id"] == NAME and got["kind"] == "tracker" and got["shapes"] == ["rectangle", "polygon", "mask"]
    assert got["description"] and got["version"] == 1 and isinstance(got["port"], int)
    one = client.get(f"/api/functions/{NAME}", headers={**GATEWAY, **AUTH})
    assert one.status_code == 200 and one.json == listed.json[NAME]
    missing = client.get("/api/functions/other", headers=AUTH)
    assert missing.status_code == 404 and NAME in missing.json["error"]


def test_invocations_track_a_clip_like_the_tracker_itself(client, clip, make_tracker):
    start = {"image": clip.b64[0], "shapes": [{"type": "rectangle", "points": [200, 100, 420, 380]},
                                              {"type": "polygon", "points": [20, 30, 150, 30, 150, 200]}],
             "states": []}
    local = make_tracker()
    mine = local.track(start)
    r = client.post("/api/function_invocations", json=start, headers={**INVOKE, **AUTH})
    assert r.status_code == 200 and r.json["shapes"] == mine["shapes"]
    states = r.json["states"]
    for frame in (1, 2, 3):
        body = {"image": clip.b64[frame], "shapes": [None, None], "states": as_cvat(states)}
        r = client.post("/api/function_invocations", json=body, headers={**INVOKE, **AUTH})
        mine = local.track({**body, "states": as_cvat(mine["states"])})
        assert r.status_code == 200 and r.json["shapes"] == mine["shapes"]
        states = r.json["states"]
        assert [s["frame"] for s in states] == [frame, frame]


@pytest.mark.parametrize("headers,body,status,msg", [
    ({}, {"image": "x"}, 400, "x-nuclio-function-name"),
    ({"x-nuclio-function-name": "other"}, {"image": "x"}, 404, "not found"),
    ({"x-nuclio-function-name": NAME}, {"image": "@@@", "shapes": [[1, 2, 3, 4]], "states": []}, 400, "base64"),
    ({"x-nuclio-function-name": NAME}, {"image": b64_image(8, 8), "shapes": [None], "states": [{"v": 1}]}, 400,
     "malformed"),
])
def test_invocation_errors_say_whose_fault(client, headers, body, status, msg):
    r = client.post("/api/function_invocations", json=body, headers={**GATEWAY, **headers, **AUTH})
    assert r.status_code == status and msg in r.json["error"]


def test_not_json_and_no_auth(client):
    r = client.post("/api/function_invocations", data="image=1", headers={**INVOKE, **AUTH})
    assert r.status_code == 400 and "JSON" in r.json["error"]
    r = client.post("/api/function_invocations", data="{not json", content_type="application/json",
                    headers={**INVOKE, **AUTH})
    assert r.status_code == 400 and "not valid JSON" in r.json["error"]
    assert client.get("/api/functions").status_code == 401


class _Model:
    state, version = "ready", "test"


@pytest.fixture
def small_app(make_tracker):
    settings = replace(CvatSettings(), max_body_bytes=50_000, max_image_pixels=10_000)
    app = Flask(__name__)
    app.register_blueprint(create_blueprint(settings, make_tracker(max_image_pixels=10_000), _Model()))
    return app


def test_caps_answer_413(small_app):
    client = small_app.test_client()
    big = {"image": "A" * 60_000, "shapes": [[1, 2, 3, 4]], "states": []}
    r = client.post("/api/function_invocations", json=big, headers=INVOKE)
    assert r.status_code == 413 and "CVAT_MAX_BODY_MB" in r.json["error"]
    huge = {"image": b64_image(120, 100), "shapes": [[1, 2, 3, 4]], "states": []}
    r = client.post("/api/function_invocations", json=huge, headers=INVOKE)
    assert r.status_code == 413 and "120x100 = 12000 pixels" in r.json["error"]
    # a body with no Content-Length (chunked) is cut at the cap too
    payload = json.dumps(big).encode()
    r = client.post("/api/function_invocations", input_stream=io.BytesIO(payload),
                    environ_overrides={"wsgi.input_terminated": True},  # a WSGI server's de-chunked body
                    headers={**INVOKE, "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert r.status_code == 413, r.json


def test_over_http_with_credentials_in_the_nuclio_host(app, clip):
    """CVAT builds "{scheme}://{CVAT_NUCLIO_HOST}:{port}" and calls it with requests, which sends the URL's
    user:password as basic auth: CVAT_NUCLIO_HOST=user:pass@host passes our BASIC_AUTH with no change to CVAT."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://ls:secret@127.0.0.1:{server.server_port}"
        with requests.Session() as s:
            listed = s.request("get", base + "/api/functions", headers=GATEWAY, timeout=120)
            assert listed.status_code == 200 and NAME in listed.json()
            body = {"image": clip.b64[0], "shapes": [{"type": "rectangle", "points": [200, 100, 420, 380]}],
                    "states": []}
            r = s.request("post", base + "/api/function_invocations", headers=INVOKE, json=body, timeout=120)
            assert r.status_code == 200 and r.json()["shapes"][0]["type"] == "rectangle"
            anon = s.get(f"http://127.0.0.1:{server.server_port}/api/functions", timeout=30)
            assert anon.status_code == 401
    finally:
        server.shutdown()


def test_metrics_count_cvat_sessions(client, clip):
    body = {"image": clip.b64[0], "shapes": [{"type": "rectangle", "points": [200, 100, 420, 380]}], "states": []}
    assert client.post("/api/function_invocations", json=body, headers={**INVOKE, **AUTH}).status_code == 200
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    line = next(ln for ln in text.splitlines() if ln.startswith("sam2_cvat_sessions "))
    assert float(line.split()[1]) >= 1
    assert "sam2_cvat_reinitialised_total" in text
