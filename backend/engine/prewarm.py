"""Encode the frames an annotator is likely to click next, in the background, without delaying clicks or propagation.

One daemon thread, one frame at a time, only while no propagation runs (`Activity`) and no click or other
foreground inference has run for `QUIET_S`. Each encoding runs at background priority on its own infer request
(`Runtime.run_background`): a click or a propagation that starts while a frame is being encoded cancels that
encoding (OpenVINO stops it at its next node) instead of waiting for it, and the frame is tried again later. The
newest request for a video replaces its older one; frames already in the feature cache are skipped. Nothing here
holds a session lock or a foreground infer request.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterable

from .frames import FrameSource

log = logging.getLogger(__name__)

QUIET_S = 0.25  # foreground idle this long before a background encoding starts (a click's runs come in bursts)
MAX_RETRIES = 20  # a frame preempted this often is dropped (a busy annotator: the next request brings it back)


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
        self.preempted = 0
        self._working = False  # a frame is taken from the queue and being encoded

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

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being encoded."""
        with self._cond:
            return not self._queue and not self._working

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
            self._working = True
            return source, frame

    def _done(self) -> None:
        with self._cond:
            self._working = False

    def _retry(self, source: FrameSource, frame: int) -> None:
        """Put a preempted frame back at the front of its video's queue (unless a newer request replaced it)."""
        with self._cond:
            if self._stopped:
                return
            if source.key in self._queue:
                frames = self._queue[source.key][1]
                if frame not in frames:
                    frames.insert(0, frame)
            else:
                self._queue[source.key] = (source, [frame])
                self._queue.move_to_end(source.key, last=False)

    def _wait_turn(self) -> bool:
        """Until no propagation runs and foreground inference has been quiet for QUIET_S; False once stopped."""
        rt = self.tracker.rt
        while not self._stopped:
            if self.activity.wait_idle(0.5) and rt.wait_quiet(QUIET_S, 0.5) and not self.activity.busy:
                return True
        return False

    def _run(self) -> None:
        tries: dict[tuple[str, int], int] = {}
        while True:
            item = self._next()
            if item is None:
                return
            source, frame = item
            if len(tries) > 4096:  # frames of sources that went away: bounded
                tries.clear()
            try:
                if not self._wait_turn():
                    return
                if self.tracker.cache.get((source.key, frame)) is not None:
                    continue
                feats = self.tracker.features(source, frame, background=True)
                if feats is not None:
                    self.encoded += 1
                    tries.pop((source.key, frame), None)
                    continue
                self.preempted += 1  # a click or a propagation took the CPU: try this frame again when it is quiet
                n = tries[(source.key, frame)] = tries.get((source.key, frame), 0) + 1
                if n < MAX_RETRIES:
                    self._retry(source, frame)
                else:
                    tries.pop((source.key, frame), None)
            except Exception as e:  # a closed or broken source: prewarming is best effort
                log.debug("prewarm of frame %d skipped: %s", frame, e)
            finally:
                self._done()
