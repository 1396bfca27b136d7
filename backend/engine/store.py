"""Keeps RAM flat on long videos: bounds how many tracked frames keep their heavy arrays in memory.

A tracked (non-conditioning) frame's output holds a spatial memory and
low-res logits (~0.75 MB per object at 1024 px) but only the last
`num_maskmem` frames are needed to keep tracking. Beyond `max_resident`
frames per object, the least recently used frames' arrays are spilled to disk
(when a spill folder is set, so a later correction there is exact) or dropped
(their object pointers always stay). Conditioning frames are never evicted.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .state import FrameOutput

log = logging.getLogger(__name__)


class HeavyStateStore:
    """LRU residency of (object uid, frame) -> FrameOutput heavy arrays, with optional disk spill."""

    def __init__(self, max_resident: int, spill_dir: str | Path | None = None):
        if max_resident < 1:
            raise ValueError("max_resident must be at least 1 frame per object")
        self.max_resident = max_resident
        self._resident: dict[int, OrderedDict[int, FrameOutput]] = {}
        if spill_dir:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="sess-", dir=spill_dir)) if spill_dir else None
        self.spilled_bytes = 0

    def _path(self, uid: int, frame: int) -> Path:
        return self._dir / f"{uid}_{frame}.npz"

    def add(self, uid: int, frame: int, out: FrameOutput) -> None:
        """Register a newly computed tracked-frame output; may evict older ones of the same object."""
        lru = self._resident.setdefault(uid, OrderedDict())
        lru[frame] = out
        lru.move_to_end(frame)
        while len(lru) > self.max_resident:
            old_frame, old = lru.popitem(last=False)
            self._evict(uid, old_frame, old)

    def _evict(self, uid: int, frame: int, out: FrameOutput) -> None:
        if out.pred_logits is None and out.maskmem is None:
            return
        if self._dir is not None:
            arrays = {k: v for k, v in (("pred_logits", out.pred_logits), ("maskmem", out.maskmem)) if v is not None}
            path = self._path(uid, frame)
            np.savez(path, **arrays)
            self.spilled_bytes += path.stat().st_size
            out.spilled = True
        out.pred_logits = None
        out.maskmem = None

    def ensure(self, uid: int, frame: int, out: FrameOutput) -> bool:
        """Make the output's heavy arrays resident again if they were spilled; False if they were dropped."""
        if out.pred_logits is not None or out.maskmem is not None:
            lru = self._resident.get(uid)
            if lru is not None and frame in lru:
                lru.move_to_end(frame)
            return True
        if not out.spilled or self._dir is None:
            return False
        with np.load(self._path(uid, frame)) as z:
            out.pred_logits = z["pred_logits"] if "pred_logits" in z.files else None
            out.maskmem = z["maskmem"] if "maskmem" in z.files else None
        self.add(uid, frame, out)
        return True

    def forget(self, uid: int, frame: int | None = None) -> None:
        """Stop tracking one frame of an object (or all its frames) and delete spilled files."""
        lru = self._resident.get(uid)
        frames = list(lru) if (lru is not None and frame is None) else ([frame] if frame is not None else [])
        if lru is not None:
            for f in frames:
                lru.pop(f, None)
            if frame is None:
                self._resident.pop(uid, None)
        if self._dir is not None:
            pattern = f"{uid}_*.npz" if frame is None else f"{uid}_{frame}.npz"
            for p in self._dir.glob(pattern):
                p.unlink(missing_ok=True)

    @property
    def resident_frames(self) -> int:
        return sum(len(v) for v in self._resident.values())

    def close(self) -> None:
        self._resident.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
