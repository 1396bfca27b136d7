"""LS result builders: exact brush JSON, tight mask boxes, and keyframe thinning that LS re-interpolates faithfully."""
import numpy as np
import pytest
from label_studio_sdk.converter import brush

from backend.ls.labelconfig import parse_label_config
from backend.ls.regions import parse_regions
from backend.ls.results import box_sequence, brush_result, mask_to_box, videorectangle_result

W, H, FPS = 640, 480, 25.0


# ---- literal transcription of the LS 1.23.2 editor (percent space, 1-based frames) --------------------------------
def _ls_closest_keypoint(seq, target):  # regions/VideoRegion.js::closestKeypoint(target, onlyPrevious=false)
    before = [k for k in seq if k["frame"] <= target]
    if before:
        return before[-1]
    return next((k for k in seq if k["frame"] >= target), None)


def _ls_is_in_lifespan(seq, target):  # regions/VideoRegion.js::isInLifespan
    kp = _ls_closest_keypoint(seq, target)
    if kp:
        if kp["frame"] == target and not kp["enabled"]:
            return True
        return kp["enabled"]
    return False


def _ls_get_shape(seq, frame):  # regions/VideoRectangleRegion.js::getShape + utils/props.ts::interpolateProp
    props = ("x", "y", "width", "height")
    prev = nxt = None
    for item in seq:
        if item["frame"] == frame:
            return {p: item[p] for p in props}
        if item["frame"] > frame:
            nxt = item
            break
        prev = item
    if prev is None:
        return None
    if nxt is None:
        return {p: prev[p] for p in props}
    r = (frame - prev["frame"]) / (nxt["frame"] - prev["frame"])
    return {p: prev[p] + (nxt[p] - prev[p]) * r for p in props}


def _ls_drawn_box_px(seq, idx):
    """Pixel xyxy box LS draws at 0-based frame idx, or None (tags/object/Video/VideoRegions.jsx::Shape)."""
    frame = idx + 1
    shape = _ls_get_shape(seq, frame)
    if not (_ls_is_in_lifespan(seq, frame) and shape):
        return None
    x, y = shape["x"] * W / 100, shape["y"] * H / 100
    return x, y, x + shape["width"] * W / 100, y + shape["height"] * H / 100


# ---- brush ----------------------------------------------------------------------------------------------------------
def test_mask_to_box_is_tight_with_exclusive_max():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:7] = True
    m[8, 10] = True
    assert mask_to_box(m) == (3.0, 2.0, 11.0, 9.0)
    assert mask_to_box(np.zeros((4, 4), bool)) is None
    assert mask_to_box(np.ones((4, 6), np.uint8)) == (0.0, 0.0, 6.0, 4.0)


def test_brush_result_exact_json_and_alpha_255():
    mask = np.zeros((H, W), bool)
    mask[100:200, 50:300] = True
    res = brush_result("obj1_f3", "mask", "frames", 3, mask, "Car#1", width=W, height=H)
    rle = res["value"].pop("rle")
    assert res == {
        "id": "obj1_f3", "from_name": "mask", "to_name": "frames", "type": "brushlabels", "origin": "prediction",
        "original_width": W, "original_height": H, "image_rotation": 0, "item_index": 3,
        "value": {"format": "rle", "brushlabels": ["Car#1"]},
    }
    assert rle == brush.mask2rle(mask.astype(np.uint8) * 255)
    alpha = brush.decode_rle(rle).reshape(H, W, 4)[:, :, 3]
    np.testing.assert_array_equal(alpha, np.where(mask, 255, 0))


def test_brush_result_meta_score_origin_options():
    mask = np.ones((2, 3), bool)
    res = brush_result("a", "m", "f", 0, mask, "Car", width=3, height=2, meta_text="tracked from frame 1", score=0.9,
                       origin=None)
    assert res["meta"] == {"text": ["tracked from frame 1"]}
    assert res["score"] == 0.9 and "origin" not in res
    assert "meta" not in brush_result("a", "m", "f", 0, mask, "Car", width=3, height=2)


def test_brush_result_checks_mask_size():
    with pytest.raises(ValueError, match=r"means \(2, 3\)"):
        brush_result("a", "m", "f", 0, np.ones((3, 2), bool), "Car", width=3, height=2)


def test_brush_result_parses_back():
    shape = parse_label_config('<View><Image name="frames" valueList="$frames"/>'
                               '<BrushLabels name="mask" toName="frames"><Label value="Car"/></BrushLabels></View>')
    mask = np.zeros((H, W), bool)
    mask[7:9, 600:640] = True
    res = brush_result("r", "mask", "frames", 4, mask, "Car", width=W, height=H)
    (region,) = parse_regions([res], shape, num_frames=5, frame_size=(W, H))
    assert region.frame == 4 and region.label == "Car"
    np.testing.assert_array_equal(region.mask, mask)


# ---- box sequences --------------------------------------------------------------------------------------------------
def test_linear_motion_collapses_to_two_keyframes_with_exact_values():
    boxes = {i: (10.0 + 4 * i, 20.0 + 2 * i, 74.0 + 4 * i, 68.0 + 2 * i) for i in range(50)}
    seq = box_sequence(boxes, width=W, height=H, fps=FPS)
    assert seq == [
        {"frame": 1, "x": 10 * 100 / W, "y": 20 * 100 / H, "width": 64 * 100 / W, "height": 48 * 100 / H,
         "rotation": 0, "time": 1 / FPS, "enabled": True},
        {"frame": 50, "x": 206 * 100 / W, "y": 118 * 100 / H, "width": 64 * 100 / W, "height": 48 * 100 / H,
         "rotation": 0, "time": 50 / FPS, "enabled": True},
    ]
    assert seq[0]["time"] == 0.04 and seq[1]["time"] == 2.0


def test_static_object_with_gap_uses_enabled_like_the_editor():
    b = (64.0, 48.0, 128.0, 96.0)
    boxes = {0: b, 1: b, 2: b, 3: None, 4: None, 5: b, 6: b, 7: None}
    seq = box_sequence(boxes, width=W, height=H, fps=FPS)
    assert [(k["frame"], k["enabled"]) for k in seq] == [(1, True), (3, False), (6, True), (7, False)]
    assert [_ls_drawn_box_px(seq, i) for i in range(10)] == [b, b, b, None, None, b, b, None, None, None]


def test_single_frame_presence_and_missing_keys_count_as_absent():
    b = (0.0, 0.0, 64.0, 48.0)
    seq = box_sequence({2: b, 5: b, 6: b}, width=W, height=H, fps=FPS)
    assert [(k["frame"], k["enabled"]) for k in seq] == [(3, False), (6, True), (7, True)]
    assert [_ls_drawn_box_px(seq, i) for i in range(8)] == [None, None, b, None, None, b, b, b]


def test_nothing_present_gives_empty_sequence():
    assert box_sequence({0: None, 1: None}, width=W, height=H, fps=FPS) == []
    assert box_sequence({}, width=W, height=H, fps=FPS) == []


def _random_track(seed, n=300):
    rng = np.random.default_rng(seed)
    boxes, pos, size, vel = {}, np.array([100.0, 100.0]), np.array([80.0, 60.0]), np.array([3.0, 1.0])
    for i in range(n):
        if rng.random() < 0.05:
            vel = rng.normal(0, 4, 2)  # sudden turns
        pos = np.clip(pos + vel + rng.normal(0, 0.7, 2), 0, [W - 100, H - 100])
        size = np.clip(size + rng.normal(0, 0.5, 2), 10, 100)
        gone = (n // 3 <= i < n // 3 + 20) or (i == n - 40) or i >= n - 10
        boxes[i] = None if gone else (pos[0], pos[1], pos[0] + size[0], pos[1] + size[1])
    return boxes


@pytest.mark.parametrize("seed, tol", [(0, 1.0), (1, 1.0), (2, 0.25), (3, 3.0), (4, 0.0)])
def test_ls_reinterpolation_reproduces_every_box_within_tolerance(seed, tol):
    boxes = _random_track(seed)
    seq = box_sequence(boxes, width=W, height=H, fps=FPS, tolerance_px=tol)
    assert [k["frame"] for k in seq] == sorted({k["frame"] for k in seq})
    for i, box in boxes.items():
        drawn = _ls_drawn_box_px(seq, i)
        if box is None:
            assert drawn is None, i
        else:
            assert drawn is not None, i
            assert max(abs(a - b) for a, b in zip(drawn, box)) <= tol + 1e-9, i
    assert _ls_drawn_box_px(seq, len(boxes) + 5) is None  # ends absent: stays hidden
    if tol >= 1.0:
        assert len(seq) < 0.6 * sum(b is not None for b in boxes.values())  # thinning actually happens
    for k in seq:
        assert k["time"] == k["frame"] / FPS and k["rotation"] == 0


def test_tolerance_zero_keeps_a_kink():
    boxes = {i: (float(min(i, 5) * 10), 0.0, float(min(i, 5) * 10 + 10), 10.0) for i in range(11)}
    seq = box_sequence(boxes, width=W, height=H, fps=FPS, tolerance_px=0.0)
    assert [k["frame"] for k in seq] == [1, 6, 11]


def test_bad_boxes_and_tolerance_are_rejected():
    with pytest.raises(ValueError, match="frame 1"):
        box_sequence({0: (0, 0, 1, 1), 1: (5, 0, 1, 1)}, width=W, height=H, fps=FPS)
    with pytest.raises(ValueError):
        box_sequence({0: (0, 0, 1, 1)}, width=W, height=H, fps=FPS, tolerance_px=-1)


def test_videorectangle_result_and_round_trip_through_parse_regions():
    boxes = _random_track(9, n=120)
    seq = box_sequence(boxes, width=W, height=H, fps=FPS)
    res = videorectangle_result("obj1", "box", "video", "Car#1", seq, frames_count=120, duration=4.8, meta_text="SAM2")
    assert res == {
        "id": "obj1", "from_name": "box", "to_name": "video", "type": "videorectangle", "origin": "prediction",
        "meta": {"text": ["SAM2"]},
        "value": {"framesCount": 120, "duration": 4.8, "sequence": seq, "labels": ["Car#1"]},
    }
    shape = parse_label_config('<View><Labels name="lab" toName="video"><Label value="Car#1"/></Labels>'
                               '<Video name="video" value="$video" framerate="25"/>'
                               '<VideoRectangle name="box" toName="video"/></View>')
    (region,) = parse_regions([res], shape, num_frames=120, frame_size=(W, H))
    assert region.label == "Car#1" and region.frames_count == 120
    for i, box in boxes.items():
        got = region.box_at(i)
        assert (got is None) == (box is None), i
        assert got == _ls_drawn_box_px(seq, i) or max(abs(a - b) for a, b in zip(got, _ls_drawn_box_px(seq, i))) < 1e-9
        if box is not None:
            assert max(abs(a - b) for a, b in zip(got, box)) <= 1.0 + 1e-9
