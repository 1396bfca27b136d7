"""Issue 9, High 1 and 6 and the medium caps: bodies, JSON depth, basic auth bytes, object/point/frame/size caps, RLE.

Each test fails on the code before the fix (no body cap, RecursionError -> 500, str compare_digest -> 500, no caps,
RLE size taken from the result)."""
from __future__ import annotations

import base64
import json
import time
import tracemalloc

import numpy as np
import pytest

from backend.ls import rle as rle_mod
from backend.ls.rle import mask_to_rle, rle_to_mask
from tests import appkit as kit
from tests.appkit import AUTH, N
from tests.servicekit import make_app, running


@pytest.fixture(scope="module")
def capped(media, model_128_f32, tmp_path_factory):
    with running(make_app(media[0], model_128_f32, tmp_path_factory.mktemp("capped"), MAX_BODY_MB=0.5,
                          MAX_OBJECTS=2, MAX_POINTS=3, MAX_FRAMES=12, MAX_JSON_DEPTH=32)) as app:
        yield app


def _error(resp, status):
    body = resp.get_json()
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and "Traceback" not in body["error"]
    return body["error"]


def test_a_body_over_the_cap_is_413_naming_the_setting(capped):
    client = capped.test_client()
    big = json.dumps({"action": "ANNOTATION_CREATED", "pad": "x" * 1_000_000})
    for path, headers in (("/webhook", {}), ("/predict", AUTH), ("/setup", AUTH)):
        msg = _error(client.post(path, data=big, content_type="application/json", headers=headers), 413)
        assert "MAX_BODY_MB" in msg


def test_a_chunked_body_over_the_cap_is_413_too(capped):
    """No Content-Length (chunked): the stream is cut at the cap instead of read whole."""
    import io
    client = capped.test_client()
    resp = client.post("/webhook", input_stream=io.BytesIO(b'{"a": "' + b"x" * 1_000_000 + b'"}'),
                       headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                       environ_overrides={"wsgi.input_terminated": True})
    assert "MAX_BODY_MB" in _error(resp, 413)


@pytest.mark.parametrize("raw", [b"[" * 200_000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[" * 33 + b"]" * 33])
def test_deep_json_is_400_not_a_recursion_error(capped, raw):
    client = capped.test_client()
    for path, headers in (("/webhook", {}), ("/predict", AUTH)):
        msg = _error(client.post(path, data=raw, content_type="application/json", headers=headers), 400)
        assert "MAX_JSON_DEPTH" in msg


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe\x00garbage", b"[1, 2]", b'"text"', b'{"a": NaN'])
def test_malformed_bodies_are_400(capped, raw):
    _error(capped.test_client().post("/predict", data=raw, content_type="application/json", headers=AUTH), 400)


@pytest.mark.parametrize("value, why", [(b"NaN", "expected a JSON value"), (b"Infinity", "expected a JSON value"),
                                        (b"1e400", "infinity"), (b'"\\ud800"', "surrogate")])
def test_json_that_only_python_accepts_is_400(capped, value, why):
    """Strict RFC 8259: a webhook that is fine but for one non-JSON value is refused, not taken (json.loads took it)."""
    raw = b'{"action": "PROJECT_UPDATED", "text": ' + value + b"}"
    assert json.loads(raw)  # Python's own parser would accept it
    msg = _error(capped.test_client().post("/webhook", data=raw, content_type="application/json", headers=AUTH), 400)
    assert "not valid JSON" in msg and why in msg


def test_non_utf8_bodies_say_so(capped):
    raw = '{"action": "PROJECT_UPDATED"}'.encode("utf-16")
    msg = _error(capped.test_client().post("/webhook", data=raw, content_type="application/json", headers=AUTH), 400)
    assert "not UTF-8" in msg


def test_brackets_inside_strings_do_not_count_as_depth(capped):
    body = {"action": "PROJECT_UPDATED", "text": "[" * 10_000}
    resp = capped.test_client().post("/webhook", json=body, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()


@pytest.mark.parametrize("cred", ["ls:sécret", "lś:secret", "ls:secret\u2603", "\u00ff:\u00ff"])
def test_non_ascii_credentials_are_401_not_500(capped, cred):
    headers = {"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()}
    client = capped.test_client()
    _error(client.post("/setup", json={}, headers=headers), 401)
    # on /webhook a wrong credential only makes the call untrusted: the same 202 as any unauthenticated webhook
    assert client.post("/webhook", json={"action": "X"}, headers=headers).status_code == 202


@pytest.mark.parametrize("header", ["Basic !!!notbase64", "Basic " + base64.b64encode(b"ls:secret:extra").decode(),
                                    "Basic " + base64.b64encode(b"ls:secre").decode(), "Bearer ls:secret",
                                    "Basic " + base64.b64encode(b"\xff\xfe:secret").decode()])
def test_near_miss_credentials_are_401(capped, header):
    _error(capped.test_client().post("/setup", json={}, headers={"Authorization": header}), 401)


def test_too_many_objects_is_400_naming_max_objects(capped, media):
    size = media[1]
    ctx = [kit.point(f"p{i}", 0, 10 + 25 * i, 30, size, label=lab) for i, lab in enumerate(["Car", "Person", "Car#1"])]
    msg = _error(kit.predict(capped.test_client(), kit.frames_task(901, "cup", 8), kit.FRAMES_CONFIG, ctx,
                             headers=AUTH), 400)
    assert "MAX_OBJECTS" in msg


def test_too_many_points_is_400_and_the_task_still_works(capped, media):
    """Clicks inside object 1's mask refine it; the 4th prompt of the task is past MAX_POINTS=3: 400, nothing kept."""
    (w, h), client = media[1], capped.test_client()
    task = kit.frames_task(902, "cup", 8)
    first = [kit.point("p0", 0, 50, 50, (w, h))]
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, first, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    mask = next(m for (rid, f), m in kit.masks_of(resp.get_json()["results"][0]["result"]).items() if f == 0)
    ys, xs = np.nonzero(mask)
    inside = [kit.point(f"p{i}", 0, 100 * (xs[k] + 0.5) / w, 100 * (ys[k] + 0.5) / h, (w, h))
              for i, k in zip((1, 2, 3), np.linspace(0, len(xs) - 1, 3).astype(int))]
    assert "MAX_POINTS" in _error(kit.predict(client, task, kit.FRAMES_CONFIG, first + inside, headers=AUTH), 400)
    tracker = capped.config["SERVICE"].sessions.peek(902).tracker
    assert set(tracker.ledger.entries) == {"p0"}  # the refused prompt left no trace in the ledger
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, first + inside[:2], headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    assert set(tracker.ledger.entries) == {"p0", "p1", "p2"}


def test_too_many_frames_is_400_before_any_download(capped):
    task = kit.frames_task(903, "cup", 13)
    task["data"]["frames"][-1] = "https://media.example.org/never-fetched.jpg"
    msg = _error(kit.predict(capped.test_client(), task, kit.FRAMES_CONFIG, [kit.point("p", 0, 10, 10, (64, 64))],
                             headers=AUTH), 400)
    assert "MAX_FRAMES" in msg


def test_frames_larger_than_max_frame_pixels_are_400(media, model_128_f32, tmp_path):
    w, h = media[1]
    with running(make_app(media[0], model_128_f32, tmp_path, MAX_FRAME_PIXELS=w * h - 1)) as app:
        msg = _error(kit.predict(app.test_client(), kit.frames_task(904, "cup", 4), kit.FRAMES_CONFIG,
                                 [kit.point("p", 0, 10, 10, media[1])], headers=AUTH), 400)
    assert "MAX_FRAME_PIXELS" in msg


@pytest.mark.parametrize("var, value", [("MAX_BODY_MB", "lots"), ("MAX_OBJECTS", "0"), ("MAX_JSON_DEPTH", "1"),
                                        ("TASK_LOCK_WAIT_S", "-1"), ("WEBHOOK_RATE_PER_MIN", "x"),
                                        ("WEBHOOK_SECRET", "short"), ("HEALTH_PORT", "70000"),
                                        ("SESSION_MAX_MB", "0"), ("LS_WRITE_RETRY_S", "soon")])
def test_every_limit_setting_fails_fast_naming_itself(model_128_f32, var, value):
    from backend.settings import Settings, SettingsError
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({"MODEL_DIR": str(model_128_f32), var: value})


# ---- RLE: the declared size is checked against the frames before anything is decoded ----
def _huge_rle(width: int, height: int) -> list[int]:
    """A short RLE whose header declares width x height RGBA values (~20 KB: runs of 65536 zeros)."""
    return mask_to_rle(np.zeros((64, 64 * 64), dtype=bool))[:7] + [0] * 20000


def test_rle_of_another_size_is_refused_before_decoding():
    rle = _huge_rle(32767, 32768)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="frames are 640x480"):
            rle_to_mask(rle, 32768, 32767, frame_size=(640, 480))
        with pytest.raises(ValueError, match="pixels"):
            rle_to_mask(rle, 32768, 32767)  # no frame size known: still capped
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"refusing a huge RLE allocated {peak / 1e6:.0f} MB"


def test_rle_header_without_expected_length_is_capped():
    header = np.unpackbits(np.array([4 * rle_mod.MAX_MASK_PIXELS + 4], dtype=">u4").view(np.uint8))
    bits = np.concatenate([header, np.zeros(21 + 64, dtype=np.uint8)])
    with pytest.raises(ValueError, match="more than"):
        rle_mod.decode_rle(np.packbits(bits).tolist())


def test_a_stored_prediction_declaring_a_huge_mask_is_ignored_fast(media, model_128_f32, tmp_path):
    """Our own earlier prediction in the task, with a result declaring 32767x32768: not decoded (was ~5 GB)."""
    size = media[1]
    with running(make_app(media[0], model_128_f32, tmp_path)) as app:
        service = app.config["SERVICE"]
        bad = {"id": "sam2-1-0", "type": "brushlabels", "from_name": "mask", "to_name": "frames", "item_index": 0,
               "original_width": 32767, "original_height": 32768,
               "value": {"format": "rle", "rle": _huge_rle(32767, 32768), "brushlabels": ["Car"]}}
        task = kit.frames_task(905, "cup", 4, predictions=[{"model_version": service.model.version,
                                                             "result": [bad], "id": 1}])
        t0 = time.monotonic()
        resp = kit.predict(app.test_client(), task, kit.FRAMES_CONFIG, [kit.point("p", 0, 50, 50, size)],
                           headers=AUTH)
        assert resp.status_code == 200, resp.get_json()
        assert time.monotonic() - t0 < 60
        from backend.ls.identity import decode_stored
        assert decode_stored(bad, size) is None


def test_masks_are_stored_compressed_and_counted(client, media):
    """A tracked task's masks take far less than bit-packed full-resolution masks, and the store counts them."""
    size = media[1]
    resp = kit.predict(client, kit.frames_task(906, "cup", N), kit.FRAMES_CONFIG,
                       [kit.rect("r", 0, 30, 30, 30, 30, size)], headers=AUTH)
    assert resp.status_code == 200
    kit.wait_job(client, 906, headers=AUTH)
    service = client.application.config["SERVICE"]
    tracker = service.sessions.peek(906).tracker
    packed_size = len(tracker.packed) * ((size[0] * size[1] + 7) // 8)
    stored = sum(len(b) for b in tracker.packed.values())
    assert len(tracker.packed) == N and stored < packed_size / 4, (stored, packed_size)
    assert service.sessions.nbytes >= stored
    kit.predict(client, kit.frames_task(906, "cup", N), kit.FRAMES_CONFIG, None, headers=AUTH)  # renders results
    held = service.sessions.peek(906).nbytes()
    assert stored < held < packed_size, (stored, held, packed_size)  # rendered RLE kept as bytes, not int lists
