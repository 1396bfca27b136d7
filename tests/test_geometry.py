"""Exact checks of percent <-> pixel maths, rotated-rectangle bounds and LS 1-based frame conversions."""
import math

import numpy as np
import pytest

from backend.ls import geometry as g


def test_point_percent_pixel_round_trip():
    assert g.percent_to_px(25, 37.5, 320, 240) == (80.0, 90.0)
    assert g.px_to_percent(80, 90, 320, 240) == (25.0, 37.5)
    assert g.percent_to_px(100, 100, 640, 480) == (640.0, 480.0)
    assert g.percent_to_px(0, 0, 640, 480) == (0.0, 0.0)


def test_rect_percent_to_xyxy_and_back():
    # the protocol doc's rectangle on a 320x240 image
    assert g.rect_percent_to_xyxy(6.25, 25, 18.75, 25, 320, 240) == (20.0, 60.0, 80.0, 120.0)
    assert g.xyxy_to_rect_percent((20.0, 60.0, 80.0, 120.0), 320, 240) == (6.25, 25.0, 18.75, 25.0)
    assert g.rect_percent_to_xyxy(10, 20, 30, 40, 200, 100, rotation=360) == (20.0, 20.0, 80.0, 60.0)


def test_rotation_is_clockwise_about_top_left_in_pixels():
    # 40x20 px box at (100, 50) rotated 90 deg clockwise on screen (y down) about its top-left corner
    box = g.rect_percent_to_xyxy(50, 50, 20, 20, 200, 100, rotation=90)
    assert box == pytest.approx((80.0, 50.0, 100.0, 90.0), abs=1e-9)
    box = g.rect_percent_to_xyxy(0, 0, 10, 10, 100, 100, rotation=45)
    s = 10 / math.sqrt(2)
    assert box == pytest.approx((-s, 0.0, s, 2 * s), abs=1e-9)


def _editor_rotate_bbox_percent(left, top, right, bottom, rotation, wh_ratio):
    """Literal transcription of LS 1.23.2 utils/bboxCoords.js::rotateBboxCoords with pivot = (left, top)."""
    a = rotation * math.pi / 180
    cos_a, sin_a = math.cos(a), math.sin(a)
    pts = [(left - left, top - top), (right - left, top - top),
           (left - left, bottom - top), (right - left, bottom - top)]
    pts = [(x * cos_a - (y * sin_a) / wh_ratio, x * sin_a * wh_ratio + y * cos_a) for x, y in pts]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs) + left, min(ys) + top, max(xs) + left, max(ys) + top


@pytest.mark.parametrize("rotation", [0, 17, 90, 135, 200, 300, -30])
def test_rotated_bounds_match_editor_formula_on_non_square_image(rotation):
    W, H = 1920, 1080
    x, y, w, h = 30.0, 40.0, 20.0, 15.0
    l, t, r, b = _editor_rotate_bbox_percent(x, y, x + w, y + h, rotation, W / H)
    expected = (l * W / 100, t * H / 100, r * W / 100, b * H / 100)
    assert g.rect_percent_to_xyxy(x, y, w, h, W, H, rotation) == pytest.approx(expected, abs=1e-9)


def test_clip_box():
    assert g.clip_box((-5.0, -1.0, 700.0, 100.0), 640, 480) == (0.0, 0.0, 640.0, 100.0)
    assert g.clip_box((10.0, 20.0, 30.0, 40.0), 640, 480) == (10.0, 20.0, 30.0, 40.0)
    assert g.clip_box((700.0, 500.0, 800.0, 600.0), 640, 480) == (640.0, 480.0, 640.0, 480.0)


def test_bad_image_size_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        g.percent_to_px(1, 1, 0, 480)


def test_frames_are_one_based_in_ls():
    assert g.ls_frame_to_index(1) == 0
    assert g.ls_frame_to_index(50) == 49
    assert g.ls_frame_to_index(3.0) == 2
    assert g.ls_frame_to_index(np.int64(7)) == 6
    assert g.index_to_ls_frame(0) == 1
    assert g.index_to_ls_frame(np.int32(49)) == 50
    for bad in (0, -1, 1.5, "3", None, True, float("nan")):
        with pytest.raises(ValueError):
            g.ls_frame_to_index(bad)
    with pytest.raises(ValueError):
        g.index_to_ls_frame(-1)


def test_frame_time_uses_one_based_frame():
    # protocol doc: frame 1 at 25 fps has time 0.04 (= frame / framerate)
    assert g.frame_time(0, 25.0) == 1 / 25.0 == 0.04
    assert g.frame_time(49, 25.0) == 2.0
    assert g.frame_time(23, 24.0) == 1.0
    with pytest.raises(ValueError):
        g.frame_time(0, 0)
