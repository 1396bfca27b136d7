"""Typed tracking state: a frame's output for one object, an object track, and the object registry.

Mirrors the dictionaries of sam2's `SAM2VideoPredictor` inference state with
dataclasses. Frame indices are 0-based; point coordinates are video pixels.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Hashable, Iterator

import numpy as np

ObjectId = Hashable
_serials = itertools.count(1)


@dataclass
class PointPrompt:
    """Clicks on one frame: coords [N,2] (x, y) in video pixels, labels [N] int32.

    Labels: 1 positive, 0 negative, 2 box top-left, 3 box bottom-right (a box is
    stored as its two corners, first, as sam2 does).
    """

    coords: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        self.coords = np.asarray(self.coords, np.float32).reshape(-1, 2)
        self.labels = np.asarray(self.labels, np.int32).reshape(-1)
        if len(self.coords) != len(self.labels):
            raise ValueError(f"{len(self.coords)} points but {len(self.labels)} labels; give one label per point")

    def __len__(self) -> int:
        return len(self.labels)

    def extended(self, other: "PointPrompt") -> "PointPrompt":
        return PointPrompt(np.concatenate([self.coords, other.coords]), np.concatenate([self.labels, other.labels]))


@dataclass
class FrameOutput:
    """One object's result on one frame: what later frames remember of it.

    pred_logits: low-res mask logits [S/4, S/4] float32 (holes filled), or None when spilled/evicted.
    maskmem: memory as bfloat16 bits (uint16), shaped as the model's `MemoryLayout` says ([mem_dim, S/16, S/16]
             for SAM 2.1, [T, mem_dim] perceiver tokens for EdgeTAM), None until encoded
             (prompted frames are encoded when propagation starts) or when evicted.
    obj_ptr: object pointer [hidden] float32; object_score: the object-presence logit.
    serial: a process-unique number of this computed output (filling in its maskmem, spilling and
    reloading keep it): what caches of results derived from this output are keyed by.
    """

    pred_logits: np.ndarray | None
    maskmem: np.ndarray | None
    obj_ptr: np.ndarray
    object_score: float
    spilled: bool = False
    serial: int = field(default_factory=lambda: next(_serials))

    @property
    def heavy_nbytes(self) -> int:
        return sum(a.nbytes for a in (self.pred_logits, self.maskmem) if a is not None)


@dataclass
class ObjectTrack:
    """Prompts and outputs of one object (sam2's per-object slices of the inference state).

    cond: outputs of conditioning frames (frames with prompts), used as memory by every frame.
    non_cond: outputs of tracked frames.
    temp_cond / temp_non_cond: outputs of prompts added since the last propagation; they are
    memory-encoded and moved into cond / non_cond when propagation starts.
    tracked: frames this object has been tracked on -> whether that was in reverse.
    stale_fwd / stale_rev: the object must be re-tracked forward from stale_fwd (backward from stale_rev)
    because its prompts changed there since it was last tracked over that frame (None: up to date).
    """

    obj_id: ObjectId
    uid: int = 0  # session-unique number (client ids may be any hashable)
    points: dict[int, PointPrompt] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)
    stale_fwd: int | None = None
    stale_rev: int | None = None

    def latest_output(self, frame: int) -> FrameOutput | None:
        """The most recent output on `frame`: pending prompt output first, then stored ones."""
        for d in (self.temp_cond, self.temp_non_cond, self.cond, self.non_cond):
            if frame in d:
                return d[frame]
        return None

    def prompted_frames(self) -> set[int]:
        return set(self.points) | set(self.masks)


class ObjectRegistry:
    """The one place that maps client object ids to model-side indices (insertion order)."""

    def __init__(self):
        self._tracks: dict[ObjectId, ObjectTrack] = {}
        self._next_uid = 0

    def get_or_create(self, obj_id: ObjectId) -> ObjectTrack:
        track = self._tracks.get(obj_id)
        if track is None:
            self._next_uid += 1
            track = self._tracks[obj_id] = ObjectTrack(obj_id, uid=self._next_uid)
        return track

    def peek(self, obj_id: ObjectId) -> ObjectTrack | None:
        return self._tracks.get(obj_id)

    def get(self, obj_id: ObjectId) -> ObjectTrack:
        try:
            return self._tracks[obj_id]
        except KeyError:
            raise KeyError(f"unknown object id {obj_id!r}; known ids: {list(self._tracks)}") from None

    def remove(self, obj_id: ObjectId) -> ObjectTrack:
        track = self.get(obj_id)
        del self._tracks[obj_id]
        return track

    def index(self, obj_id: ObjectId) -> int:
        return list(self._tracks).index(obj_id)

    @property
    def ids(self) -> list[ObjectId]:
        return list(self._tracks)

    def __iter__(self) -> Iterator[ObjectTrack]:
        return iter(list(self._tracks.values()))

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, obj_id: ObjectId) -> bool:
        return obj_id in self._tracks
