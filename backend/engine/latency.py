"""Click latency of the engine alone (what the benchmark reports as "engine, embedded frame").

`click_latency` times `VideoPredictor.add_points` on a frame whose image features are cached:
- kind="new_object": a positive click for a new object on that frame (then the object is removed again);
- kind="tracked_frame": a click for an existing object on a frame propagation already reached, answered from
  the memory-conditioned feature cache (no memory attention).
Returns wall seconds (p50, p95, mean, max), process CPU seconds per click (p50, p95: every OpenVINO thread
counted; on a machine other processes load, CPU-seconds are the figure to compare), and how many
memory-attention runs the clicks caused.
"""
from __future__ import annotations

import time

import numpy as np


def click_latency(engine, session, frame: int, *, kind: str = "new_object", obj_id=None, repeats: int = 20,
                  seed: int = 0) -> dict:
    if kind not in ("new_object", "tracked_frame"):
        raise ValueError(f"kind must be 'new_object' or 'tracked_frame', got {kind!r}")
    if kind == "tracked_frame" and obj_id is None:
        raise ValueError("kind='tracked_frame' needs obj_id, an object already tracked on `frame`")
    rng = np.random.default_rng(seed)
    engine.tracker.features(session.source, frame)  # the frame is embedded: features are cached
    times, cpu = [], []
    attn = sum(session.attention_calls.values())
    for i in range(repeats):
        x, y = rng.uniform(0.2, 0.8) * session.width, rng.uniform(0.2, 0.8) * session.height
        oid = ("__latency__", i) if kind == "new_object" else obj_id
        t0, c0 = time.perf_counter(), time.process_time()
        engine.add_points(session, frame, oid, points=[[x, y]], labels=[1])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if kind == "new_object":
            engine.remove_object(session, oid)
    t = np.asarray(times)
    return {"kind": kind, "frame": frame, "repeats": repeats, "p50_s": float(np.percentile(t, 50)),
            "p95_s": float(np.percentile(t, 95)), "mean_s": float(t.mean()), "max_s": float(t.max()),
            "cpu_p50_s": float(np.percentile(cpu, 50)), "cpu_p95_s": float(np.percentile(cpu, 95)),
            "attention_runs": sum(session.attention_calls.values()) - attn,
            "objects": len(session.objects), "video": [session.width, session.height]}
