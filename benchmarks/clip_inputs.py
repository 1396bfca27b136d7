"""The benchmark's inputs: a clip's first frames as JPEGs, and up to 5 object boxes from the clip's mask.

Boxes: object 1 gets the box of the largest connected component of the clip's mask on frame 0 (the
frame's centre half if empty); objects 2 and 3 the boxes of further components covering >= 1% of the
frame, then fixed corner boxes (30% x 35% of the frame, 5% margin) overlapping object 1's box least (up to 5).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CORNERS = ((0.05, 0.05, 0.35, 0.40), (0.65, 0.05, 0.95, 0.40), (0.05, 0.60, 0.35, 0.95), (0.65, 0.60, 0.95, 0.95))


def write_frames(clip: Path, n: int, out: Path) -> tuple[int, int, int]:
    """The clip's first n frames as JPEGs (what both predictors read); returns (frames, width, height)."""
    import cv2
    cap = cv2.VideoCapture(str(clip))
    count, shape = 0, (0, 0)
    while count < n:
        ok, bgr = cap.read()
        if not ok:
            break
        shape = bgr.shape[:2]
        cv2.imwrite(str(out / f"{count:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        count += 1
    cap.release()
    if count < 2:
        raise SystemExit(f"{clip}: fewer than 2 decodable frames")
    return count, shape[1], shape[0]


def _iou_box(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def object_boxes(mask: np.ndarray | None, w: int, h: int, n: int = 3) -> tuple[list[list[float]], list[str]]:
    """n (<= 5) xyxy boxes in video pixels and where each came from (see the module doc)."""
    import cv2
    boxes, why = [], []
    if mask is not None and mask.any():
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for rank, i in enumerate(sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])):
            x, y, cw, ch, area = (int(v) for v in stats[i])
            if len(boxes) < n and (rank == 0 or area >= 0.01 * w * h):
                boxes.append([float(x), float(y), float(x + cw), float(y + ch)])
                why.append(f"connected component {rank + 1} of the clip mask ({area} px)")
    else:
        boxes.append([0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h])
        why.append("centre half (the clip mask is empty on frame 0)")
    corners = [[c[0] * w, c[1] * h, c[2] * w, c[3] * h] for c in CORNERS]
    for c in sorted(corners, key=lambda c: _iou_box(c, boxes[0]))[:n - len(boxes)]:
        boxes.append(c)
        why.append("fixed corner box")
    return boxes, why
