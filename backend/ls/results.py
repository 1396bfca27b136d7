"""Build Label Studio result dicts (brush masks on frames, videorectangle sequences) from pixel-space engine output.

Inputs are pixels (continuous, origin top-left, boxes xyxy) and 0-based frame indices; outputs are LS JSON: percent
(0-100) coordinates, `item_index` = 0-based frame for `<Image valueList>`, 1-based `frame` in video sequences.

Region meta text: the editor keeps a region's note in the result's top-level `meta: {"text": [str]}`
(`libs/editor/src/mixins/Normalization.ts::setMetaText`, read back from the result snapshot by
`stores/Annotation/Annotation.js::deserializeSingleResult`) and shows it in the region details panel.

`origin` defaults to "prediction": LS forces it for stored predictions anyway (`stores/AppStore.js`), and interactive
suggestions keep what we send, so edited model regions show up as "prediction-changed" instead of "manual".
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np

from backend.ls import geometry as geo
from backend.ls.geometry import Box
from backend.ls.maskurl import mask_to_data_url
from backend.ls.rle import mask_to_rle

logger = logging.getLogger(__name__)


def _common(region_id: str, from_name: str, to_name: str, rtype: str, meta_text: str | None, score: float | None,
            origin: str | None) -> dict:
    res: dict = {"id": region_id, "from_name": from_name, "to_name": to_name, "type": rtype}
    if origin is not None:
        res["origin"] = origin
    if score is not None:
        res["score"] = float(score)
    if meta_text is not None:
        res["meta"] = {"text": [str(meta_text)]}
    return res


def brush_result(
    region_id: str, from_name: str, to_name: str, frame: int, mask: np.ndarray, label: str, *, width: int, height: int,
    meta_text: str | None = None, score: float | None = None, origin: str | None = "prediction",
) -> dict:
    """One `brushlabels` result for 0-based `frame` of an `<Image valueList>`; `mask` is HxW (bool or non-zero = in)."""
    if np.shape(mask) != (height, width):
        raise ValueError(f"mask has shape {np.shape(mask)} but width={width} height={height} means ({height}, {width})")
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ValueError(f"frame must be a 0-based int, got {frame!r}")
    res = _common(region_id, from_name, to_name, "brushlabels", meta_text, score, origin)
    res.update(
        original_width=int(width),
        original_height=int(height),
        image_rotation=0,
        item_index=int(frame),
        value={"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]},
    )
    return res


def with_data_url(result: Mapping, mask: np.ndarray) -> dict:
    """The same brush result with its mask as `value.maskDataURL` (a PNG data URL, `backend.ls.maskurl`) instead of
    `value.rle`: the editor draws it and saves it as RLE, and it is 2.6-13x smaller in JSON. `format` stays "rle", as
    the editor's own drafts write such regions."""
    value = {k: v for k, v in result["value"].items() if k != "rle"}
    return dict(result, value={**value, "maskDataURL": mask_to_data_url(mask)})


def mask_to_box(mask: np.ndarray) -> Box | None:
    """Tight pixel xyxy box of the True pixels of an HxW mask (x_max = last column + 1), or None for an empty mask."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D HxW, got shape {m.shape}")
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(m.any(axis=1))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _runs(boxes: Mapping[int, Box | None]) -> list[tuple[list[int], np.ndarray]]:
    """Maximal runs of consecutive frames that have a box -> [(frames, Nx4 float boxes)], in frame order."""
    runs: list[tuple[list[int], list]] = []
    last = None
    for f in sorted(boxes):
        box = boxes[f]
        if box is None:
            last = None
            continue
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"box at frame {f} is {box!r}; send finite xyxy boxes with x_max >= x_min, y_max >= y_min")
        if last is not None and f == last + 1:
            runs[-1][0].append(f)
            runs[-1][1].append(box)
        else:
            runs.append(([f], [box]))
        last = f
    return [(fs, np.asarray(bs, dtype=np.float64)) for fs, bs in runs]


def _fits(frames: np.ndarray, b: np.ndarray, a: int, c: int, tol: float) -> bool:
    """Whether linear interpolation between run items a and c reproduces items a+1..c-1 within tol everywhere."""
    if c - a < 2:
        return True
    r = ((frames[a + 1 : c] - frames[a]) / (frames[c] - frames[a]))[:, None]
    interp = b[a] + (b[c] - b[a]) * r
    return bool(np.all(np.abs(interp - b[a + 1 : c]) <= tol))


def _thin(frames: list[int], b: np.ndarray, tol: float) -> list[int]:
    """Keyframe choice inside one run: indices of kept items (always the first and the last).

    From each kept item `a`, gallop (ends a+2, a+4, a+8, ...) while the segment still fits, then bisect between the
    last fitting and the first failing end; every chosen segment fits, in O(n log n) instead of O(n^2) checks.
    """
    f = np.asarray(frames, dtype=np.float64)
    kept, a, n = [0], 0, len(frames)
    while a < n - 1:
        good, step = a + 1, 1
        while good + step < n and _fits(f, b, a, good + step, tol):
            good += step
            step *= 2
        bad = min(good + step, n)  # first known failing end (or one past the run)
        while bad - good > 1:
            mid = (good + bad) // 2
            if _fits(f, b, a, mid, tol):
                good = mid
            else:
                bad = mid
        kept.append(good)
        a = good
    return kept


def box_sequence(
    boxes: Mapping[int, Box | None], *, width: int, height: int, fps: float, tolerance_px: float = 1.0
) -> list[dict]:
    """Per-frame pixel boxes (0-based frame -> xyxy, or None when absent) -> LS videorectangle `sequence` keyframes.

    Keyframes: {"frame" (1-based), "x", "y", "width", "height" (percent), "rotation": 0, "time" (s), "enabled"}.
    A keyframe is kept only where LS's linear interpolation between kept keyframes would miss an input box by more than
    `tolerance_px` on some coordinate. Frames missing from `boxes` count as absent, like None.

    `enabled` follows the LS 1.23.2 editor (`libs/editor/src/regions/VideoRegion.js::isInLifespan`, drawn by
    `tags/object/Video/VideoRegions.jsx::Shape`; the timeline in `components/Timeline/Views/Frames/Utils.ts::
    visualizeLifespans`): the region is visible at a frame iff the last keyframe at or before it is enabled, or is
    a disabled keyframe exactly at that frame. So each run of present frames starts with an enabled keyframe, and its
    last keyframe is disabled when the object is absent afterwards (visible on its own frame, hidden until the next
    run's first keyframe). A run reaching the last frame in `boxes` keeps its last keyframe enabled, which LS holds
    for later frames. Returns [] when no frame has a box.
    """
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    runs = _runs(boxes)
    last_frame = max(boxes) if boxes else -1
    seq: list[dict] = []
    for frames, b in runs:
        kept = _thin(frames, b, tolerance_px)
        for i in kept:
            x, y, w, h = geo.xyxy_to_rect_percent(tuple(b[i]), width, height)
            seq.append({
                "frame": geo.index_to_ls_frame(frames[i]),
                "x": x, "y": y, "width": w, "height": h, "rotation": 0,
                "time": geo.frame_time(frames[i], fps),
                "enabled": True,
            })
        if frames[-1] != last_frame:
            seq[-1]["enabled"] = False
    return seq


def videorectangle_result(
    region_id: str, from_name: str, to_name: str, label: str, sequence: list[dict], *, frames_count: int,
    duration: float, meta_text: str | None = None, score: float | None = None, origin: str | None = "prediction",
) -> dict:
    """One `videorectangle` result; `labels` sit inside `value` (the Video tag merges labels into the result).

    `frames_count` and `duration` (seconds) are what LS itself stores: the Video tag's length and the media duration.
    """
    res = _common(region_id, from_name, to_name, "videorectangle", meta_text, score, origin)
    res["value"] = {
        "framesCount": int(frames_count),
        "duration": float(duration),
        "sequence": list(sequence),
        "labels": [label],
    }
    return res
