"""Image-encoder outputs per frame, in an LRU cache capped in bytes and shared by all sessions."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameFeatures:
    """One frame's image features (float32): hr0 [1,32,S/4,S/4], hr1 [1,64,S/8,S/8], feat [1,256,S/16,S/16]."""

    hr0: np.ndarray
    hr1: np.ndarray
    feat: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.hr0.nbytes + self.hr1.nbytes + self.feat.nbytes


class FeatureCache:
    """Least-recently-used cache of `FrameFeatures` keyed by (source key, frame index).

    `max_bytes` bounds the stored arrays; 0 disables caching. Thread-safe.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[str, int], FrameFeatures] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, int]) -> FrameFeatures | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: tuple[str, int], value: FrameFeatures) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def drop_source(self, source_key: str) -> None:
        """Forget every frame of one source (e.g. when its session closes and the file goes away)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == source_key]:
                self._bytes -= self._items.pop(key).nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
