"""A thread-safe least-recently-used map capped in bytes: the engine's feature caches share it.

Values need `.nbytes`. `max_bytes` bounds the stored values; 0 disables caching (a value larger than the cap is
not stored). Keys are tuples whose first element names a group (a source, a session) that `drop_group` forgets.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[Hashable, ...], V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Hashable, ...]) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: tuple[Hashable, ...], value: V) -> None:
        if value.nbytes > self.max_bytes:
            return
        self._store(key, value)

    def _store(self, key: tuple[Hashable, ...], value: V) -> None:
        """Insert as most recent, then evict least-recently-used values until the byte cap holds."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def drop_group(self, first: Hashable) -> None:
        """Forget every value whose key starts with `first`."""
        with self._lock:
            for key in [k for k in self._items if k[0] == first]:
                self._bytes -= self._items.pop(key).nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
