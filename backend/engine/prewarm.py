"""Encode the frames an annotator is likely to click next, in the background, without slowing propagation.

One daemon thread, one frame at a time, and only while no propagation runs (`Activity`): a propagation that
starts while a frame is being encoded waits at most for that one encoding. The newest request for a video
replaces its older one; frames already in the feature cache are skipped. Nothing here holds a session lock.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterable

from .frames import FrameSource

log = logging.getLogger(__name__)


class Activity:
    """How many propagations are running; background work (prewarm) waits until there are none."""

    def __init__(self):
        self._cond = threading.Condition()
        self._busy = 0

    @contextmanager
    def propagating(self):
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no propagation computes a frame (False after `timeout` s)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    @property
    def busy(self) -> bool:
        return self._busy > 0


class Prewarmer:
    def __init__(self, tracker, activity, *, max_frames: int = 16):
        self.tracker = tracker
        self.activity = activity
        self.max_frames = max_frames
        self._queue: OrderedDict[str, tuple[FrameSource, list[int]]] = OrderedDict()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.encoded = 0

    def request(self, source: FrameSource, frames: Iterable[int]) -> None:
        """Encode these frames of `source` (in this order, at most `max_frames`) when the engine is idle."""
        todo = [f for f in dict.fromkeys(int(f) for f in frames) if 0 <= f < source.num_frames][: self.max_frames]
        with self._cond:
            if self._stopped:
                return
            self._queue.pop(source.key, None)
            if todo:
                self._queue[source.key] = (source, todo)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="prewarm", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def forget(self, source_key: str) -> None:
        with self._cond:
            self._queue.pop(source_key, None)

    def pending(self) -> int:
        with self._cond:
            return sum(len(f) for _, f in self._queue.values())

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()

    def _next(self) -> tuple[FrameSource, int] | None:
        with self._cond:
            while not self._stopped and not self._queue:
                self._cond.wait()
            if self._stopped:
                return None
            key, (source, frames) = next(iter(self._queue.items()))
            frame = frames.pop(0)
            if not frames:
                del self._queue[key]
            return source, frame

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            source, frame = item
            while not self.activity.wait_idle(0.5):  # yield to every running propagation
                if self._stopped:
                    return
            if self.tracker.cache.get((source.key, frame)) is not None:
                continue
            try:
                self.tracker.features(source, frame)
                self.encoded += 1
            except Exception as e:  # a closed or broken source: prewarming is best effort
                log.debug("prewarm of frame %d skipped: %s", frame, e)
