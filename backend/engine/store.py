"""Keeps RAM flat on long videos: bounds how many tracked frames keep their heavy arrays in memory.

A tracked (non-conditioning) frame's output holds a spatial memory and
low-res logits (~0.75 MB per object at 1024 px) but only the last
`num_maskmem` frames are needed to keep tracking. Beyond `max_resident`
frames per object, the least recently used frames' arrays are spilled to disk
and read back when a later correction, a reverse pass or a result needs them,
so eviction never changes a result. The spill folder is capped in bytes
(`max_spill_bytes`): a session that would exceed it stops with `SpillFull`
(its message names the setting) rather than silently losing memories.
Object pointers always stay in RAM; conditioning frames are never evicted.
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


class SpillFull(RuntimeError):
    """The session's spilled memories would exceed `EngineSettings.max_spill_bytes`."""


class HeavyStateStore:
    """LRU residency of (object uid, frame) -> FrameOutput heavy arrays, spilled to disk beyond `max_resident`.

    spill_dir: parent folder of this session's spill folder (None: the system temp folder).
    max_spill_bytes: cap of this session's spill files (0: no cap).
    """

    def __init__(self, max_resident: int, spill_dir: str | Path | None = None, max_spill_bytes: int = 0):
        if max_resident < 1:
            raise ValueError("max_resident must be at least 1 frame per object")
        self.max_resident = max_resident
        self.max_spill_bytes = int(max_spill_bytes)
        self._resident: dict[int, OrderedDict[int, FrameOutput]] = {}
        self._spill_parent = Path(spill_dir) if spill_dir else None
        self._dir: Path | None = None  # made on first spill
        self._files: dict[tuple[int, int], int] = {}  # (uid, frame) -> bytes on disk
        self.spilled_bytes = 0

    def _path(self, uid: int, frame: int) -> Path:
        if self._dir is None:
            if self._spill_parent is not None:
                self._spill_parent.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="sess-", dir=self._spill_parent))
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
        if not (out.spilled and (uid, frame) in self._files):  # a reloaded frame's file is still on disk
            arrays = {k: v for k, v in (("pred_logits", out.pred_logits), ("maskmem", out.maskmem)) if v is not None}
            size = sum(a.nbytes for a in arrays.values())
            if self.max_spill_bytes and self.spilled_bytes + size > self.max_spill_bytes:
                lru = self._resident.setdefault(uid, OrderedDict())
                lru[frame] = out  # keep it: nothing is lost, the caller sees the error
                lru.move_to_end(frame, last=False)
                raise SpillFull(f"this video's tracking memories need more than MAX_SPILL_MB="
                                f"{self.max_spill_bytes / 2**20:.1f} MB on disk; raise MAX_SPILL_MB "
                                f"(max_spill_bytes) or track fewer objects/frames")
            path = self._path(uid, frame)
            np.savez(path, **arrays)
            nbytes = path.stat().st_size
            self.spilled_bytes += nbytes - self._files.get((uid, frame), 0)
            self._files[(uid, frame)] = nbytes
            out.spilled = True
        out.pred_logits = None
        out.maskmem = None

    def ensure(self, uid: int, frame: int, out: FrameOutput) -> bool:
        """Make the output's heavy arrays resident again if they were spilled; False if they are gone."""
        if out.pred_logits is not None or out.maskmem is not None:
            lru = self._resident.get(uid)
            if lru is not None and frame in lru:
                lru.move_to_end(frame)
            return True
        if not out.spilled or (uid, frame) not in self._files:
            return False
        with np.load(self._path(uid, frame)) as z:
            out.pred_logits = z["pred_logits"] if "pred_logits" in z.files else None
            out.maskmem = z["maskmem"] if "maskmem" in z.files else None
        self.add(uid, frame, out)
        return True

    def forget(self, uid: int, frame: int | None = None) -> None:
        """Stop tracking one frame of an object (or all its frames) and delete its spilled files."""
        lru = self._resident.get(uid)
        if lru is not None:
            if frame is None:
                self._resident.pop(uid, None)
            else:
                lru.pop(frame, None)
        for key in [k for k in self._files if k[0] == uid and (frame is None or k[1] == frame)]:
            self.spilled_bytes -= self._files.pop(key)
            self._path(*key).unlink(missing_ok=True)

    @property
    def resident_frames(self) -> int:
        return sum(len(v) for v in self._resident.values())

    @property
    def resident_bytes(self) -> int:
        return sum(o.heavy_nbytes for lru in self._resident.values() for o in lru.values())

    def close(self) -> None:
        self._resident.clear()
        self._files.clear()
        self.spilled_bytes = 0
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
