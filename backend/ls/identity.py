"""Which regions in what LS sends back are the annotator's prompts, and which are our own output echoed back.

LS returns our predictions inside annotations and contexts. A brush mask we produced (any version of it, or one within
tolerance of what we track or of our stored prediction) is accepted output, not a correction; videorectangle keyframes
we emitted are not prompts. Stored results are decoded only when their size is the task's frame size.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from backend.ls.entries import TaskEntry
from backend.ls.prompts import mask_differs, parse_brush_region_id
from backend.ls.regions import BrushRegion, Region, VideoRectRegion
from backend.ls.maskurl import value_mask
from backend.ls.tasktrack import TaskTracker, mask_digest, result_digest


@dataclass(frozen=True)
class KnownOutput:
    """A brush result in a context that is, field for field and byte for byte, one we sent for its (object, frame):
    our own accepted output. Parsing it would decode its RLE only for `is_correction` to say so; it still counts as
    present (the ledger must not read its absence as a deletion)."""

    id: str
    label: str


def split_known(raw: list, tracker: TaskTracker) -> tuple[list[KnownOutput], list]:
    """(our own unchanged brush results, everything else in input order) of a context's results."""
    known, rest = [], []
    for res in raw:
        ours = parse_brush_region_id(res["id"]) if isinstance(res, dict) and res.get("type") == "brushlabels" \
            and isinstance(res.get("id"), str) else None
        sent = tracker.emitted_results.get(ours) if ours is not None else None
        if sent and result_digest(res) in sent:
            known.append(KnownOutput(res["id"], res["value"]["brushlabels"][0]))
        else:
            rest.append(res)
    return known, rest


def is_correction(region: BrushRegion, entry: TaskEntry) -> bool:
    ours = parse_brush_region_id(region.id)
    if ours is None:
        return True  # a mask drawn by hand is a prompt
    # accepted output if it is any mask we produced for that frame, or within tolerance of what we track now or
    # of our stored prediction (an annotation saved before a re-propagation still holds the older masks)
    if mask_digest(np.packbits(region.mask.ravel())) in entry.tracker.emitted_digests.get(ours, ()):
        return False
    known = [entry.tracker.mask(*ours)]
    if region.id in entry.reference:
        known.append(decode_stored(entry.reference[region.id], entry.tracker.size))
    known = [m for m in known if m is not None]
    return bool(known) and all(mask_differs(region.mask, m) for m in known)

def reference_masks(entry: TaskEntry):
    """frame -> {object: mask} of our earlier prediction (for replaying the identity rule on a rebuild)."""
    def on(frame: int) -> dict[int, object]:
        out = {}
        for rid, res in entry.reference.items():
            ours = parse_brush_region_id(rid)
            if ours is not None and ours[1] == frame:
                mask = decode_stored(res, entry.tracker.size)
                if mask is not None:
                    out[ours[0]] = mask
        return out
    return on

def strip_emitted(region: Region, entry: TaskEntry) -> Region:
    """Drop keyframes of a video region that are our own output echoed back (accepted, not prompts)."""
    if not isinstance(region, VideoRectRegion):
        return region
    emitted = entry.tracker.emitted.get(region.id)
    if emitted is None and region.id in entry.reference:
        emitted = entry.tracker.boxes_of_sequence(entry.reference[region.id])
    if not emitted:
        return region
    prompted = {e.frame for rid, e in entry.tracker.ledger.entries.items() if rid.startswith(region.id + "@")}
    keep = tuple(kf for kf in region.keyframes if kf.frame in prompted or not near(emitted.get(kf.frame),
                                                                                    kf.box_xyxy))
    return replace(region, keyframes=keep) if keep else region


def decode_stored(result: Mapping, frame_size: tuple[int, int]):
    """HxW bool mask of a stored brush result, or None when it is not one we can read or is not of the task's
    frame size (checked before decoding: a result declaring a huge size allocates nothing)."""
    value = result.get("value") or {}
    try:
        return value_mask(value, result.get("original_height"), result.get("original_width"), frame_size=frame_size)
    except (TypeError, ValueError):
        return None


def rtype_of(region: Region) -> str:
    return {"KeypointRegion": "keypointlabels", "RectRegion": "rectanglelabels", "BrushRegion": "brushlabels",
            "VideoRectRegion": "videorectangle"}[type(region).__name__]


def near(a, b, tol_px: float = 0.5) -> bool:
    return a is not None and all(abs(x - y) <= tol_px for x, y in zip(a, b))
