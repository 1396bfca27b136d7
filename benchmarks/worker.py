"""One backend in its own process: every phase of the benchmark, figures to JSON and masks to .npz.

    <python> -m benchmarks.worker JOB.json      (run by benchmarks/benchmark.py from the repository root)

The parent picks the interpreter: this venv for the engine and SAM 2.1's torch predictor, `.venv-edgetam`
for EdgeTAM's (its `sam2` is the edgetam-dimos fork). Nothing here imports torch or openvino at module level.

Each backend runs after a warm-up (a box, a mask prompt, 3 frames tracked): "RSS loaded" is after the model
is built/compiled, phase peaks are sampled with psutil every 10 ms, the process peak is the kernel's
high-water mark.
"""
from __future__ import annotations

import json
import logging
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.drivers import EngineDriver, TorchDriver  # noqa: E402
from tests.parity import load_mask  # noqa: E402

log = logging.getLogger("benchmark")
MB = 1 << 20


class RssSampler(threading.Thread):
    """Peak RSS since the last reset(), sampled with psutil."""

    def __init__(self, interval: float = 0.01):
        import psutil
        super().__init__(daemon=True)
        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self.start()

    def now(self) -> int:
        return self.proc.memory_info().rss

    def reset(self) -> int:
        self.peak = self.now()
        return self.peak

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)


def frame_stats(times: list, first: int, num_maskmem: int) -> dict:
    """Steady state = frames at least num_maskmem after the prompted frame (all memory slots full), and the
    average of the first 8 frames (what a short clip shows)."""
    steady = [x for x in times if abs(x[0] - first) >= num_maskmem]
    head = times[:8]
    out = {"first8_s_per_frame": float(np.mean([x[1] for x in head])),
           "first8_cpu_s_per_frame": float(np.mean([x[2] for x in head]))}
    if steady:
        out.update(steady_frames=len(steady), steady_s_per_frame=float(np.mean([x[1] for x in steady])),
                   steady_cpu_s_per_frame=float(np.mean([x[2] for x in steady])))
    return out


def percentiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    return {"n": len(xs), "p50_s": float(np.percentile(xs, 50)), "p95_s": float(np.percentile(xs, 95)),
            "max_s": float(max(xs))}


def matmul_peak(precision: str, threads: int) -> dict:
    """GFLOP/s of a 2048^3 MatMul at this precision hint: the compute-bound reference of this run."""
    import openvino as ov
    import openvino.opset13 as ops
    a = ops.parameter([2048, 2048], np.float32)
    b = ops.parameter([2048, 2048], np.float32)
    cfg = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    req = ov.Core().compile_model(ov.Model([ops.matmul(a, b, False, False)], [a, b]), "CPU", cfg).create_infer_request()
    x = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    req.infer([x, x])
    best_w = best_c = float("inf")
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        req.infer([x, x])
        best_w, best_c = min(best_w, time.perf_counter() - t), min(best_c, time.process_time() - c)
    flop = 2 * 2048 ** 3
    return {"gflops_wall": flop / best_w / 1e9, "gflop_per_cpu_s": flop / best_c / 1e9}


def graph_figures(d, model_dir: Path, peak: dict) -> dict:
    """Per graph: calls, seconds, GFLOP (MatMul/conv work at the shapes it ran) and GFLOP/s vs the MatMul peak."""
    from benchmarks.flops import GraphFlops
    counters = getattr(d, "_flops", None) or {}
    d._flops = counters
    out: dict = {}
    for (graph, shapes), (calls, secs, cpu) in d.graph_calls.items():
        fl = counters.setdefault(graph, GraphFlops(model_dir / f"{graph}.xml")).count(dict(shapes)) * calls
        g = out.setdefault(graph, {"calls": 0, "s": 0.0, "cpu_s": 0.0, "gflop": 0.0})
        g["calls"] += calls
        g["s"] += secs
        g["cpu_s"] += cpu
        g["gflop"] += fl / 1e9
    for g in out.values():
        g["gflops"] = g["gflop"] / g["s"] if g["s"] else 0.0
        g["gflop_per_cpu_s"] = g["gflop"] / g["cpu_s"] if g["cpu_s"] else 0.0
        g["of_matmul_peak"] = g["gflops"] / peak["gflops_wall"]
        g["of_matmul_peak_cpu"] = g["gflop_per_cpu_s"] / peak["gflop_per_cpu_s"]
    d.graph_calls.clear()
    return out


def run_backend(cfg: dict) -> None:
    """Worker: run every phase on one backend; write figures (JSON) and masks (npz) for the parent."""
    sampler = RssSampler()
    rss0 = sampler.now()
    t0 = time.perf_counter()
    frames_dir, backend = Path(cfg["frames_dir"]), cfg["backend"]
    if backend == "torch":
        d = TorchDriver(Path(cfg["model_dirs"]["f32"]), frames_dir, cfg["threads"])
        model_dir = None
    else:
        prec = backend.split("_")[1]
        model_dir = Path(cfg["model_dirs"][prec])
        d = EngineDriver(model_dir, frames_dir, cfg["threads"], prec)
    load_s = time.perf_counter() - t0
    rss_loaded = sampler.now()
    masks, k, correction = {}, cfg["correction_frame"], load_mask(cfg["correction_mask"])
    t0 = time.perf_counter()  # warm-up: every graph's first call (allocations) stays out of the timed phases
    d.start()
    d.box(1, cfg["boxes"][0])
    d.propagate(None, max_frames=1)
    d.mask(1, 1, correction)
    d.propagate(1, max_frames=1)
    d.close()
    out = {"backend": backend, "precision": d.precision, "attention_batch": getattr(d, "attention_batch", None), "load_s": load_s, "warmup_s": time.perf_counter() - t0,
           "rss_start_mb": rss0 / MB, "rss_loaded_mb": rss_loaded / MB, "phases": {}, "clicks": {},
           "versions": interpreter_versions()}
    peak = None
    if model_dir is not None:
        peak = out["matmul_peak"] = matmul_peak(d.precision["openvino"], cfg["threads"])
        d.graph_calls.clear()
    for nobj in cfg["objects"]:
        for phase in ("first", "repropagate"):
            name = f"{nobj}obj/{phase}"
            rss_before, enc0 = sampler.reset(), d.encoder_calls
            t0 = time.perf_counter()
            if phase == "first":
                d.start()
                for i, b in enumerate(cfg["boxes"][:nobj]):
                    d.box(i + 1, b)
            else:
                d.mask(k, 1, correction)
            if peak:
                d.graph_calls.clear()
            t1, c1 = time.perf_counter(), time.process_time()
            # a correction of object 1: the engine re-tracks object 1 only, sam2 every object
            res = d.propagate(None, objects=None) if phase == "first" else d.propagate(k, objects=[1])
            t2, cpu = time.perf_counter(), time.process_time() - c1
            ph = out["phases"][name] = {
                "frames": len(res), "prompt_s": t1 - t0, "propagate_s": t2 - t1,
                "s_per_frame": (t2 - t1) / len(res), "fps": len(res) / (t2 - t1), "cpu_s_per_frame": cpu / len(res),
                "encoder_calls": d.encoder_calls - enc0, "first_frame": min(res),
                "rss_before_mb": rss_before / MB, "rss_peak_mb": sampler.peak / MB,
                "rss_growth_mb": (sampler.peak - rss_before) / MB,
                "per_frame": [[f, round(w, 4), round(c, 4)] for f, w, c in d.frame_times]}
            if phase == "first":
                ph.update(frame_stats(d.frame_times, 0, cfg["num_maskmem"]))
            if peak:
                ph["graphs"] = graph_figures(d, model_dir, peak)
            masks[name] = np.packbits(np.stack([res[f] for f in sorted(res)]), axis=-1)
            log.info("%s %s: %s", backend, name, {k: v for k, v in ph.items() if k != "per_frame"})
        out["clicks"][f"{nobj}obj"] = clicks(d, cfg, nobj)
        d.close()
    out["rss_process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez_compressed(cfg["masks_out"], **{n.replace("/", "__"): m for n, m in masks.items()})
    Path(cfg["json_out"]).write_text(json.dumps(out))


def clicks(d, cfg: dict, nobj: int) -> dict:
    """Click latency on tracked frames (after the re-propagation): a positive point added to object 1
    (a correction: the first click on a frame after a click on another frame, whose new conditioning memory every
    other frame attends to, so memory attention runs again), then a second point on the same frame (a refinement:
    nothing it depends on changed) and, engine only, a box for a new object (removed again, untimed). Frames: every other
    tracked frame except the correction frame, at most cfg["clicks"] of them."""
    n, k = cfg["num_frames"], cfg["correction_frame"]
    frames = [f for f in range(1, n, 2) if f != k][: cfg["clicks"]]
    x0, y0, x1, y1 = cfg["boxes"][0]
    point = [(x0 + x1) / 2, (y0 + y1) / 2]
    point2 = [x0 + 0.6 * (x1 - x0), y0 + 0.6 * (y1 - y0)]
    corr, refine, new = [], [], []
    for f in frames:
        t = time.perf_counter()
        d.correction_click(f, 1, point)
        corr.append(time.perf_counter() - t)
        # a second point on the same frame: what it depends on (the other frames' memories) did not change, so
        # the engine answers from its conditioned-features cache (decoder only)
        t = time.perf_counter()
        d.correction_click(f, 1, point2)
        refine.append(time.perf_counter() - t)
        if d.new_object_click is not None:
            t = time.perf_counter()
            d.new_object_click(f, 100 + nobj, cfg["boxes"][-1])
            new.append(time.perf_counter() - t)
            d.forget(100 + nobj)
    return {"frames": frames, "correction": percentiles(corr), "refine": percentiles(refine),
            "new_object": percentiles(new),
            "note": "torch: sam2 refuses new objects once tracking has started" if d.new_object_click is None else ""}


def interpreter_versions() -> dict:
    """Versions of the stack this worker ran on (the torch side may be another venv than the parent's)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version(), "executable": sys.executable}
    for dist in ("torch", "sam2", "edgetam-dimos", "openvino"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("backend.engine").setLevel(logging.INFO if "-v" in argv else logging.ERROR)
    run_backend(json.loads(Path(argv[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
