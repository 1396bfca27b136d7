"""Per-key locks (one per task) with a bounded wait: a busy key answers 409 with Retry-After instead of hanging.

Locks exist only while someone holds or waits for them (reference counted), so the registry is bounded by the number
of concurrent requests, not by the number of task ids ever seen.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Hashable, Iterator

from backend.serving.errors import BackendError


class TaskBusy(BackendError):
    """Another request holds this task for longer than the configured wait: 409, retry after `retry_after` s."""

    status = 409

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class KeyedLocks:
    def __init__(self, *, wait_s: float, setting: str = "TASK_LOCK_WAIT_S"):
        self.wait_s, self.setting = wait_s, setting
        self._lock = threading.Lock()
        self._locks: dict[Hashable, list] = {}  # key -> [lock, users]

    def __len__(self) -> int:
        with self._lock:
            return len(self._locks)

    def busy(self, key: Hashable) -> bool:
        """Whether a request holds or waits for `key` right now."""
        with self._lock:
            return key in self._locks

    @contextlib.contextmanager
    def hold(self, key: Hashable, wait_s: float | None = None) -> Iterator[None]:
        """Hold `key`'s lock; TaskBusy (409) when another holder keeps it longer than `wait_s` seconds."""
        wait_s = self.wait_s if wait_s is None else wait_s
        with self._lock:
            slot = self._locks.setdefault(key, [threading.Lock(), 0])
            slot[1] += 1
        try:
            if not slot[0].acquire(timeout=max(0.0, wait_s)):
                raise TaskBusy(f"task {key} is busy with another request (waited {wait_s:g} s, {self.setting}); "
                               "retry in a moment", retry_after=max(1.0, wait_s / 2))
            try:
                yield
            finally:
                slot[0].release()
        finally:
            with self._lock:
                slot[1] -= 1
                if slot[1] == 0:
                    del self._locks[key]
