"""Memory-conditioned features of recent (object, frame)s, so a click on a tracked frame skips memory attention.

Memory attention is a pure function of the frame's image features and the object's memory inputs. The key
records everything those inputs depend on: the session, object, frame, direction, and for each memory frame
and object pointer its temporal slot and the serial of the output it comes from (`FrameOutput.serial`, new for
every computed output). A new prompt or re-tracked frame changes a serial, so a stale entry can never match.
Capped in bytes (LRU); 0 disables it. Thread-safe.
"""
from __future__ import annotations

from typing import Hashable

import numpy as np

from .lru import ByteLRU

Key = tuple[Hashable, ...]


class ConditionedCache(ByteLRU[np.ndarray]):
    def put(self, key: Key, value: np.ndarray) -> None:
        """value: one object's conditioned features [1, C, h, w] (copied, so no larger buffer stays alive)."""
        if value.nbytes > self.max_bytes:
            return
        value = np.array(value, dtype=np.float32, copy=True)
        value.flags.writeable = False
        self._store(key, value)

    def drop_session(self, session_id: str) -> None:
        self.drop_group(session_id)
