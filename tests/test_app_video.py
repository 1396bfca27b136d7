"""`<Video>` + `<VideoRectangle>` tasks: each region is an object, answered as its own region with box keyframes."""
from __future__ import annotations

from tests import appkit as kit
from tests.appkit import AUTH, N


def _vrect(rid: str, label: str, frame: int, x: float, y: float, w: float, h: float) -> dict:
    return {"id": rid, "from_name": "box", "to_name": "video", "type": "videorectangle", "origin": "manual",
            "value": {"framesCount": N, "duration": N / 25, "labels": [label],
                      "sequence": [{"frame": frame, "enabled": True, "rotation": 0, "x": x, "y": y, "width": w,
                                    "height": h, "time": frame / 25}]}}


def test_two_video_rectangles_come_back_as_box_sequences(client):
    task = {"id": 401, "data": {"video": "/data/local-files/?d=cup.mp4"}}
    ctx = [_vrect("objA", "Car", 1, 30, 20, 40, 60), _vrect("objB", "Person", 4, 5, 5, 20, 30)]
    resp = kit.predict(client, task, kit.VIDEO_CONFIG, ctx, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    kit.wait_job(client, 401, headers=AUTH)
    results = kit.predict(client, task, kit.VIDEO_CONFIG, None, headers=AUTH).get_json()["results"][0]["result"]
    by_id = {r["id"]: r for r in results}
    assert set(by_id) == {"objA", "objB"}
    for rid, label, first in (("objA", "Car", 1), ("objB", "Person", 1)):
        r = by_id[rid]
        assert r["type"] == "videorectangle" and r["from_name"] == "box" and r["to_name"] == "video"
        assert r["value"]["labels"] == [label] and r["value"]["framesCount"] == N
        seq = r["value"]["sequence"]
        frames = [k["frame"] for k in seq]
        assert frames == sorted(frames) and frames[0] >= first and frames[-1] <= N  # 1-based
        for k in seq:
            assert abs(k["time"] - k["frame"] / 25.0) < 1e-9
            assert 0 <= k["x"] <= 100 and 0 < k["width"] <= 100
    # the annotator's keyframe is kept exactly where it was drawn
    first_a = by_id["objA"]["value"]["sequence"][0]
    assert (first_a["frame"], round(first_a["x"], 6), round(first_a["y"], 6)) == (1, 30.0, 20.0)


def test_echoed_keyframes_are_not_new_prompts(app, client):
    task = {"id": 402, "data": {"video": "/data/local-files/?d=cup.mp4"}}
    kit.predict(client, task, kit.VIDEO_CONFIG, [_vrect("objA", "Car", 1, 30, 20, 40, 60)], headers=AUTH)
    kit.wait_job(client, 402, headers=AUTH)
    results = kit.predict(client, task, kit.VIDEO_CONFIG, None, headers=AUTH).get_json()["results"][0]["result"]
    tracker = app.config["SERVICE"]._entries[402].tracker
    version = tracker.version
    # LS sends the accepted region back with all our keyframes: nothing changed, nothing re-runs
    kit.predict(client, task, kit.VIDEO_CONFIG, [dict(results[0], origin="prediction")], headers=AUTH)
    assert tracker.version == version and len(tracker.applied) == 1
