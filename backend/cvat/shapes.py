"""CVAT shapes <-> pixels: the pure geometry of the tracker contract (no model, no web).

Coordinates are image pixels, x right and y down, with CVAT's conventions:

- rectangle: ``[x1, y1, x2, y2]`` floats (top-left, bottom-right corners). A mask's box covers whole pixels, so
  a mask whose pixels span columns 3..7 has x1 = 3 and x2 = 8.
- polygon: ``[x1, y1, x2, y2, ...]`` (at least 3 vertices).
- mask: CVAT's run-length form (see ``cvat_sdk/masks.py``): run lengths over the row-major pixels of an inclusive
  box, starting with a run of zeros (possibly 0 long), then ``[left, top, right, bottom]`` of that box, inclusive.

Every parser raises `BadRequest` with a message that says what the caller sent and what is expected.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from backend.serving.errors import BackendError, BadRequest

SHAPE_TYPES = ("rectangle", "polygon", "mask")


class TooLarge(BackendError):
    """The body or the image is bigger than the configured caps: 413."""

    status = 413


# ---- image -----------------------------------------------------------------------------------------------------------
def decode_image(data: object, *, max_pixels: int) -> np.ndarray:
    """CVAT's ``image`` field (base64 of a JPEG/PNG frame) -> RGB uint8 [H, W, 3].

    The header is read before any pixel is decoded, so an image over `max_pixels` costs nothing (413).
    """
    if not isinstance(data, str) or not data:
        raise BadRequest("`image` must be a non-empty base64 string of the frame (JPEG or PNG)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("`image` is not valid base64 (standard alphabet, padded)") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise TooLarge(f"the image is {w}x{h} = {w * h} pixels; this tracker accepts at most {max_pixels} "
                               f"(CVAT_MAX_IMAGE_MPIX)")
            rgb = np.asarray(img.convert("RGB"))
    except TooLarge:
        raise
    except Image.DecompressionBombError as e:
        raise TooLarge(f"the image is too large to decode safely: {e}") from None
    except (OSError, ValueError) as e:
        raise BadRequest(f"`image` is not a readable image: {e}") from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise BadRequest(f"`image` decoded to an empty or malformed array {rgb.shape}")
    return rgb


# ---- input shapes ----------------------------------------------------------------------------------------------------
def _numbers(points: object, what: str) -> list[float]:
    if not isinstance(points, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in points):
        raise BadRequest(f"{what}: `points` must be a list of numbers")
    values = [float(v) for v in points]
    if not all(math.isfinite(v) for v in values):
        raise BadRequest(f"{what}: `points` must be finite numbers")
    return values


def clip_box(box: Sequence[float], width: int, height: int, what: str = "rectangle") -> tuple[float, ...]:
    """[x1, y1, x2, y2] clipped to the image; raises if nothing of positive area is left."""
    x1, y1, x2, y2 = box
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    if not (x2 > x1 and y2 > y1):
        raise BadRequest(f"{what} {list(box)} has no area inside the {width}x{height} image")
    return x1, y1, x2, y2


def parse_rectangle(points: object, width: int, height: int) -> tuple[float, ...]:
    values = _numbers(points, "rectangle")
    if len(values) != 4:
        raise BadRequest(f"rectangle: `points` must be [x1, y1, x2, y2], got {len(values)} numbers")
    return clip_box(values, width, height)


def polygon_to_mask(points: object, width: int, height: int) -> np.ndarray:
    """Polygon vertices -> bool mask [H, W] (filled, boundary included)."""
    values = _numbers(points, "polygon")
    if len(values) < 6 or len(values) % 2:
        raise BadRequest(f"polygon: `points` must be [x1, y1, x2, y2, ...] with at least 3 vertices, "
                         f"got {len(values)} numbers")
    xy = np.round(np.asarray(values, np.float64).reshape(-1, 2)).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [xy], 1)
    if not mask.any():
        raise BadRequest(f"polygon covers no pixel of the {width}x{height} image")
    return mask.astype(bool)


def rle_to_mask(points: object, width: int, height: int) -> np.ndarray:
    """CVAT mask points (runs + inclusive [left, top, right, bottom]) -> bool mask [H, W]."""
    values = _numbers(points, "mask")
    if len(values) < 5 or not all(v.is_integer() for v in values):
        raise BadRequest("mask: `points` must be integer run lengths followed by [left, top, right, bottom]")
    *runs, left, top, right, bottom = (int(v) for v in values)
    if not (0 <= left <= right < width and 0 <= top <= bottom < height):
        raise BadRequest(f"mask: box [{left}, {top}, {right}, {bottom}] is not inside the {width}x{height} image")
    if any(r < 0 for r in runs):
        raise BadRequest("mask: run lengths must not be negative")
    bw, bh = right - left + 1, bottom - top + 1
    if sum(runs) != bw * bh:
        raise BadRequest(f"mask: run lengths add up to {sum(runs)} pixels but the box holds {bw}x{bh} = {bw * bh}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    mask = np.zeros((height, width), bool)
    mask[top:bottom + 1, left:right + 1] = flat.reshape(bh, bw)
    if not mask.any():
        raise BadRequest("mask: the mask has no pixel set")
    return mask


# ---- output shapes ---------------------------------------------------------------------------------------------------
def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Pixel-edge box [x1, y1, x2, y2] of a bool mask (x2 = last column + 1), or None when it is empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Bool mask [H, W] (not empty) -> CVAT mask points over its tight inclusive box."""
    box = mask_box(mask)
    if box is None:
        raise ValueError("an empty mask has no CVAT encoding")
    x1, y1, x2, y2 = (int(v) for v in box)
    flat = mask[y1:y2, x1:x2].ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)  # CVAT's runs start with background
    return runs + [x1, y1, x2 - 1, y2 - 1]


def box_mask(box: Sequence[float], width: int, height: int) -> np.ndarray:
    """The pixels a box covers, as a bool mask (the fallback when a mask comes out empty)."""
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), bool)
    c0, r0 = int(math.floor(x1)), int(math.floor(y1))
    c1, r1 = max(int(math.ceil(x2)), c0 + 1), max(int(math.ceil(y2)), r0 + 1)
    mask[max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)] = True
    return mask


def mask_to_polygon(mask: np.ndarray, *, epsilon: float = 0.75) -> list[float]:
    """Outline of the largest connected region of a (non-empty) bool mask, simplified by `epsilon` pixels.

    Vertices are pixel corners' centres as OpenCV traces them; a region too thin for 3 vertices gets its box.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        largest = max(contours, key=cv2.contourArea)
        poly = cv2.approxPolyDP(largest, epsilon, True).reshape(-1, 2)
        if len(poly) >= 3:
            return [float(v) for v in poly.ravel()]
    box = mask_box(mask)
    if box is None:
        raise ValueError("an empty mask has no outline")
    return box_polygon(box)


def box_polygon(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def shape_for(kind: str, mask: np.ndarray, fallback_box: Sequence[float]) -> tuple[dict, tuple[float, ...], bool]:
    """The CVAT shape of `kind` for a mask: (shape, its box, found). An empty mask yields the fallback box's shape."""
    box = mask_box(mask)
    found = box is not None
    if not found:
        box = tuple(float(v) for v in fallback_box)
        h, w = mask.shape
        mask = box_mask(box, w, h)
    if kind == "rectangle":
        points: list = list(box)
    elif kind == "polygon":
        points = mask_to_polygon(mask) if found else box_polygon(box)
    else:
        points = mask_to_rle(mask)
    return {"type": kind, "points": points}, box, found
