"""A frame source that grows one frame per request, for trackers fed frame by frame (CVAT sends one image a call).

The engine reads a frame's pixels only to encode it, once, when that frame is prompted or tracked (features then
come from the feature cache); SAM 2's memory bank holds encoded memories, not pixels. So the stream keeps only the
newest `keep` frames: memory stays flat however long the annotator tracks.

Frame indices are positions in the stream (0 = the frame tracking started on), not CVAT frame numbers.
"""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict

import numpy as np

from backend.engine import FrameError

# CVAT never says how long the video is. SAM 2 uses the length only to cap object-pointer distances at
# min(length, max_obj_ptrs_in_encoder = 16); any nominal length >= 16 gives the results of an offline run on a
# video of 16 frames or more, and this one never runs out.
NOMINAL_LENGTH = 2**31 - 1


class StreamingFrameSource:
    """Frames appended in order; `read` serves the newest `keep` of them (RGB uint8 [H, W, 3])."""

    def __init__(self, width: int, height: int, *, keep: int = 2, nominal_length: int = NOMINAL_LENGTH):
        if keep < 1:
            raise ValueError("keep must be at least 1 frame")
        self.width, self.height = int(width), int(height)
        self.num_frames = nominal_length
        self.key = "stream:" + uuid.uuid4().hex  # frames are never replaced, so (key, index) names fixed pixels
        self._keep = keep
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()

    @property
    def received(self) -> int:
        """How many frames were appended so far (the next frame's index)."""
        return self._next

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(f.nbytes for f in self._frames.values())

    def append(self, rgb: np.ndarray) -> int:
        """Add the next frame; returns its index. Older frames beyond `keep` are released."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise FrameError(f"frame is {rgb.shape[1]}x{rgb.shape[0]} ({rgb.dtype}) but this stream is "
                             f"{self.width}x{self.height} RGB uint8")
        with self._lock:
            index = self._next
            self._frames[index] = rgb
            self._next += 1
            while len(self._frames) > self._keep:
                self._frames.popitem(last=False)
            return index

    def read(self, index: int) -> np.ndarray:
        with self._lock:
            frame = self._frames.get(index)
            if frame is not None:
                return frame
            if index >= self._next:
                raise FrameError(f"frame {index} has not been received yet (the stream has {self._next} frames)")
            raise FrameError(f"frame {index} is no longer held: a stream keeps only its newest {self._keep} frames")

    def close(self) -> None:
        with self._lock:
            self._frames.clear()
