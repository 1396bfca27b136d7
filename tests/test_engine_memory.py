"""RAM stays flat on long videos: 2,000 frames of a looped clip at a small model size."""
from __future__ import annotations

import gc

import cv2
import psutil

from backend.engine import EngineSettings, VideoPredictor
from backend.engine.frames import ImageSequenceSource

TOTAL = 2000
WARMUP = 300


class LoopedSource:
    """A short clip played over and over: frame i shows frame i % n of the clip."""

    def __init__(self, inner: ImageSequenceSource, total: int):
        self.inner, self.num_frames = inner, total
        self.width, self.height = inner.width, inner.height
        self.key = inner.key + ":loop"

    def read(self, index: int):
        return self.inner.read(index % self.inner.num_frames)


def test_rss_stays_flat_over_2000_frames(model_128_f32, clips_dir, tmp_path):
    cap = cv2.VideoCapture(str(clips_dir / "carphone_pristine.mp4"))
    paths = []
    for i in range(60):
        ok, bgr = cap.read()
        assert ok
        paths.append(tmp_path / f"{i:05d}.jpg")
        cv2.imwrite(str(paths[-1]), bgr)
    source = LoopedSource(ImageSequenceSource(paths), TOTAL)
    eng = VideoPredictor(EngineSettings(model_dir=model_128_f32, feature_cache_bytes=16 << 20,
                                        max_resident_frames=16, spill_dir=tmp_path / "spill"))
    (tmp_path / "spill").mkdir()
    ses = eng.start_session(source)
    eng.add_points(ses, 0, "face", box=(40, 20, 130, 140))
    eng.add_points(ses, 0, "car", points=[[20, 120]], labels=[1])
    proc = psutil.Process()
    warm = end = None
    frames = 0
    for r in eng.propagate(ses):
        frames += 1
        if r.frame == WARMUP:
            gc.collect()
            warm = proc.memory_info().rss
    gc.collect()
    end = proc.memory_info().rss
    assert frames == TOTAL
    assert ses.store.resident_frames <= 2 * 16  # two objects, 16 resident frames each
    assert eng.features.nbytes <= 16 << 20
    growth = end / warm - 1
    assert growth <= 0.15, f"RSS grew {growth:.1%} from frame {WARMUP} ({warm / 2**20:.0f} MB) to {TOTAL} ({end / 2**20:.0f} MB)"
