"""Does prewarm delay clicks or propagation? Engine alone, one process, one run (issue 10, item 2).

    python benchmarks/prewarm_priority.py                    # 512 px, bf16 export, box.mp4, 8 clicks per case
    python benchmarks/prewarm_priority.py --image-size 1024 --clicks 12 --json out.json

Clicks: a positive point for a new object on an unseen frame (its image encoder runs in the click), alternately
(a) with prewarm idle and (b) while a prewarm encoding of another frame is in flight (the click is sent the moment
the runtime reports the background encoding started; on average it lands half-way through it). Wall and
process-CPU seconds per click (CPU counts every thread of the process, so (b) also pays what the cancelled encoding
had computed before it stopped), and how many background encodings the clicks preempted.

Propagation: one object (a box on frame f0) tracked forward over K unseen frames on a fresh session, alternately
(A) with no prewarm and (B) with prewarm holding 16 other frames and encoding one of them when propagation starts.
Wall and process-CPU seconds per frame; B/A is the slowdown prewarm costs a running propagation.

Random-init weights (tests/models.py export); the machine may be shared: compare CPU seconds and same-run ratios.
One JSON per run (benchmarks/results/ unless --json).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.engine import EngineSettings, VideoPredictor, open_source  # noqa: E402
from tests import appkit, models  # noqa: E402

log = logging.getLogger("prewarm_priority")


def cpu_info() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), platform.processor())
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in out,
            "load_avg": list(os.getloadavg())}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary(wall: list[float], cpu: list[float]) -> dict:
    return {"n": len(wall), "wall_p50_ms": 1e3 * pct(wall, 50), "wall_p95_ms": 1e3 * pct(wall, 95),
            "wall_mean_ms": 1e3 * float(np.mean(wall)) if wall else float("nan"),
            "cpu_p50_ms": 1e3 * pct(cpu, 50), "cpu_p95_ms": 1e3 * pct(cpu, 95),
            "cpu_mean_ms": 1e3 * float(np.mean(cpu)) if cpu else float("nan")}


class BgWatch:
    """Set when the runtime starts a background encoding (Runtime.on_event)."""

    def __init__(self):
        self.started = threading.Event()

    def __call__(self, what: str, graph: str) -> None:
        if what == "bg_start":
            self.started.set()


def wait_quiet(engine: VideoPredictor, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not engine.prewarmer.idle and time.monotonic() < end:
        time.sleep(0.02)
    engine.runtime.wait_quiet(0.5, max(0.0, end - time.monotonic()))


def clicks(engine: VideoPredictor, source, pool: list[int], warm_pool: list[int], n: int, watch: BgWatch) -> dict:
    out = {"idle": ([], []), "prewarm_encoding": ([], [])}
    preempted0 = engine.runtime.preempted
    missed = 0
    ses = engine.start_session(source)
    for i in range(n):
        for case in ("idle", "prewarm_encoding"):
            frame = pool.pop(0)
            wait_quiet(engine)
            if case == "prewarm_encoding":
                watch.started.clear()
                engine.prewarm(ses, [warm_pool.pop(0), warm_pool.pop(0)])
                if not watch.started.wait(60):
                    raise RuntimeError("prewarm never started an encoding")
            t0, c0 = time.perf_counter(), time.process_time()
            engine.add_points(ses, frame, ("click", case, i), points=[[ses.width * 0.5, ses.height * 0.45]], labels=[1])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out[case][0].append(wall)
            out[case][1].append(cpu)
            engine.remove_object(ses, ("click", case, i))
        if engine.runtime.preempted - preempted0 < i + 1:
            missed += 1  # this click's prewarm encoding had already ended when the click came in
    engine.close_session(ses)
    res = {case: summary(*v) for case, v in out.items()}
    res["preempted_encodings"] = engine.runtime.preempted - preempted0
    res["clicks_that_found_the_encoding_finished"] = missed
    res["ratio_p50_wall"] = res["prewarm_encoding"]["wall_p50_ms"] / res["idle"]["wall_p50_ms"]
    res["ratio_p50_cpu"] = res["prewarm_encoding"]["cpu_p50_ms"] / res["idle"]["cpu_p50_ms"]
    return res


def propagation(engine: VideoPredictor, source, f0: int, k: int, warm: list[int], reps: int, watch: BgWatch) -> dict:
    runs = {"A_no_prewarm": [], "B_prewarm": []}
    w, h = source.width, source.height
    for rep in range(reps):
        for case in ("A_no_prewarm", "B_prewarm"):
            engine.features.drop_source(source.key)  # every run encodes its frames itself
            wait_quiet(engine)
            ses = engine.start_session(source)
            engine.add_points(ses, f0, "obj", box=(0.3 * w, 0.3 * h, 0.7 * w, 0.75 * h))
            if case == "B_prewarm":
                watch.started.clear()
                engine.prewarm(ses, warm)
                if not watch.started.wait(60):
                    raise RuntimeError("prewarm never started an encoding")
            t0, c0 = time.perf_counter(), time.process_time()
            n = sum(1 for _ in engine.propagate(ses, start=f0, max_frames=k))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            runs[case].append({"frames": n, "wall_s_per_frame": wall / n, "cpu_s_per_frame": cpu / n,
                               "prewarm_encoded_so_far": engine.prewarmer.encoded})
            engine.prewarmer.forget(source.key)
            engine.close_session(ses)
    out = {}
    for case, rs in runs.items():
        out[case] = {"runs": rs, "wall_s_per_frame": float(np.mean([r["wall_s_per_frame"] for r in rs])),
                     "cpu_s_per_frame": float(np.mean([r["cpu_s_per_frame"] for r in rs]))}
    out["slowdown_wall"] = out["B_prewarm"]["wall_s_per_frame"] / out["A_no_prewarm"]["wall_s_per_frame"]
    out["slowdown_cpu"] = out["B_prewarm"]["cpu_s_per_frame"] / out["A_no_prewarm"]["cpu_s_per_frame"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="/work/shared/clips/box.mp4")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--precision", default="bf16", choices=("bf16", "f32"), help="which export (and inference hint)")
    p.add_argument("--clicks", type=int, default=8, help="clicks per case")
    p.add_argument("--prop-frames", type=int, default=8, help="frames per propagation run")
    p.add_argument("--reps", type=int, default=2, help="propagation runs per case (interleaved A B A B)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    n_click_frames = 2 * args.clicks
    f0 = n_click_frames + 4 * args.clicks + 1  # propagation frames after every click and prewarm frame
    total = f0 + args.prop_frames + 1
    model_dir = models.export_dir(args.image_size, args.precision)
    info = {"cpu_before": cpu_info(), "image_size": args.image_size, "precision": args.precision,
            "model_dir": str(model_dir), "clip": args.clip, "weights": "random init, seed 0"}
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames"
        appkit.extract_frames(Path(args.clip), frames, total)
        engine = VideoPredictor(EngineSettings(model_dir=model_dir, precision="auto" if args.precision == "bf16" else "f32"))
        info["ran_precision"] = str(engine.runtime.compiled_property("image_encoder", "INFERENCE_PRECISION_HINT"))
        watch = BgWatch()
        engine.runtime.on_event = watch
        source = open_source(frames)
        ses = engine.start_session(source)  # warm-up: first inference of each graph allocates
        engine.add_points(ses, total - 1, "warm", box=(10, 10, source.width - 10, source.height - 10))
        engine.close_session(ses)
        engine.features.drop_source(source.key)
        click_pool = list(range(n_click_frames))
        warm_pool = list(range(n_click_frames, f0))
        res_clicks = clicks(engine, source, click_pool, warm_pool, args.clicks, watch)
        res_prop = propagation(engine, source, f0, args.prop_frames, list(range(16)), args.reps, watch)
        engine.prewarmer.close()
    info["cpu_after"] = cpu_info()
    out = {**info, "clicks_unseen_frame": res_clicks, "propagation": res_prop}
    path = args.json or ROOT / "benchmarks" / "results" / \
        f"prewarm-{args.image_size}-{args.precision}-{time.strftime('%Y%m%dT%H%MZ', time.gmtime())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    c, pr = res_clicks, res_prop
    print(f"CPU {info['cpu_before']['model']} (avx512_bf16={info['cpu_before']['avx512_bf16']}), load avg "
          f"{info['cpu_before']['load_avg'][0]:.1f} -> {info['cpu_after']['load_avg'][0]:.1f}; {args.image_size} px, "
          f"runs {info['ran_precision']}")
    print(f"{'click on an unseen frame':<34}{'wall p50':>10}{'wall p95':>10}{'CPU p50':>10}{'CPU p95':>10}  (ms)")
    for case in ("idle", "prewarm_encoding"):
        s = c[case]
        print(f"{case:<34}{s['wall_p50_ms']:>10.0f}{s['wall_p95_ms']:>10.0f}{s['cpu_p50_ms']:>10.0f}{s['cpu_p95_ms']:>10.0f}")
    print(f"  prewarm/idle p50: wall {c['ratio_p50_wall']:.2f}x, CPU {c['ratio_p50_cpu']:.2f}x; encodings preempted "
          f"{c['preempted_encodings']}, clicks that found the encoding already over {c['clicks_that_found_the_encoding_finished']}")
    print(f"{'propagation, s/frame':<34}{'wall':>10}{'CPU':>10}")
    for case in ("A_no_prewarm", "B_prewarm"):
        print(f"{case:<34}{pr[case]['wall_s_per_frame']:>10.3f}{pr[case]['cpu_s_per_frame']:>10.3f}")
    print(f"  slowdown from prewarm: wall {pr['slowdown_wall']:.3f}x, CPU {pr['slowdown_cpu']:.3f}x")
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
