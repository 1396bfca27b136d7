"""A tracking session on one video, and what the engine returns for a frame."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .frames import FrameSource
from .numerics import resize_bilinear
from .state import ObjectId, ObjectRegistry, ObjectTrack
from .store import HeavyStateStore


class SessionBusy(RuntimeError):
    """Another call (usually a propagation) is using this session; cancel it or retry."""


class PromptError(ValueError):
    """A prompt is malformed or refers to a frame/object that does not exist; the message says how to fix it."""


class FrameResult:
    """All objects on one frame: logits [N, H, W] float32 at the video's resolution (> 0 is the mask).

    Built eagerly from `logits`, or lazily from each object's low-res logits [N, h, w] (`low_res`, `size` = (H, W)):
    an object's row is resized when first asked for (`row`, `masks`; `logits` resizes them all), bit-identical to
    resizing them together. `sources[i]`: what object i's row is computed from (its output's `FrameOutput.serial`;
    None when it has no output on this frame), so a consumer that kept the row of the same source can skip it (the
    other objects on a clicked frame, objects a re-propagation leaves alone); None for eager results.
    """

    def __init__(self, frame: int, object_ids: list[ObjectId], logits: np.ndarray | None = None, *,
                 low_res: np.ndarray | None = None, size: tuple[int, int] | None = None,
                 sources: list[int | None] | None = None):
        if (logits is None) == (low_res is None) or (low_res is not None and size is None):
            raise ValueError("FrameResult takes logits, or low_res with size")
        self.frame = frame
        self.object_ids = list(object_ids)
        self.sources = sources
        self._logits = logits
        self._low_res, self._size = low_res, size
        self._rows: dict[int, np.ndarray] = {}

    def row(self, i: int) -> np.ndarray:
        """Logits [H, W] of the i-th object."""
        if self._logits is not None:
            return self._logits[i]
        if i not in self._rows:
            self._rows[i] = resize_bilinear(self._low_res[i], *self._size)
        return self._rows[i]

    @property
    def logits(self) -> np.ndarray:
        if self._logits is None:
            rows = [self.row(i) for i in range(len(self.object_ids))]
            self._logits = np.stack(rows) if rows else np.zeros((0, *self._size), np.float32)
            self._rows.clear()
        return self._logits

    def masks(self) -> dict[ObjectId, np.ndarray]:
        """{object id: bool mask [H, W]}."""
        return {oid: self.row(i) > 0 for i, oid in enumerate(self.object_ids)}


@dataclass
class VideoSession:
    """Per-video state: the frame source, the objects and their memories, and a lock for exclusive use."""

    source: FrameSource
    store: HeavyStateStore
    objects: ObjectRegistry = field(default_factory=ObjectRegistry)
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    last_used: float = field(default_factory=time.monotonic)
    # memory-attention runs per object id (cache hits and untouched objects do not count): what tests and
    # metrics use to check that only the objects that changed were re-tracked
    attention_calls: Counter = field(default_factory=Counter)

    @property
    def num_frames(self) -> int:
        return self.source.num_frames

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def width(self) -> int:
        return self.source.width

    def check_frame(self, frame: int) -> int:
        if not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.num_frames:
            raise PromptError(f"frame {frame} is out of range: the video has {self.num_frames} frames (0-{self.num_frames - 1})")
        return int(frame)

    def forget_object(self, obj_id: ObjectId) -> None:
        """Drop an object with its memories (the caller holds the session)."""
        track = self.objects.remove(obj_id)
        self.store.forget(track.uid)
        self.attention_calls.pop(obj_id, None)

    def prompt_target(self, obj_id: ObjectId) -> tuple[ObjectTrack, bool]:
        """(the track a new prompt for `obj_id` goes to, whether the object starts over). An object whose prompts
        were all cleared starts over like a new one: its tracked outputs came from prompts that no longer exist,
        and a prompt on a frame it was tracked on would otherwise need memories of a conditioning frame it has not
        got. The registry is left as it is; `register_prompted` commits once the prompt's answer is computed."""
        track = self.objects.peek(obj_id)
        if track is None or not track.prompted_frames():
            return ObjectTrack(obj_id), track is not None
        return track, False

    def register_prompted(self, obj_id: ObjectId, restart: bool) -> ObjectTrack:
        if restart:
            self.forget_object(obj_id)
        return self.objects.get_or_create(obj_id)

    def acquire(self, timeout: float) -> None:
        if not self.lock.acquire(timeout=timeout):
            raise SessionBusy(f"session {self.session_id} is busy (a propagation is running); cancel it first")
        self.last_used = time.monotonic()

    def release(self) -> None:
        self.last_used = time.monotonic()
        self.lock.release()

    def close(self) -> None:
        self.store.close()
        close = getattr(self.source, "close", None)
        if close:
            close()
