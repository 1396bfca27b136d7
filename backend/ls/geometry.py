"""Pure coordinate and frame-index maths between Label Studio (LS) values and pixels.

Conventions used throughout `backend.ls`:

- LS image and video regions store coordinates in PERCENT of the image size (0-100).
- Pixels here are CONTINUOUS coordinates: origin at the top-left corner of the image, x to the right, y down;
  the pixel with column c covers x in [c, c + 1). A full-image box is (0, 0, width, height).
- A `Box` is a pixel box in xyxy order: (x_min, y_min, x_max, y_max), floats, x_max/y_max being the right/bottom edge.
- LS rectangles are (x, y, width, height) in percent, where (x, y) is the top-left corner BEFORE rotation and
  `rotation` is in degrees, clockwise on screen, about that corner (LS 1.23.2 editor:
  `libs/editor/src/regions/RectRegion.jsx::bboxCoords` -> `utils/bboxCoords.js::rotateBboxCoords`, pivot {x, y},
  rotation applied in pixel space).
- LS video frames are 1-BASED (`sequence[i].frame`, 1 = first frame); the engine uses 0-BASED frame indices.
  The editor seeks frame f to time (f - 1) / fps (`components/VideoCanvas/VideoCanvas.tsx::goToFrame`), so LS frame f
  shows decoded frame index f - 1. The `time` it stores is `frame / framerate` with the 1-based frame
  (`regions/VideoRegion.js::serialize`), i.e. the END time of that frame.
"""
from __future__ import annotations

import logging
import math
import numbers

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
"""Pixel box (x_min, y_min, x_max, y_max), continuous coordinates, origin top-left."""


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got width={width} height={height}; pass the size in pixels")


def percent_to_px(x_pct: float, y_pct: float, width: float, height: float) -> tuple[float, float]:
    """LS point (percent 0-100 of width, height) -> continuous pixel point (x, y) for a width x height image."""
    _check_size(width, height)
    return x_pct * width / 100.0, y_pct * height / 100.0


def px_to_percent(x: float, y: float, width: float, height: float) -> tuple[float, float]:
    """Continuous pixel point (x, y) -> LS point in percent (0-100) of a width x height image."""
    _check_size(width, height)
    return x * 100.0 / width, y * 100.0 / height


def rect_percent_to_xyxy(
    x: float, y: float, w: float, h: float, width: float, height: float, rotation: float = 0.0
) -> Box:
    """LS rectangle (percent x, y, width, height; `rotation` degrees clockwise about (x, y)) -> pixel xyxy box.

    With a rotation the result is the axis-aligned bounding box of the rotated rectangle, computed in pixel space
    exactly as the LS editor does. The box is NOT clipped; use `clip_box` for that.
    """
    _check_size(width, height)
    x0, y0 = x * width / 100.0, y * height / 100.0
    pw, ph = w * width / 100.0, h * height / 100.0
    if not rotation or rotation % 360 == 0:
        return x0, y0, x0 + pw, y0 + ph
    a = math.radians(rotation)
    cos_a, sin_a = math.cos(a), math.sin(a)
    xs, ys = [], []
    for dx, dy in ((0.0, 0.0), (pw, 0.0), (0.0, ph), (pw, ph)):
        xs.append(x0 + dx * cos_a - dy * sin_a)
        ys.append(y0 + dx * sin_a + dy * cos_a)
    return min(xs), min(ys), max(xs), max(ys)


def xyxy_to_rect_percent(box: Box, width: float, height: float) -> tuple[float, float, float, float]:
    """Pixel xyxy box -> LS rectangle (x, y, width, height) in percent (0-100), rotation 0."""
    _check_size(width, height)
    x0, y0, x1, y1 = box
    return x0 * 100.0 / width, y0 * 100.0 / height, (x1 - x0) * 100.0 / width, (y1 - y0) * 100.0 / height


def clip_box(box: Box, width: float, height: float) -> Box:
    """Clip a pixel xyxy box to the image [0, width] x [0, height]; a box fully outside collapses onto the border."""
    _check_size(width, height)
    x0, y0, x1, y1 = box
    return (
        min(max(x0, 0.0), width),
        min(max(y0, 0.0), height),
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
    )


def _as_int(value: object, what: str) -> int:
    """`value` as an int when it is an integral number (JSON may give 3.0), else ValueError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not isinstance(value, numbers.Integral) and not float(value).is_integer():
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def ls_frame_to_index(frame: int | float) -> int:
    """LS video frame (1-based; 1 = first frame) -> engine frame index (0-based)."""
    f = _as_int(frame, "LS video frame")
    if f < 1:
        raise ValueError(f"LS video frames are 1-based, got frame {f}")
    return f - 1


def index_to_ls_frame(idx: int) -> int:
    """Engine frame index (0-based) -> LS video frame (1-based)."""
    i = _as_int(idx, "frame index")
    if i < 0:
        raise ValueError(f"frame indices are 0-based and non-negative, got {i}")
    return i + 1


def frame_time(idx: int, fps: float) -> float:
    """LS `time` (seconds) of the keyframe at 0-based index `idx`: (idx + 1) / fps, as the editor serializes it."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return index_to_ls_frame(idx) / fps
