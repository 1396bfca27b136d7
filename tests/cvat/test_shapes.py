"""CVAT shape geometry and call parsing, with exact values (no model)."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from backend.cvat.protocol import NewShape, TrackState, parse_call
from backend.cvat.shapes import (TooLarge, box_mask, clip_box, decode_image, mask_box, mask_to_polygon, mask_to_rle,
                                 parse_rectangle, polygon_to_mask, rle_to_mask, shape_for)
from backend.cvat.stream import StreamingFrameSource
from backend.engine import FrameError
from backend.serving.errors import BadRequest


def small_mask():
    m = np.zeros((4, 5), bool)  # H=4, W=5
    m[1, 1] = m[1, 2] = m[2, 2] = True
    return m


def test_rle_matches_cvat_layout_exactly():
    # box cols 1..2, rows 1..2 (inclusive); row-major [1,1 / 0,1]; runs start with background (0 long here)
    assert mask_to_rle(small_mask()) == [0, 2, 1, 1, 1, 1, 2, 2]
    m = np.zeros((4, 5), bool)
    m[2, 3] = m[3, 4] = True  # box cols 3..4 rows 2..3: [1,0 / 0,1]
    assert mask_to_rle(m) == [0, 1, 2, 1, 3, 2, 4, 3]


def test_rle_round_trip_and_errors():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((17, 23)) > 0.7
        assert (rle_to_mask(mask_to_rle(m), 23, 17) == m).all()
    assert (rle_to_mask([0, 2, 1, 1, 1, 1, 2, 2], 5, 4) == small_mask()).all()
    with pytest.raises(BadRequest, match="add up to 3 pixels but the box holds 2x2 = 4"):
        rle_to_mask([0, 2, 1, 1, 1, 2, 2], 5, 4)
    with pytest.raises(BadRequest, match="not inside the 5x4 image"):
        rle_to_mask([0, 4, 4, 2, 5, 3], 5, 4)
    with pytest.raises(BadRequest, match="integer run lengths"):
        rle_to_mask([0.5, 2, 1, 1, 1, 1, 2, 2], 5, 4)
    with pytest.raises(BadRequest, match="no pixel set"):
        rle_to_mask([4, 1, 1, 2, 2], 5, 4)


def test_mask_box_uses_pixel_edges():
    assert mask_box(small_mask()) == (1.0, 1.0, 3.0, 3.0)
    assert mask_box(np.zeros((3, 3), bool)) is None
    assert (box_mask((1.0, 1.0, 3.0, 3.0), 5, 4)[1:3, 1:3]).all() and box_mask((1.0, 1.0, 3.0, 3.0), 5, 4).sum() == 4


def test_polygon_raster_and_outline():
    m = polygon_to_mask([2, 2, 8, 2, 8, 6, 2, 6], 12, 10)
    assert m.sum() == 7 * 5 and m[2:7, 2:9].all()  # boundary included
    poly = mask_to_polygon(m)
    assert sorted(zip(poly[::2], poly[1::2])) == [(2.0, 2.0), (2.0, 6.0), (8.0, 2.0), (8.0, 6.0)]
    with pytest.raises(BadRequest, match="at least 3 vertices"):
        polygon_to_mask([1, 1, 2, 2], 12, 10)
    with pytest.raises(BadRequest, match="covers no pixel"):
        polygon_to_mask([50, 50, 60, 50, 60, 60], 12, 10)


def test_rectangles_are_clipped_and_checked():
    assert parse_rectangle([-5, 2, 30, 8.5], 20, 10) == (0.0, 2.0, 20.0, 8.5)
    assert parse_rectangle([10, 8, 2, 1], 20, 10) == (2.0, 1.0, 10.0, 8.0)  # corners in any order
    assert clip_box((1, 1, 2, 2), 4, 4) == (1, 1, 2, 2)
    for bad, msg in (([1, 2, 3], "4 numbers|got 3"), ([1, 1, 1, 5], "no area"), ([30, 1, 40, 5], "no area"),
                     ([0, 0, "5", 5], "list of numbers"), ([0, 0, float("nan"), 5], "finite"), ("1,2,3,4", "list")):
        with pytest.raises(BadRequest, match=msg):
            parse_rectangle(bad, 20, 10)


def test_shape_for_each_type_and_the_lost_object_fallback():
    m = small_mask()
    assert shape_for("rectangle", m, (0, 0, 1, 1)) == ({"type": "rectangle", "points": [1.0, 1.0, 3.0, 3.0]},
                                                       (1.0, 1.0, 3.0, 3.0), True)
    assert shape_for("mask", m, (0, 0, 1, 1))[0] == {"type": "mask", "points": [0, 2, 1, 1, 1, 1, 2, 2]}
    assert shape_for("polygon", m, (0, 0, 1, 1))[0]["type"] == "polygon"
    empty = np.zeros((4, 5), bool)
    shape, box, found = shape_for("rectangle", empty, (1.0, 0.0, 4.0, 2.0))
    assert (shape["points"], box, found) == ([1.0, 0.0, 4.0, 2.0], (1.0, 0.0, 4.0, 2.0), False)
    assert shape_for("polygon", empty, (1.0, 0.0, 4.0, 2.0))[0]["points"] == [1, 0, 4, 0, 4, 2, 1, 2]
    lost_mask = shape_for("mask", empty, (1.0, 0.0, 4.0, 2.0))[0]["points"]
    assert (rle_to_mask(lost_mask, 5, 4) == box_mask((1, 0, 4, 2), 5, 4)).all()


def b64_image(w, h, fmt="PNG", seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_decode_image_and_its_errors():
    rgb = decode_image(b64_image(7, 5), max_pixels=100)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert (rgb == np.random.default_rng(0).integers(0, 255, (5, 7, 3), np.uint8)).all()
    with pytest.raises(TooLarge) as e:
        decode_image(b64_image(11, 10), max_pixels=100)
    assert e.value.status == 413 and "11x10 = 110 pixels" in str(e.value)
    for bad, msg in (("%%%not base64", "not valid base64"), (base64.b64encode(b"hello").decode(), "not a readable"),
                     ("", "non-empty"), (None, "non-empty"), (12, "non-empty")):
        with pytest.raises(BadRequest, match=msg) as e:
            decode_image(bad, max_pixels=100)
        assert e.value.status == 400


def test_parse_call_start_continue_and_legacy_forms():
    state = TrackState("abc", 1, 4, (1.0, 2.0, 3.0, 4.0), "mask")
    assert TrackState.from_json(state.to_json(), 0) == state
    start = parse_call({"image": "x", "shapes": [{"type": "rectangle", "points": [1, 2, 3, 4]}], "states": []},
                       max_shapes=4)
    assert start.items == [NewShape("rectangle", [1, 2, 3, 4])]
    cont = parse_call({"image": "x", "shapes": [None], "states": [state.to_json()]}, max_shapes=4)
    assert cont.items == [state]
    assert parse_call({"image": "x", "states": [state.to_json()]}, max_shapes=4).items == [state]
    legacy = parse_call({"image": "x", "shapes": [[1, 2, 3, 4], None], "states": [None, state.to_json()]},
                        max_shapes=4)
    assert legacy.items == [NewShape("rectangle", [1, 2, 3, 4]), state]


@pytest.mark.parametrize("body,msg", [
    ([], "JSON object"),
    ({"image": "x", "shapes": [], "states": []}, "no shapes and no states"),
    ({"image": "x", "shapes": [None, None], "states": [{"v": 1}]}, "2 shapes but 1 states"),
    ({"image": "x", "shapes": [None], "states": []}, r"shapes\[0\] is null"),
    ({"image": "x", "shapes": [{"type": "ellipse", "points": [1, 2, 3, 4]}]}, "ellipse"),
    ({"image": "x", "shapes": [{"type": "points", "points": [1, 2]}] * 5}, "at most 4"),
    ({"image": "x", "shapes": [None], "states": [{"v": 1, "session": "s", "object": "1", "frame": 0,
                                                  "box": [0, 0, 1, 1], "type": "rectangle"}]}, "malformed"),
    ({"image": "x", "shapes": [None], "states": [{"v": 7}]}, "not a state of this tracker"),
    ({"image": "x", "shapes": [None], "states": ["signed-by-cvat"]}, "got str"),
    ({"image": "x", "shapes": "rectangle"}, "must be lists"),
])
def test_parse_call_rejects_with_a_reason(body, msg):
    with pytest.raises(BadRequest, match=msg):
        parse_call(body, max_shapes=4)


def test_stream_keeps_only_its_newest_frames():
    s = StreamingFrameSource(4, 3, keep=2)
    frames = [np.full((3, 4, 3), i, np.uint8) for i in range(5)]
    assert [s.append(f) for f in frames] == [0, 1, 2, 3, 4]
    assert s.received == 5 and s.nbytes == 2 * 36 and s.num_frames >= 16
    assert (s.read(4) == 4).all() and (s.read(3) == 3).all()
    with pytest.raises(FrameError, match="no longer held"):
        s.read(2)
    with pytest.raises(FrameError, match="not been received"):
        s.read(5)
    with pytest.raises(FrameError, match="4x3"):
        s.append(np.zeros((4, 4, 3), np.uint8))
    assert StreamingFrameSource(4, 3).key != s.key
