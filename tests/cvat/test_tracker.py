"""The tracker protocol over a real clip, with bodies as CVAT's lambda manager builds them, against the engine.

The oracle is our engine's `VideoPredictor` on the same JPEG frames as an ordinary (offline) video with the same
prompts: streaming one frame per call, trimming old memories and sharing the encoder between sessions must not
change a single pixel.
"""
import json
import logging

import pytest

from backend.cvat.shapes import TooLarge, mask_box, mask_to_rle, rle_to_mask
from backend.cvat.tracker import TrackerBusy
from backend.engine import ImageSequenceSource
from backend.serving.errors import BadRequest
from tests.cvat.conftest import FRAMES
from tests.cvat.test_shapes import b64_image

BOX_B = [20.0, 30.0, 150.0, 200.0]


def as_cvat(states):
    """What CVAT hands back: it signs json.dumps(state, separators=(",", ":")) and later json.loads the unsigned text."""
    return [json.loads(json.dumps(s, separators=(",", ":"))) for s in states]


def start_body(image, shapes):
    return {"image": image, "shapes": shapes, "states": []}


def continue_body(image, states):
    return {"image": image, "shapes": [None] * len(states), "states": as_cvat(states)}


def oracle(predictor, clip, prompts, frames=FRAMES):
    """Masks per frame per object from the engine on the clip as a whole video: [{obj: bool mask}]."""
    session = predictor.start_session(ImageSequenceSource(clip.paths[:frames]))
    try:
        for obj, (kind, prompt) in enumerate(prompts):
            if kind == "box":
                predictor.add_points(session, 0, obj, box=prompt)
            else:
                predictor.add_mask(session, 0, obj, prompt)
        return [r.masks() for r in predictor.propagate(session, start=0)]
    finally:
        predictor.close_session(session)


def encoder_calls(predictor):
    return predictor.runtime.calls("image_encoder")


def test_streamed_tracking_equals_the_engine_on_the_whole_video(make_tracker, predictor, clip):
    tracker = make_tracker()
    cup = clip.object_mask(0)
    box_a = list(mask_box(cup))
    shapes = [{"type": "rectangle", "points": box_a}, {"type": "mask", "points": mask_to_rle(cup)},
              {"type": "rectangle", "points": BOX_B}]
    expected = oracle(predictor, clip, [("box", tuple(box_a)), ("mask", cup), ("box", tuple(BOX_B))])
    last = {0: tuple(box_a), 2: tuple(BOX_B)}

    reply = tracker.track(start_body(clip.b64[0], shapes))
    sid = reply["states"][0]["session"]
    for frame in range(FRAMES):
        if frame:
            reply = tracker.track(continue_body(clip.b64[frame], reply["states"]))
        assert [s["type"] for s in reply["shapes"]] == ["rectangle", "mask", "rectangle"]
        assert [(s["session"], s["object"], s["frame"]) for s in reply["states"]] == [(sid, o, frame) for o in range(3)]
        for obj in (0, 2):  # rectangles: the box of the engine's mask, or the last box while the object is unseen
            last[obj] = mask_box(expected[frame][obj]) or last[obj]
            assert reply["shapes"][obj]["points"] == list(last[obj]), (frame, obj)
            assert reply["states"][obj]["box"] == [round(v, 2) for v in last[obj]]
        got = rle_to_mask(reply["shapes"][1]["points"], clip.width, clip.height)
        want = expected[frame][1] if expected[frame][1].any() else got
        assert (got == want).all(), f"frame {frame}: mask differs from the engine's"
    assert tracker.reinitialised == 0 and len(tracker.sessions) == 1

    # bounded memory: the stream holds its newest frames only, the tracks only what later frames can attend to
    session = tracker.sessions.peek(sid)
    assert session.source.received == FRAMES and session.source.nbytes <= 2 * clip.width * clip.height * 3
    for track in session.video.objects:
        assert list(track.cond) == [0]
        assert min(track.non_cond) >= FRAMES - 1 - 16 > 1 and len(track.non_cond) <= 17
    assert 0 < session.nbytes <= tracker.sessions.nbytes


def test_polygon_in_polygon_out(make_tracker, predictor, clip):
    tracker = make_tracker()
    poly = [250, 120, 400, 120, 420, 300, 260, 330]
    reply = tracker.track(start_body(clip.b64[0], [{"type": "polygon", "points": poly}]))
    for frame in (1, 2):
        reply = tracker.track(continue_body(clip.b64[frame], reply["states"]))
        shape = reply["shapes"][0]
        assert shape["type"] == "polygon" and len(shape["points"]) >= 6 and len(shape["points"]) % 2 == 0
        xs, ys = shape["points"][::2], shape["points"][1::2]
        assert 0 <= min(xs) <= max(xs) <= clip.width and 0 <= min(ys) <= max(ys) <= clip.height


def test_the_encoder_runs_once_per_call_across_sessions(make_tracker, predictor, clip):
    """The UI's own sequence: object A tracked from frame 0; on frame 1 the annotator draws B, so the UI first
    starts B on frame 1 (the image it just sent for A), then tracks A and B together on frame 2."""
    tracker = make_tracker()
    n0 = encoder_calls(predictor)
    a = tracker.track(start_body(clip.b64[0], [{"type": "rectangle", "points": [200, 100, 420, 380]}]))
    assert encoder_calls(predictor) - n0 == 1
    a = tracker.track(continue_body(clip.b64[1], a["states"]))
    assert encoder_calls(predictor) - n0 == 2
    b = tracker.track(start_body(clip.b64[1], [{"type": "rectangle", "points": BOX_B},
                                               {"type": "rectangle", "points": [300, 50, 500, 150]}]))
    assert encoder_calls(predictor) - n0 == 2, "the same frame sent again must not be encoded again"
    both = tracker.track(continue_body(clip.b64[2], a["states"] + b["states"]))
    assert encoder_calls(predictor) - n0 == 3, "two sessions in one call share one encoder run"
    assert [(s["session"], s["frame"]) for s in both["states"]] == \
        [(a["states"][0]["session"], 2)] + [(b["states"][0]["session"], 1)] * 2
    assert all(s is not None and s["type"] == "rectangle" for s in both["shapes"])
    assert tracker.reinitialised == 0


def test_a_lost_session_is_reinitialised_from_the_last_box(make_tracker, predictor, clip, caplog):
    tracker = make_tracker()
    gone = {"v": 1, "session": "0123456789abcdef", "object": 3, "frame": 41, "box": [200, 100, 420, 380],
            "type": "rectangle"}
    with caplog.at_level(logging.WARNING, logger="backend.cvat.tracker"):
        reply = tracker.track(continue_body(clip.b64[5], [gone]))
    assert "re-initialising it from its last box" in caplog.text and "is gone" in caplog.text
    state = reply["states"][0]
    assert state["session"] != gone["session"] and state["frame"] == 0 and state["type"] == "rectangle"
    fresh = make_tracker().track(start_body(clip.b64[5], [{"type": "rectangle", "points": gone["box"]}]))
    assert reply["shapes"] == fresh["shapes"], "re-initialising is a start with the state's box on this frame"
    nxt = tracker.track(continue_body(clip.b64[6], reply["states"]))
    assert nxt["states"][0]["session"] == state["session"] and tracker.reinitialised == 1


def test_expired_evicted_stale_and_removed_states_still_answer(make_tracker, clip, caplog):
    now = [0.0]
    tracker = make_tracker(session_ttl_s=60.0, clock=lambda: now[0])
    start = tracker.track(start_body(clip.b64[0], [{"type": "rectangle", "points": [200, 100, 420, 380]},
                                                   {"type": "mask", "points": mask_to_rle(clip.object_mask(0))}]))
    one = tracker.track(continue_body(clip.b64[1], start["states"]))
    with caplog.at_level(logging.WARNING, logger="backend.cvat.tracker"):
        # the same call again (a retry): its states are behind the session now
        again = tracker.track(continue_body(clip.b64[1], start["states"]))
        assert "stale state" in caplog.text and tracker.reinitialised == 2
        assert [s["type"] for s in again["shapes"]] == ["rectangle", "mask"]
        # CVAT stops tracking object 1: the session drops it; its old state then re-initialises
        sid = one["states"][0]["session"]
        tracker.track(continue_body(clip.b64[2], one["states"][:1]))
        assert tracker.sessions.peek(sid).video.objects.ids == [0]
        back = tracker.track(continue_body(clip.b64[2], one["states"][1:]))
        assert "no longer in its session" in caplog.text and back["shapes"][0]["type"] == "mask"
        # idle past the TTL: the session is closed and the next call re-initialises
        closed = tracker.sessions.closed
        now[0] += 61.0
        late = tracker.track(continue_body(clip.b64[3], back["states"]))
        assert tracker.sessions.closed > closed and "is gone" in caplog.text
        assert late["states"][0]["session"] != back["states"][0]["session"] and late["shapes"][0] is not None
    # a byte cap of 1: every new session evicts the others
    small = make_tracker(sessions_max_bytes=1)
    a = small.track(start_body(clip.b64[0], [{"type": "rectangle", "points": BOX_B}]))
    small.track(start_body(clip.b64[0], [{"type": "rectangle", "points": [300, 50, 500, 150]}]))
    assert len(small.sessions) == 1
    a2 = small.track(continue_body(clip.b64[1], a["states"]))
    assert small.reinitialised == 1 and a2["states"][0]["frame"] == 0


def test_a_frame_of_another_size_reinitialises_with_the_box_clipped(make_tracker, clip, caplog):
    tracker = make_tracker()
    a = tracker.track(start_body(clip.b64[0], [{"type": "rectangle", "points": [500, 300, 640, 480]}]))
    with caplog.at_level(logging.WARNING, logger="backend.cvat.tracker"):
        reply = tracker.track(continue_body(b64_image(320, 240, "JPEG"), a["states"]))
    assert "640x480 frames but this one is 320x240" in caplog.text
    x1, y1, x2, y2 = reply["shapes"][0]["points"]
    assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240


def test_bad_calls_are_4xx_and_keep_the_session(make_tracker, clip):
    tracker = make_tracker(max_image_pixels=500_000)
    a = tracker.track(start_body(clip.b64[0], [{"type": "rectangle", "points": BOX_B}]))
    with pytest.raises(BadRequest, match="not valid base64"):
        tracker.track(continue_body("not*base64", a["states"]))
    with pytest.raises(TooLarge) as e:
        tracker.track(continue_body(b64_image(1000, 600), a["states"]))
    assert e.value.status == 413
    with pytest.raises(BadRequest, match="no area inside"):
        tracker.track(start_body(clip.b64[0], [{"type": "rectangle", "points": [700, 10, 800, 40]}]))
    with pytest.raises(BadRequest, match="not inside the 640x480 image"):
        tracker.track(start_body(clip.b64[0], [{"type": "mask", "points": [0, 4, 700, 0, 701, 1]}]))
    ok = tracker.track(continue_body(clip.b64[1], a["states"]))
    assert ok["states"][0]["frame"] == 1 and tracker.reinitialised == 0


def test_a_busy_session_answers_409_and_a_closed_one_restarts(make_tracker, clip):
    tracker = make_tracker(busy_timeout_s=0.2)
    a = tracker.track(start_body(clip.b64[0], [{"type": "rectangle", "points": BOX_B}]))
    session = tracker.sessions.peek(a["states"][0]["session"])
    with session.lock:  # another call is tracking this session
        with pytest.raises(TrackerBusy) as e:
            tracker.track(continue_body(clip.b64[1], a["states"]))
    assert e.value.status == 409 and "busy" in str(e.value)
    session.closed = True  # as if evicted while this call waited for the lock
    reply = tracker.track(continue_body(clip.b64[1], a["states"]))
    assert reply["states"][0]["session"] != session.sid and reply["states"][0]["frame"] == 0
    assert tracker.reinitialised == 1


def test_an_object_the_model_never_sees_keeps_its_last_shape(tmp_path, clip, caplog):
    """A model biased to "no object" gives empty masks everywhere: every answer is still a shape, the last box's."""
    from backend.cvat.tracker import CvatTracker
    from backend.engine import EngineSettings, VideoPredictor
    from backend.settings import CvatSettings
    from tests import models

    blind = VideoPredictor(EngineSettings(model_dir=models.export_dir(128, "f32", bias=-20.0), precision="f32"))
    tracker = CvatTracker(CvatSettings(), lambda timeout: blind)
    box = [200.0, 100.0, 420.0, 380.0]
    poly = [250, 120, 400, 120, 400, 300, 250, 300]
    with caplog.at_level(logging.INFO, logger="backend.cvat.tracker"):
        reply = tracker.track(start_body(clip.b64[0], [{"type": "rectangle", "points": box},
                                                       {"type": "polygon", "points": poly}]))
        # a mask prompt is its own answer on its frame (SAM 2 uses it as the output), so frame 0 has the polygon;
        # from frame 1 the model sees nothing and both objects keep their last box
        poly_box = reply["states"][1]["box"]
        for frame in (1, 2):
            reply = tracker.track(continue_body(clip.b64[frame], reply["states"]))
            assert reply["shapes"][0] == {"type": "rectangle", "points": box}
            x1, y1, x2, y2 = poly_box
            assert reply["shapes"][1] == {"type": "polygon", "points": [x1, y1, x2, y1, x2, y2, x1, y2]}
            assert [s["box"] for s in reply["states"]] == [box, poly_box]
    assert "not visible" in caplog.text and tracker.reinitialised == 0
    tracker.close()
