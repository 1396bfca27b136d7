"""Memory probe run in a fresh process by test_engine_memory: propagate two objects over a looped clip and
print, as JSON, how RSS and the engine's own byte counts grow per frame.

    python -m tests.memprobe MODEL_DIR FRAMES_DIR TOTAL WARMUP SPILL_DIR [--leak]

--leak keeps a reference to every evicted frame's arrays (a deliberate leak the test must catch).
"""
from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import psutil

CACHE = 4 << 20  # feature and conditioned-feature caches: full after a frame or two, so they do not look like growth


class LoopedSource:
    """A short clip played over and over: frame i shows frame i % n of the clip."""

    def __init__(self, inner, total: int):
        self.inner, self.num_frames = inner, total
        self.width, self.height = inner.width, inner.height
        self.key = inner.key + ":loop"

    def read(self, index: int):
        return self.inner.read(index % self.inner.num_frames)


def main(argv: list[str]) -> dict:
    from backend.engine import EngineSettings, VideoPredictor, open_source
    from backend.engine.store import HeavyStateStore

    model, frames, total, warm, spill = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    leak = "--leak" in argv
    kept = []
    if leak:
        evict = HeavyStateStore._evict

        def leaky(self, uid, frame, out):
            kept.append((out.pred_logits, out.maskmem))
            evict(self, uid, frame, out)
        HeavyStateStore._evict = leaky
    resident = 16
    eng = VideoPredictor(EngineSettings(model_dir=model, precision="f32", feature_cache_bytes=CACHE,
                                        conditioned_cache_bytes=CACHE, max_resident_frames=resident,
                                        spill_dir=spill))
    ses = eng.start_session(LoopedSource(open_source(frames), total))
    w, h = ses.width, ses.height
    eng.add_points(ses, 0, "a", box=(0.3 * w, 0.3 * h, 0.6 * w, 0.7 * h))
    eng.add_points(ses, 0, "b", points=[[0.2 * w, 0.6 * h]], labels=[1])
    proc = psutil.Process()
    rss_warm = None
    done = 0
    for r in eng.propagate(ses):
        done += 1
        if r.frame == warm:
            gc.collect()
            rss_warm = proc.memory_info().rss
    gc.collect()
    rss_end = proc.memory_info().rss
    last = ses.objects.get("a").non_cond[total - 1]
    return {"frames": done, "measured_frames": total - 1 - warm, "objects": 2,
            "rss_warm": rss_warm, "rss_end": rss_end,
            "rss_growth_per_frame": (rss_end - rss_warm) / (total - 1 - warm),
            "object_frame_bytes": last.heavy_nbytes, "max_resident_frames": resident,
            "resident_frames": ses.store.resident_frames, "resident_bytes": ses.store.resident_bytes,
            "spilled_bytes": ses.store.spilled_bytes, "spill_files": len(list(Path(spill).rglob("*.npz"))),
            "feature_cache_bytes": eng.features.nbytes, "conditioned_cache_bytes": eng.conditioned.nbytes,
            "image_size": eng.bundle.image_size, "leak": leak}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
