"""Memory-conditioned features of recent (object, frame)s, so a click on a tracked frame skips memory attention.

Memory attention is a pure function of the frame's image features and the object's memory inputs. The key
records everything those inputs depend on: the session, object, frame, direction, and for each memory frame
and object pointer its temporal slot and the serial of the output it comes from (`FrameOutput.serial`, new for
every computed output). A new prompt or re-tracked frame changes a serial, so a stale entry can never match.
Capped in bytes (LRU); 0 disables it. Thread-safe.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable

import numpy as np

Key = tuple[Hashable, ...]


class ConditionedCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Key) -> np.ndarray | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: Key, value: np.ndarray) -> None:
        """value: one object's conditioned features [1, C, h, w] (copied, so no larger buffer stays alive)."""
        if value.nbytes > self.max_bytes:
            return
        value = np.array(value, dtype=np.float32, copy=True)
        value.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def drop_session(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == session_id]:
                self._bytes -= self._items.pop(key).nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
