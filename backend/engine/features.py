"""Image-encoder outputs per frame, in an LRU cache capped in bytes and shared by all sessions."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lru import ByteLRU


@dataclass(frozen=True)
class FrameFeatures:
    """One frame's image features (float32): hr0 [1,32,S/4,S/4], hr1 [1,64,S/8,S/8], feat [1,256,S/16,S/16]."""

    hr0: np.ndarray
    hr1: np.ndarray
    feat: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.hr0.nbytes + self.hr1.nbytes + self.feat.nbytes


class FeatureCache(ByteLRU[FrameFeatures]):
    """Least-recently-used cache of `FrameFeatures` keyed by (source key, frame index).

    `max_bytes` bounds the stored arrays; 0 disables caching. Thread-safe.
    """

    def drop_source(self, source_key: str) -> None:
        """Forget every frame of one source (e.g. when its session closes and the file goes away)."""
        self.drop_group(source_key)
