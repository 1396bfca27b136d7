"""Parse Label Studio result dicts into typed regions in PIXELS and 0-BASED frame indices.

Input: a list of LS results as found in an interactive `context.result`, or in a task's `annotations[i].result` /
`drafts[i].result` (shapes in /work/shared/reference/label-studio-protocol.md §1 and §3). Coordinates in LS are
percent (0-100); here they become continuous pixels (origin top-left, see `backend.ls.geometry`), boxes are xyxy.
Frames: `item_index` (0-based, frames task) and videorectangle `sequence[].frame` (1-based) both become 0-based.

Results of other controls, of other types, relations and anything without a known `from_name` are skipped with a
debug log. Bad values in a result we do handle raise `BadRequest` naming the region and how to fix it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from backend.ls import geometry as geo
from backend.ls.errors import BadRequest
from backend.ls.geometry import Box
from backend.ls.labelconfig import FramesShape, TaskShape, VideoShape
from backend.ls.maskurl import value_mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeypointRegion:
    """A click prompt at pixel (x, y) on 0-based `frame`; `positive` False for an Alt-click (`is_positive: false`)."""

    id: str
    frame: int
    x: float
    y: float
    label: str
    positive: bool = True


@dataclass(frozen=True)
class RectRegion:
    """A box prompt on 0-based `frame`: pixel xyxy bounds of the (maybe rotated) LS rectangle, clipped to the frame."""

    id: str
    frame: int
    box_xyxy: Box
    label: str


@dataclass(frozen=True, eq=False)
class BrushRegion:
    """A mask on 0-based `frame`: `mask` is a read-only HxW bool array (H = original_height, W = original_width)."""

    id: str
    frame: int
    mask: np.ndarray
    label: str


@dataclass(frozen=True)
class VideoKeyframe:
    """One LS videorectangle keyframe: 0-based `frame`, pixel xyxy box (bounds if rotated), LS `enabled` flag."""

    frame: int
    box_xyxy: Box
    enabled: bool


@dataclass(frozen=True)
class VideoRectRegion:
    """A videorectangle region: keyframes sorted by frame; `frames_count` is LS `value.framesCount` (None if absent)."""

    id: str
    label: str
    keyframes: tuple[VideoKeyframe, ...]
    frames_count: int | None

    def box_at(self, frame: int) -> Box | None:
        """Pixel box LS draws at 0-based `frame`, or None when hidden; mirrors the LS 1.23.2 editor for rotation 0.

        `regions/VideoRectangleRegion.js::getShape`: a keyframe at the frame wins, else linear interpolation between the
        previous and next keyframes whatever their `enabled`, else the previous keyframe; nothing before the first.
        `regions/VideoRegion.js::isInLifespan`: shown iff the last keyframe at or before the frame is enabled, or is
        a disabled keyframe exactly at this frame.
        """
        prev = nxt = None
        for kf in self.keyframes:
            if kf.frame > frame:
                nxt = kf
                break
            prev = kf
        if prev is None or not (prev.enabled or prev.frame == frame):
            return None
        if prev.frame == frame or nxt is None:
            return prev.box_xyxy
        r = (frame - prev.frame) / (nxt.frame - prev.frame)
        return tuple(a + (b - a) * r for a, b in zip(prev.box_xyxy, nxt.box_xyxy))  # type: ignore[return-value]


Region = KeypointRegion | RectRegion | BrushRegion | VideoRectRegion


def _num(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{what} is {value!r}; send a finite number")
    return float(value)


def _pct(value: dict, key: str, what: str) -> float:
    v = _num(value.get(key), f"{what} value.{key}")
    if not -1e-6 <= v <= 100 + 1e-6:
        raise BadRequest(f"{what} has value.{key}={v}, outside the image; LS coordinates are percent in 0-100")
    return min(max(v, 0.0), 100.0)


def _value(res: dict, what: str) -> dict:
    value = res.get("value")
    if not isinstance(value, dict):
        raise BadRequest(f"{what} has value {value!r}; send the LS result object with its 'value' dict")
    return value


def _label(res: dict, what: str, allowed: tuple[str, ...], labels: object = None) -> str:
    if labels is None:
        value = _value(res, what)
        labels = value.get(res.get("type")) or value.get("labels")
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise BadRequest(f"{what} has labels {labels!r}; give each region exactly one of {list(allowed)}")
    if labels[0] not in allowed:
        raise BadRequest(f"{what} has label '{labels[0]}', which is not in the config; use one of {list(allowed)}")
    return labels[0]


def _item_frame(res: dict, what: str, num_frames: int) -> int:
    idx = res.get("item_index")
    if idx is None:
        if num_frames == 1:
            return 0
        raise BadRequest(f"{what} has no item_index but the task has {num_frames} frames; send item_index (0-based)")
    if isinstance(idx, bool) or not isinstance(idx, (int, float)) or not float(idx).is_integer():
        raise BadRequest(f"{what} has item_index {idx!r}; it must be an integer frame index (0-based)")
    if not 0 <= idx < num_frames:
        raise BadRequest(f"{what} has item_index {int(idx)} but the task has {num_frames} frames (0-{num_frames - 1})")
    return int(idx)


def _image_size(res: dict, what: str, frame_size: tuple[int, int] | None) -> tuple[int, int]:
    if frame_size is not None:
        return frame_size
    w, h = res.get("original_width"), res.get("original_height")
    if isinstance(w, int) and isinstance(h, int) and not isinstance(w, bool) and w > 0 and h > 0:
        return w, h
    raise BadRequest(f"{what} has no valid original_width/original_height; send them with the region")


def _keypoint(res: dict, what: str, shape: FramesShape, n: int, size) -> KeypointRegion:
    frame, value = _item_frame(res, what, n), _value(res, what)
    w, h = _image_size(res, what, size)
    x, y = geo.percent_to_px(_pct(value, "x", what), _pct(value, "y", what), w, h)
    positive = res.get("is_positive", True)
    if not isinstance(positive, bool):
        raise BadRequest(f"{what} has is_positive {positive!r}; send true or false")
    label = _label(res, what, shape.keypoint_labels)
    return KeypointRegion(res["id"], frame, x, y, label, positive)


def _rect(res: dict, what: str, shape: FramesShape, n: int, size) -> RectRegion:
    frame, value = _item_frame(res, what, n), _value(res, what)
    w, h = _image_size(res, what, size)
    x, y, rw, rh = (_num(value.get(k), f"{what} value.{k}") for k in ("x", "y", "width", "height"))
    rot = _num(value.get("rotation", 0), f"{what} value.rotation")
    if rw <= 0 or rh <= 0:
        raise BadRequest(f"{what} has width {rw} and height {rh}; draw a rectangle with a positive size")
    box = geo.clip_box(geo.rect_percent_to_xyxy(x, y, rw, rh, w, h, rot), w, h)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise BadRequest(f"{what} lies outside the image; draw the rectangle on the frame")
    label = _label(res, what, shape.rect_labels)
    return RectRegion(res["id"], frame, box, label)


def _brush(res: dict, what: str, shape: FramesShape, n: int, size) -> BrushRegion:
    frame, value = _item_frame(res, what, n), _value(res, what)
    if value.get("format", "rle") != "rle" or (value.get("rle") is None and value.get("maskDataURL") is None):
        raise BadRequest(f"{what} has no value.rle or value.maskDataURL (format {value.get('format')!r}); send brush "
                         "masks as LS RLE")
    w, h = _image_size(res, what, None)
    if size is not None and (w, h) != tuple(size):
        raise BadRequest(
            f"{what} is {w}x{h} (original_width x original_height) but the frames are {size[0]}x{size[1]}; "
            "draw the mask on this task's frames"
        )
    label = _label(res, what, shape.brush_labels)
    try:
        mask = value_mask(value, h, w, frame_size=size)
    except ValueError as e:
        raise BadRequest(f"{what} has an unreadable mask ({e}); re-draw the mask") from None
    mask.setflags(write=False)
    return BrushRegion(res["id"], frame, mask, label)


def _video_rect(res: dict, what: str, shape: VideoShape, n: int, size, labels_by_id: dict) -> VideoRectRegion:
    if size is None:
        raise ValueError("parse_regions needs frame_size=(width, height) for a video task (LS sends no pixel size)")
    value = _value(res, what)
    seq = value.get("sequence")
    if not isinstance(seq, list) or not seq:
        raise BadRequest(f"{what} has no value.sequence keyframes; draw the box on a frame first")
    labels = value.get("labels") or labels_by_id.get(res["id"])
    label = _label(res, what, shape.labels, labels if labels is not None else [])
    keyframes, dropped = [], 0
    for i, kf in enumerate(seq):
        kwhat = f"{what} keyframe {i}"
        if not isinstance(kf, dict):
            raise BadRequest(f"{kwhat} is not an object; send LS sequence items")
        try:
            frame = geo.ls_frame_to_index(kf.get("frame"))
        except ValueError as e:
            raise BadRequest(f"{kwhat} has an invalid frame ({e}); LS video frames are integers from 1") from None
        if frame >= n:
            raise BadRequest(f"{kwhat} is at frame {frame + 1} but the video has {n} frames (1-{n})")
        x, y, rw, rh = (_num(kf.get(k), f"{kwhat} {k}") for k in ("x", "y", "width", "height"))
        rot = _num(kf.get("rotation", 0), f"{kwhat} rotation")
        box = geo.clip_box(geo.rect_percent_to_xyxy(x, y, rw, rh, size[0], size[1], rot), size[0], size[1])
        enabled = kf.get("enabled", True)
        if not isinstance(enabled, bool):
            raise BadRequest(f"{kwhat} has enabled {enabled!r}; send true or false")
        if enabled and not (box[2] > box[0] and box[3] > box[1]):
            logger.info("%s: skipped, it has no area inside the %dx%d frame", kwhat, size[0], size[1])
            dropped += 1
            continue  # a box dragged off the frame: no prompt there, but the region's other keyframes still count
        keyframes.append(VideoKeyframe(frame, box, enabled))
    if dropped and not any(k.enabled for k in keyframes):
        raise BadRequest(f"{what} has no keyframe with an area inside the frame; draw the box on the frame")
    keyframes.sort(key=lambda k: k.frame)
    if len({k.frame for k in keyframes}) != len(keyframes):
        raise BadRequest(f"{what} has two keyframes on one frame; send at most one keyframe per frame")
    count = value.get("framesCount")
    frames_count = int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) else None
    return VideoRectRegion(res["id"], label, tuple(keyframes), frames_count)


_FRAME_PARSERS = {"keypointlabels": ("keypoint_name", _keypoint), "rectanglelabels": ("rect_name", _rect),
                  "brushlabels": ("brush_name", _brush)}


def parse_regions(
    results: list[dict], shape: TaskShape, *, num_frames: int, frame_size: tuple[int, int] | None = None,
    skip_bad: bool = False,
) -> list[Region]:
    """LS results -> regions for `shape`, in input order (pixels, 0-based frames).

    `num_frames`: frames in the task (list length, or decoded video frames). `frame_size`: (width, height) in pixels
    of the frames; required for video tasks; for frames tasks it scales keypoints/rectangles (else each region's
    original_width/height is used) and brush masks must match it (pass it: it also bounds what an RLE may allocate).
    `skip_bad`: leave out (and log) regions that cannot be parsed instead of raising; for replaying a saved
    annotation, where one bad region must not block the task forever.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not isinstance(results, list):
        raise BadRequest(f"regions must be a list of LS results, got {type(results).__name__}")
    labels_by_id: dict[str, list] = {}
    if isinstance(shape, VideoShape):
        for res in results:
            if isinstance(res, dict) and res.get("type") == "labels" and res.get("from_name") == shape.labels_name \
                    and isinstance(res.get("id"), str):
                value = res.get("value")
                labels_by_id[res.get("id")] = value.get("labels") if isinstance(value, dict) else None
    regions: list[Region] = []
    for res in results:
        if not isinstance(res, dict):
            logger.debug("skipping a non-object result %r", res)
            continue
        rtype, from_name = res.get("type"), res.get("from_name")
        if not isinstance(rtype, str) or not isinstance(from_name, str):
            logger.debug("skipping a result whose type/from_name are not strings: %r / %r", rtype, from_name)
            continue
        if isinstance(shape, FramesShape):
            attr, parser = _FRAME_PARSERS.get(rtype, (None, None))
            known = attr is not None and from_name == getattr(shape, attr)
            known = known and res.get("to_name", shape.image_name) == shape.image_name
        else:
            parser = None
            known = rtype == "videorectangle" and from_name == shape.rect_name
            known = known and res.get("to_name", shape.video_name) == shape.video_name
        if not known:
            if not (isinstance(shape, VideoShape) and rtype == "labels" and from_name == shape.labels_name):
                logger.debug("skipping result id=%r type=%r from_name=%r: not a control of this config",
                             res.get("id"), rtype, from_name)
            continue
        rid = res.get("id")
        what = f"{rtype.removesuffix('labels')} region '{rid}'"
        try:
            if not isinstance(rid, str) or not rid:
                raise BadRequest(f"a {rtype} result from '{from_name}' has no id; send the region id LS assigned")
            if parser is not None:
                regions.append(parser(res, what, shape, num_frames, frame_size))
            else:
                regions.append(_video_rect(res, what, shape, num_frames, frame_size, labels_by_id))
        except BadRequest as e:
            if not skip_bad:
                raise
            logger.warning("skipping a saved region that cannot be used: %s", e)
    return regions
