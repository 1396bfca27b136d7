"""Which object does a Label Studio region prompt, and what are a task's prompts? Pure logic, no engine, no HTTP.

Object identity rule (frames tasks, `<Image valueList>`), applied to each region the first time it is seen:

1. A brush region whose id we made (`sam2-<object>-<frame>`, see `brush_region_id`) belongs to that object.
2. A per-instance label (`Car#2`, see `labelconfig.split_instance_label`) names its object: every region with that
   label belongs to one object.
3. A rectangle starts a new object.
4. A keypoint belongs to the object of its label whose mask on that frame contains the point. Otherwise a positive
   point starts a new object, and a negative point goes to the object of its label whose mask on that frame is
   nearest, or to the only object of its label; with none of these it is refused (a negative point cannot start one).
5. Any other brush region (drawn by hand) belongs to the object of its label whose mask on that frame overlaps it
   most, else it starts a new object.

Video tasks: every VideoRectangle region is one object, keyed by its region id.

Once assigned, a region id keeps its object (the `Ledger` remembers it), so moving a point never re-assigns it.
A session rebuilt from a saved annotation replays the rule against our earlier prediction (see `assign_object`).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from backend.ls.errors import BadRequest
from backend.ls.geometry import Box
from backend.ls.labelconfig import split_instance_label
from backend.ls.regions import BrushRegion, KeypointRegion, RectRegion, Region, VideoRectRegion

logger = logging.getLogger(__name__)

_OUR_ID = re.compile(r"^sam2-(?P<obj>\d+)-(?P<frame>\d+)$")
MaskLookup = Callable[[int], Mapping[int, np.ndarray]]
"""frame -> {object id: HxW bool mask} of what is currently tracked on that frame (empty when nothing is)."""


def brush_region_id(obj: int, frame: int) -> str:
    """Stable LS region id of object `obj` on 0-based `frame`: a later prediction replaces it, never duplicates it."""
    return f"sam2-{obj}-{frame}"


def parse_brush_region_id(region_id: str) -> tuple[int, int] | None:
    """`sam2-3-17` -> (3, 17); None for ids we did not make."""
    m = _OUR_ID.match(region_id)
    return (int(m.group("obj")), int(m.group("frame"))) if m else None


@dataclass(frozen=True, eq=False)
class FramePrompt:
    """All prompts of one object on one frame, in video pixels: points (x, y, 1 positive / 0 negative), box xyxy,
    or a mask (HxW bool; a mask replaces points and box, as SAM 2's add_new_mask does)."""

    points: tuple[tuple[float, float, int], ...] = ()
    box: Box | None = None
    mask: np.ndarray | None = None

    def same_as(self, other: FramePrompt | None) -> bool:
        if other is None:
            return False
        if (self.mask is None) != (other.mask is None):
            return False
        if self.mask is not None and not np.array_equal(self.mask, other.mask):
            return False
        return self.points == other.points and self.box == other.box


@dataclass
class ObjectBook:
    """The one place that maps LS identities to object ids (1, 2, ... per task), their labels and their scopes.

    A scope is the annotation whose prompts made an object. Several annotators may prompt one task at once; each has
    an annotation of their own, and LS tells the backend neither the user nor the annotation of an interactive
    request, so a request's scope is found from its region ids: the scope of any region the ledger already knows
    (our `sam2-<obj>-<frame>` masks included), else a new one. Regions seen together in one request or one saved
    annotation belong to one annotation, so their scopes merge. An object made by one annotation's prompts is never
    given another annotation's prompts, never answered to it, and caps count one scope's objects.
    """

    labels: dict[int, str] = field(default_factory=dict)
    by_key: dict[str, int] = field(default_factory=dict)  # instance label (per scope) or video region id -> object
    scopes: dict[int, int] = field(default_factory=dict)  # object -> scope (objects of our earlier prediction: none)
    merged: dict[int, int] = field(default_factory=dict)  # scope -> the scope it was merged into
    next_scope: int = 1

    def new(self, label: str, key: str | None = None, scope: int | None = None) -> int:
        obj = max(self.labels, default=0) + 1
        self.labels[obj] = label
        if key is not None:
            self.by_key[key] = obj
        if scope is not None:
            self.scopes[obj] = scope
        return obj

    # ---- scopes ----------------------------------------------------------------------------------
    def new_scope(self) -> int:
        self.next_scope += 1
        return self.next_scope - 1

    def resolve(self, scope: int) -> int:
        while scope in self.merged:
            scope = self.merged[scope]
        return scope

    def scope_of(self, obj: int) -> int | None:
        scope = self.scopes.get(obj)
        return None if scope is None else self.resolve(scope)

    def in_scope(self, obj: int, scope: int | None) -> bool:
        """Whether `obj` may take prompts of (or be answered to) `scope`: its own objects and unclaimed ones (ours
        from an earlier prediction, before any prompt claimed them); None means every scope."""
        own = self.scope_of(obj)
        return scope is None or own is None or own == self.resolve(scope)

    def claim(self, obj: int, scope: int | None) -> None:
        if scope is not None and self.scope_of(obj) is None:
            self.scopes[obj] = self.resolve(scope)

    def merge(self, scopes: set[int]) -> int:
        """One scope for regions seen together (the lowest number survives)."""
        roots = {self.resolve(s) for s in scopes}
        target = min(roots)
        for s in roots - {target}:
            self.merged[s] = target
        return target

    def snapshot(self) -> tuple:
        return dict(self.labels), dict(self.by_key), dict(self.scopes), dict(self.merged), self.next_scope

    def restore(self, snap: tuple) -> None:
        labels, by_key, scopes, merged, self.next_scope = snap
        self.labels, self.by_key, self.scopes, self.merged = dict(labels), dict(by_key), dict(scopes), dict(merged)

    def ensure(self, obj: int, label: str) -> int:
        self.labels.setdefault(obj, label)
        return obj

    def of_label(self, label: str, scope: int | None = None) -> list[int]:
        return [o for o, lab in self.labels.items() if lab == label and self.in_scope(o, scope)]

    def display(self, obj: int) -> str:
        """What the annotator reads in the region's meta text: `Car 2` (object 2, label Car)."""
        cls, tag = split_instance_label(self.labels[obj])
        return f"{cls} #{tag}" if tag else f"{cls} {obj}"

    def forget(self, obj: int) -> None:
        self.labels.pop(obj, None)
        self.scopes.pop(obj, None)
        self.by_key = {k: v for k, v in self.by_key.items() if v != obj}


@dataclass(frozen=True, eq=False)
class Entry:
    """One prompt region as the ledger keeps it: its object, 0-based frame, kind and payload (pixels)."""

    obj: int
    frame: int
    kind: str  # "point" | "box" | "mask"
    label: str
    point: tuple[float, float, int] | None = None
    box: Box | None = None
    mask: np.ndarray | None = None
    rtype: str = ""


def _contains(mask: np.ndarray, x: float, y: float) -> bool:
    h, w = mask.shape
    xi, yi = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
    return bool(mask[yi, xi])


def _distance(mask: np.ndarray, x: float, y: float) -> float:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return float("inf")
    return float(np.min((xs + 0.5 - x) ** 2 + (ys + 0.5 - y) ** 2))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.count_nonzero(a & b)
    return inter / max(1, np.count_nonzero(a | b))


def _box_iou(box, mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0
    mx0, my0, mx1, my1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    iw = max(0.0, min(box[2], mx1) - max(box[0], mx0))
    ih = max(0.0, min(box[3], my1) - max(box[1], my0))
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (mx1 - mx0) * (my1 - my0) - inter
    return inter / union if union > 0 else 0.0


def assign_object(region: Region, book: ObjectBook, masks_on: MaskLookup, *,
                  unclaimed: list[int] | None = None, scope: int | None = None) -> int:
    """The object a newly seen region prompts, creating it in `book` when the rule says so (module docstring).

    `unclaimed` (replay of a saved annotation while a session is rebuilt; `masks_on` then gives our earlier
    prediction): objects of that prediction no prompt has claimed yet. A region that would start an object rejoins
    the one its rectangle frames (box IoU >= 0.5), else the first unclaimed one of its label: prompts are replayed in
    the order they were drawn, which is the order their objects were numbered.

    `scope` (see `ObjectBook`): the annotation the region belongs to; only its own objects (and unclaimed ones) are
    candidates, and a new object belongs to it. None: every object is a candidate.
    """
    if isinstance(region, VideoRectRegion):
        return book.by_key.get(region.id) or book.new(region.label, key=region.id, scope=scope)
    if isinstance(region, BrushRegion):
        ours = parse_brush_region_id(region.id)
        if ours is not None:
            return book.ensure(ours[0], region.label)
    if split_instance_label(region.label)[1] is not None:
        key = region.label if scope is None else f"{book.resolve(scope)}:{region.label}"
        return book.by_key.get(key) or book.new(region.label, key=key, scope=scope)
    candidates = {o: m for o, m in masks_on(region.frame).items()
                  if book.labels.get(o) == region.label and book.in_scope(o, scope)}
    if isinstance(region, RectRegion):
        if unclaimed is not None:
            scores = sorted(((_box_iou(region.box_xyxy, m), o) for o, m in candidates.items()), reverse=True)
            if scores and scores[0][0] >= 0.5:
                return scores[0][1]
        return _new_or_unclaimed(region.label, book, unclaimed, scope)
    if isinstance(region, KeypointRegion):
        inside = [o for o, m in candidates.items() if _contains(m, region.x, region.y)]
        if inside:
            return inside[0]
        if region.positive:
            return _new_or_unclaimed(region.label, book, unclaimed, scope)
        near = sorted((_distance(m, region.x, region.y), o) for o, m in candidates.items() if m.any())
        if near:
            return near[0][1]
        same = book.of_label(region.label, scope)
        if len(same) == 1:
            return same[0]
        raise BadRequest(f"negative keypoint '{region.id}' on frame {region.frame} is not on any '{region.label}' "
                         "object; a negative point cannot start an object: place a positive point or a box first, "
                         "or put the negative point on the object's mask")
    scores = sorted(((_overlap(region.mask, m), o) for o, m in candidates.items()), reverse=True)
    if scores and scores[0][0] > 0:
        return scores[0][1]
    return _new_or_unclaimed(region.label, book, unclaimed, scope)


def _new_or_unclaimed(label: str, book: ObjectBook, unclaimed: list[int] | None, scope: int | None = None) -> int:
    for obj in unclaimed or ():
        if book.labels.get(obj) == label and book.in_scope(obj, scope):
            return obj
    return book.new(label, scope=scope)


class Ledger:
    """Prompt regions of one task by LS region id; turns them into per-(object, frame) prompts for the engine."""

    def __init__(self):
        self.entries: dict[str, Entry] = {}

    def upsert(self, regions: Iterable[Region], book: ObjectBook, masks_on: MaskLookup,
               is_correction: Callable[[BrushRegion], bool] = lambda r: True, *, replay: bool = False,
               scope: int | None = None) -> list[str]:
        """Add or update prompt regions (keeping each known id's object); returns the ids that changed.

        Brush regions count as prompts only where `is_correction` says so (an unchanged predicted mask is output
        the annotator accepted, not a prompt). Video rectangles become one box entry per enabled keyframe.
        `scope`: the annotation these regions belong to (see `scope_for`); new objects are made in it.
        """
        changed = []
        if replay:  # prompts first: they created the objects that corrections refer to
            regions = sorted(regions, key=lambda r: isinstance(r, BrushRegion))
        for region in regions:
            if isinstance(region, BrushRegion) and not is_correction(region):
                continue
            old = self._first_entry(region.id)
            unclaimed = None
            if replay:
                claimed = {e.obj for e in self.entries.values()}
                unclaimed = [o for o in sorted(book.labels) if o not in claimed]
            obj = old.obj if old is not None else assign_object(region, book, masks_on, unclaimed=unclaimed,
                                                                 scope=scope)
            book.claim(obj, scope)
            for rid, entry in self._entries_of(region, obj):
                prev = self.entries.get(rid)
                if prev is None or not _same_entry(prev, entry):
                    self.entries[rid] = entry
                    changed.append(rid)
            if isinstance(region, VideoRectRegion):  # keyframes the annotator deleted
                keep = {rid for rid, _ in self._entries_of(region, obj)}
                for rid in [r for r in self.entries if r.startswith(region.id + "@") and r not in keep]:
                    del self.entries[rid]
                    changed.append(rid)
        return changed

    def scope_for(self, region_ids: Iterable[str], book: ObjectBook, *, create: bool = True) -> int | None:
        """The scope (annotation, see `ObjectBook`) of regions that arrive together: the scope of every one the
        ledger knows, merged into one, else a new scope (None with `create=False`)."""
        found = set()
        for rid in region_ids:
            if not isinstance(rid, str):
                continue
            entry = self._first_entry(rid)
            ours = parse_brush_region_id(rid)
            obj = entry.obj if entry is not None else (ours[0] if ours is not None else None)
            scope = book.scope_of(obj) if obj is not None else None
            if scope is not None:
                found.add(scope)
        if found:
            return book.merge(found)
        return book.new_scope() if create else None

    def remove_missing(self, present: Iterable[Region], rtype: str, label: str, *, book: ObjectBook | None = None,
                       scope: int | None = None) -> list[str]:
        """LS sends, in an interactive context, every region of one type and label of the annotator's annotation:
        any other id of that type and label the ledger holds for that annotation (`scope`) was deleted in the
        editor; other annotations' regions stay. Returns the removed ids."""
        ids = {r.id for r in present}
        gone = [rid for rid, e in self.entries.items()
                if e.rtype == rtype and e.label == label and rid.split("@")[0] not in ids  # video: "<id>@<frame>"
                and (book is None or book.in_scope(e.obj, scope))]
        for rid in gone:
            del self.entries[rid]
        return gone

    def prompts(self) -> dict[tuple[int, int], FramePrompt]:
        """(object, frame) -> FramePrompt; a mask entry on a frame wins over its points and box."""
        grouped: dict[tuple[int, int], list[Entry]] = {}
        for e in self.entries.values():
            grouped.setdefault((e.obj, e.frame), []).append(e)
        out = {}
        for key, entries in grouped.items():
            masks = [e.mask for e in entries if e.kind == "mask"]
            if masks:
                out[key] = FramePrompt(mask=masks[-1])
                continue
            boxes = [e.box for e in entries if e.kind == "box"]
            out[key] = FramePrompt(points=tuple(e.point for e in entries if e.kind == "point"),
                                   box=boxes[-1] if boxes else None)
        return out

    def drop_object(self, obj: int) -> None:
        self.entries = {rid: e for rid, e in self.entries.items() if e.obj != obj}

    def _first_entry(self, region_id: str) -> Entry | None:
        if region_id in self.entries:
            return self.entries[region_id]
        return next((e for rid, e in self.entries.items() if rid.startswith(region_id + "@")), None)

    @staticmethod
    def _entries_of(region: Region, obj: int) -> list[tuple[str, Entry]]:
        if isinstance(region, KeypointRegion):
            pt = (region.x, region.y, 1 if region.positive else 0)
            return [(region.id, Entry(obj, region.frame, "point", region.label, point=pt, rtype="keypointlabels"))]
        if isinstance(region, RectRegion):
            return [(region.id, Entry(obj, region.frame, "box", region.label, box=region.box_xyxy,
                                      rtype="rectanglelabels"))]
        if isinstance(region, BrushRegion):
            return [(region.id, Entry(obj, region.frame, "mask", region.label, mask=region.mask, rtype="brushlabels"))]
        return [(f"{region.id}@{kf.frame}", Entry(obj, kf.frame, "box", region.label, box=kf.box_xyxy,
                                                  rtype="videorectangle"))
                for kf in region.keyframes if kf.enabled]


def _same_entry(a: Entry, b: Entry) -> bool:
    if (a.obj, a.frame, a.kind, a.point, a.box, a.label) != (b.obj, b.frame, b.kind, b.point, b.box, b.label):
        return False
    return a.mask is None and b.mask is None or (a.mask is not None and b.mask is not None
                                                  and np.array_equal(a.mask, b.mask))


def changed_frames(old: Mapping[tuple[int, int], FramePrompt],
                   new: Mapping[tuple[int, int], FramePrompt]) -> list[tuple[int, int]]:
    """(object, frame) pairs whose prompts differ between two `Ledger.prompts()` snapshots, sorted by frame."""
    keys = set(old) | set(new)
    return sorted((k for k in keys if k not in new or not new[k].same_as(old.get(k))), key=lambda k: (k[1], k[0]))


def mask_differs(a: np.ndarray, b: np.ndarray | None, tolerance: float = 0.001) -> bool:
    """True when mask `a` differs from `b` in more than `tolerance` of their union (or `b` is missing)."""
    if b is None or a.shape != b.shape:
        return True
    diff = np.count_nonzero(a != b)
    return diff > tolerance * max(1, np.count_nonzero(a | b))
