"""Issue 9 (medium): a bad saved annotation never blocks its task; the spill folder going away is a clear error."""
from __future__ import annotations

import shutil

import numpy as np

from tests import appkit as kit
from tests.appkit import AUTH, N


def _vrect(rid, frame, x, y, w, h, label="Car"):
    return {"id": rid, "from_name": "box", "to_name": "video", "type": "videorectangle", "origin": "manual",
            "value": {"framesCount": N, "duration": N / 25, "labels": [label],
                      "sequence": [{"frame": frame, "enabled": True, "rotation": 0, "x": x, "y": y, "width": w,
                                    "height": h, "time": frame / 25}]}}


def test_a_saved_keyframe_dragged_off_the_frame_does_not_block_the_task(client):
    """A keyframe entirely outside the frame clips to zero area: the engine would refuse the box on every rebuild
    (PromptError), so each /predict of the task failed. It is skipped; the region's other keyframes still count."""
    bad = _vrect("off", 2, 120, 120, 10, 10)  # right of and below the frame
    two = _vrect("mixed", 1, 30, 20, 40, 60)
    two["value"]["sequence"].append(dict(bad["value"]["sequence"][0], frame=5))
    task = {"id": 411, "data": {"video": "/data/local-files/?d=cup.mp4"},
            "annotations": [{"id": 1, "result": [bad, two]}], "drafts": [], "predictions": []}
    resp = kit.predict(client, task, kit.VIDEO_CONFIG, [_vrect("new", 3, 10, 10, 20, 20, "Person")], headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    tracker = client.application.config["SERVICE"].sessions.peek(411).tracker
    assert set(tracker.ledger.entries) >= {"mixed@1", "new@3"} or len(tracker.applied) >= 2, tracker.ledger.entries
    kit.wait_job(client, 411, headers=AUTH)
    ids = {r["id"] for r in kit.predict(client, task, kit.VIDEO_CONFIG, None, headers=AUTH).get_json()["results"][0]
           ["result"]}
    assert {"mixed", "new"} <= ids and "off" not in ids


def test_an_interactive_keyframe_with_no_area_is_a_400(client):
    task = {"id": 412, "data": {"video": "/data/local-files/?d=cup.mp4"}}
    resp = kit.predict(client, task, kit.VIDEO_CONFIG, [_vrect("off", 2, 120, 120, 10, 10)], headers=AUTH)
    assert resp.status_code == 400 and "area" in resp.get_json()["error"]


def test_a_reference_mask_of_another_size_and_a_broken_region_do_not_block_the_task(client, media):
    """Our stored prediction holds a mask of another size and the saved annotation a region LS cannot have made:
    both are ignored (logged); the task answers and tracks the good prompts."""
    size = media[1]
    service = client.application.config["SERVICE"]
    wrong = kit.brush("sam2-1-0", 0, np.ones((10, 12), dtype=bool))
    saved = [kit.point("good", 0, 50, 50, size), dict(kit.point("bad", 0, 50, 50, size), item_index=10**6),
             dict(kit.rect("noid", 1, 10, 10, 10, 10, size), id=None), wrong]
    task = kit.frames_task(413, "cup", 8, annotations=[{"id": 1, "result": saved}],
                           predictions=[{"id": 9, "model_version": service.model.version, "result": [wrong]}])
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, [kit.point("good", 0, 50, 50, size),
                                                         kit.point("more", 4, 30, 30, size, label="Person")],
                       headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    assert {"good", "more"} <= set(service.sessions.peek(413).tracker.ledger.entries)


def test_a_spill_folder_that_disappears_does_not_break_a_click_that_needs_no_spill(media, model_128_f32, tmp_path):
    """The engine spills lazily (only past max_resident_frames), so a click on a short task answers with its masks;
    a job that does need the spill folder fails naming DATA_DIR (tests/fault/test_fault_media_spill.py)."""
    from tests.servicekit import make_app, running
    with running(make_app(media[0], model_128_f32, tmp_path)) as app:
        spill = tmp_path / "data" / "spill"
        shutil.rmtree(spill)
        spill.write_text("a file where the folder was")
        resp = kit.predict(app.test_client(), kit.frames_task(414, "cup", 4), kit.FRAMES_CONFIG,
                           [kit.point("a", 0, 50, 50, media[1])], headers=AUTH)
        assert resp.status_code == 200, resp.get_json()
        assert kit.masks_of(resp.get_json()["results"][0]["result"]), "the click got no mask"
