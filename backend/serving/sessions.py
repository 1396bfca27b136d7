"""Per-task session store shared by every front door: an LRU bounded by count, bytes and idle time.

A "session" is whatever an adapter keeps per task or per tracker (the LS adapter's task tracker, a CVAT tracking
session, a Ray replica's sessions). The store only knows three things about it: its key, its size in bytes
(`size_of`, re-read on `touch`) and how to free it (`close`). Eviction picks least-recently-used entries until every
cap holds again, and calls `close` **after** the store's lock is released, so a slow close (cancelling a job,
unpinning media) never blocks lookups of other keys.

`get_or_create` runs the (possibly slow) factory outside the store lock; concurrent callers for the same key wait
for the first one (up to `wait_s`, then `StoreBusy`), callers for other keys do not wait at all.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from backend.serving.errors import BackendError

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class StoreBusy(BackendError):
    """Another request is still building the same session: 409, retry shortly."""

    status = 409


@dataclass
class _Slot(Generic[V]):
    value: V
    nbytes: int
    last_used: float


class SessionStore(Generic[K, V]):
    """Thread-safe LRU of sessions.

    Args:
        max_items: most sessions kept (>= 1).
        max_bytes: most bytes kept, summed over `size_of(value)`; None for no byte cap. The session just put or
            touched is never evicted by its own growth: a single session larger than the cap is kept alone.
        ttl_s: a session unused for this many seconds is closed by the next `sweep()` (or any put); None: never.
        size_of: bytes held by a session (called under no lock of ours; keep it cheap).
        close: frees a session; called exactly once per evicted or discarded value, never under the store lock.
        clock: monotonic seconds (tests pass a fake).
        busy: sessions for which it returns True (e.g. a propagation job still running) are evicted only after all
            idle ones; the caps still hold (a busy session is evicted when nothing else is left). Called under the
            store lock: keep it cheap and lock-free towards the store.
    """

    def __init__(self, *, max_items: int, max_bytes: int | None = None, ttl_s: float | None = None,
                 size_of: Callable[[V], int] = lambda v: 0, close: Callable[[K, V], None] = lambda k, v: None,
                 clock: Callable[[], float] = time.monotonic, busy: Callable[[K], bool] = lambda k: False):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items, self.max_bytes, self.ttl_s = max_items, max_bytes, ttl_s
        self._size_of, self._close, self._clock, self._busy = size_of, close, clock, busy
        self._slots: OrderedDict[K, _Slot[V]] = OrderedDict()
        self._building: dict[K, threading.Event] = {}
        self._lock = threading.Lock()
        self.closed = 0  # sessions closed so far (evicted, expired, replaced or discarded)

    # ---- lookups -------------------------------------------------------------------------------------------------
    def get(self, key: K) -> V | None:
        """The session for `key` (marking it used), or None."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return None
            slot.last_used = self._clock()
            self._slots.move_to_end(key)
            return slot.value

    def peek(self, key: K) -> V | None:
        """The session for `key` without marking it used."""
        with self._lock:
            slot = self._slots.get(key)
            return slot.value if slot else None

    def __contains__(self, key: K) -> bool:
        with self._lock:
            return key in self._slots

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._slots)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._slots.values())

    # ---- changes -------------------------------------------------------------------------------------------------
    def put(self, key: K, value: V) -> None:
        """Insert or replace `key` (a replaced value is closed), then evict others until the caps hold."""
        nbytes = self._size_of(value)
        with self._lock:
            old = self._slots.pop(key, None)
            self._slots[key] = _Slot(value, nbytes, self._clock())
            victims = self._over_caps_locked(keep=key)
        if old is not None and old.value is not value:
            victims.insert(0, (key, old.value))
        self._close_all(victims)

    def touch(self, key: K) -> None:
        """Re-read the size of `key`'s session (it grew or shrank) and enforce the caps, evicting others first."""
        with self._lock:
            slot = self._slots.get(key)
        if slot is None:
            return
        nbytes = self._size_of(slot.value)
        with self._lock:
            if self._slots.get(key) is slot:
                slot.nbytes, slot.last_used = nbytes, self._clock()
                self._slots.move_to_end(key)
            victims = self._over_caps_locked(keep=key)
        self._close_all(victims)

    def get_or_create(self, key: K, factory: Callable[[], V], *, wait_s: float = 30.0) -> tuple[V, bool]:
        """(session, created): the existing session, or the one `factory()` builds (outside the store lock).

        A second caller for a key being built waits up to `wait_s` for the first, then raises `StoreBusy`; if the
        first caller's factory fails, the waiter tries to build it itself.
        """
        deadline = self._clock() + wait_s
        while True:
            with self._lock:
                slot = self._slots.get(key)
                if slot is not None:
                    slot.last_used = self._clock()
                    self._slots.move_to_end(key)
                    return slot.value, False
                event = self._building.get(key)
                if event is None:
                    event = self._building[key] = threading.Event()
                    break
            remaining = deadline - self._clock()
            if remaining <= 0 or not event.wait(remaining):
                raise StoreBusy(f"session {key!r} is still being prepared by another request; retry in a moment")
        try:
            value = factory()
            self.put(key, value)
            return value, True
        finally:
            with self._lock:
                self._building.pop(key, None)
            event.set()

    def pop(self, key: K) -> V | None:
        """Remove `key` and hand its session to the caller (not closed)."""
        with self._lock:
            slot = self._slots.pop(key, None)
        return slot.value if slot else None

    def discard(self, key: K) -> None:
        """Remove `key` and close its session."""
        value = self.pop(key)
        if value is not None:
            self._close_all([(key, value)])

    def sweep(self) -> int:
        """Close sessions idle longer than `ttl_s`; returns how many."""
        with self._lock:
            victims = self._over_caps_locked(keep=None)
        self._close_all(victims)
        return len(victims)

    def close_all(self) -> None:
        with self._lock:
            victims = [(k, s.value) for k, s in self._slots.items()]
            self._slots.clear()
        self._close_all(victims)

    # ---- internals -----------------------------------------------------------------------------------------------
    def _over_caps_locked(self, keep: K | None) -> list[tuple[K, V]]:
        victims: list[tuple[K, V]] = []
        if self.ttl_s is not None:
            cutoff = self._clock() - self.ttl_s
            for k in [k for k, s in self._slots.items() if s.last_used < cutoff and k != keep]:
                victims.append((k, self._slots.pop(k).value))
        total = sum(s.nbytes for s in self._slots.values())
        order = list(self._slots)  # least recently used first; idle sessions before busy ones
        busy = {k for k in order if self._busy(k)}
        for k in [k for k in order if k not in busy] + [k for k in order if k in busy]:
            over_count = len(self._slots) > self.max_items
            over_bytes = self.max_bytes is not None and total > self.max_bytes
            if not (over_count or over_bytes):
                break
            if k == keep:
                continue
            slot = self._slots.pop(k)
            total -= slot.nbytes
            victims.append((k, slot.value))
        return victims

    def _close_all(self, victims: list[tuple[K, V]]) -> None:
        for k, v in victims:
            self.closed += 1
            try:
                self._close(k, v)
            except Exception:  # one bad close must not keep the others alive
                logger.exception("closing session %r failed", k)
