"""Speed, memory and agreement of the OpenVINO engine against the official sam2 predictor, on one clip.

    python benchmarks/benchmark.py                       # box.mp4, 24 frames, 1024 px (slow: torch ~6 s/frame)
    python benchmarks/benchmark.py --frames 8 --image-size 512 --json out.json
    python benchmarks/benchmark.py --objects 1,3 --backends torch,engine_bf16 --clicks 8

Both sides use the same random-init weights (`python -m model_export --random-init`, cached by
tests/models.py) and read the same JPEGs (the clip's first N frames). Backends: `torch` (sam2's
SAM2VideoPredictor, f32), `engine_bf16` (the shipped bf16 export: fp16-stored weights, bf16 inference
hint; CPUs without bf16 run it in f32: the table shows what OpenVINO reports) and `engine_f32` (the
exact export). Hole filling is off on both sides (sam2 skips it without its CUDA extension).

Each backend runs in its own subprocess, after a warm-up (a box, a mask prompt, 3 frames tracked):
"RSS loaded" is after the model is built/compiled, phase peaks are sampled with psutil every 10 ms,
the process peak is the kernel's high-water mark. For 1 and for 3 objects, on a fresh session (the
engine also gets an empty feature cache): "first" = boxes on frame 0 then propagation over all frames;
"repropagate" = then a mask prompt (the clip's mask) for object 1 on the middle frame k and propagation
from k (the engine re-tracks object 1 only, as the product does; sam2 re-tracks every object). s/frame = propagation time / frames yielded; prompt time (sam2's init_state, which decodes all
frames and encodes frame 0, or start_session, plus the prompts) is apart. Encoder calls: image-encoder
runs in a phase's prompts and propagation.

Steady state: frames at least num_maskmem (7) after the prompted frame, where every memory slot is full (the
frames that dominate a long clip); the average of the first 8 frames is reported too, and "N/1 obj" is N objects'
steady s/frame over one object's, same backend and run. Per graph (engine): calls, wall and process-CPU seconds,
and MatMul/conv GFLOP at the shapes it ran (benchmarks/flops.py) against a 2048^3 MatMul measured in the same
worker at the same precision. Clicks (after the re-propagation, on tracked frames): a positive point added to
object 1 (a correction) and a box for a new object (engine only: sam2 refuses new ids once tracking started),
p50/p95 over --clicks frames. One JSON per run (benchmarks/results/ unless --json). On a shared machine trust
CPU seconds and same-run ratios; wall times move with other load (load1 is printed per backend).

Boxes: object 1 gets the box of the largest connected component of the clip's mask on frame 0 (the
frame's centre half if empty); objects 2 and 3 the boxes of further components covering >= 1% of the
frame, then fixed corner boxes (30% x 35% of the frame, 5% margin) overlapping object 1's box least (up to 5).
IoU is per frame and object, engine vs torch masks (both empty counts as 1 and is reported).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
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

from tests import models  # noqa: E402  (the cached random-init exports and the torch oracle)
from tests.parity import load_mask  # noqa: E402

log = logging.getLogger("benchmark")
BACKENDS = ("torch", "engine_bf16", "engine_f32")
CORNERS = ((0.05, 0.05, 0.35, 0.40), (0.65, 0.05, 0.95, 0.40), (0.05, 0.60, 0.35, 0.95), (0.65, 0.60, 0.95, 0.95))
MB = 1 << 20


# ---- inputs ------------------------------------------------------------------------------------
def write_frames(clip: Path, n: int, out: Path) -> tuple[int, int, int]:
    """The clip's first n frames as JPEGs (what both predictors read); returns (frames, width, height)."""
    import cv2
    cap = cv2.VideoCapture(str(clip))
    count, shape = 0, (0, 0)
    while count < n:
        ok, bgr = cap.read()
        if not ok:
            break
        shape = bgr.shape[:2]
        cv2.imwrite(str(out / f"{count:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        count += 1
    cap.release()
    if count < 2:
        raise SystemExit(f"{clip}: fewer than 2 decodable frames")
    return count, shape[1], shape[0]


def _iou_box(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def object_boxes(mask: np.ndarray | None, w: int, h: int, n: int = 3) -> tuple[list[list[float]], list[str]]:
    """n (<= 5) xyxy boxes in video pixels and where each came from (see the module doc)."""
    import cv2
    boxes, why = [], []
    if mask is not None and mask.any():
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        for rank, i in enumerate(sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])):
            x, y, cw, ch, area = (int(v) for v in stats[i])
            if len(boxes) < n and (rank == 0 or area >= 0.01 * w * h):
                boxes.append([float(x), float(y), float(x + cw), float(y + ch)])
                why.append(f"connected component {rank + 1} of the clip mask ({area} px)")
    else:
        boxes.append([0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h])
        why.append("centre half (the clip mask is empty on frame 0)")
    corners = [[c[0] * w, c[1] * h, c[2] * w, c[3] * h] for c in CORNERS]
    for c in sorted(corners, key=lambda c: _iou_box(c, boxes[0]))[:n - len(boxes)]:
        boxes.append(c)
        why.append("fixed corner box")
    return boxes, why


# ---- one backend, in its own process ------------------------------------------------------------
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


class TorchDriver:
    """sam2's SAM2VideoPredictor with the export's weights; counts `forward_image` (image encoder) calls."""

    def __init__(self, model_dir: Path, frames_dir: Path, threads: int):
        import warnings
        warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")
        import torch
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.frames_dir, self.encoder_calls = torch, frames_dir, 0
        self.model = models.build_oracle(model_dir, add_all_frames_to_correct_as_cond=True, fill_hole_area=0)
        forward = self.model.forward_image

        def counted(img):
            self.encoder_calls += 1
            return forward(img)
        self.model.forward_image = counted
        self.precision = {"requested": "f32", "resolved": "f32", "openvino": None}
        self.frame_times: list = []

    def start(self) -> None:
        with self.torch.inference_mode():
            self.state = self.model.init_state(str(self.frames_dir), offload_video_to_cpu=True)

    def box(self, obj: int, box) -> None:
        with self.torch.inference_mode():
            self.model.add_new_points_or_box(self.state, 0, obj, box=list(box))

    def mask(self, frame: int, obj: int, mask: np.ndarray) -> None:
        with self.torch.inference_mode():
            self.model.add_new_mask(self.state, frame, obj, mask)

    def propagate(self, start: int | None, max_frames: int | None = None, objects=None) -> dict[int, np.ndarray]:
        """sam2 re-tracks every object (`objects` is the engine's choice only)."""
        with self.torch.inference_mode():
            return timed_frames(((f, (m[:, 0] > 0).numpy()) for f, _, m in self.model.propagate_in_video(
                self.state, start_frame_idx=start, max_frame_num_to_track=max_frames)), self.frame_times)

    def correction_click(self, frame: int, obj: int, point) -> None:
        with self.torch.inference_mode():
            self.model.add_new_points_or_box(self.state, frame, obj, points=[point], labels=[1], clear_old_points=False)

    new_object_click = None  # sam2 refuses new object ids once tracking has started (reset_state first)

    def close(self) -> None:
        self.state = None  # frees the frames and features


class EngineDriver:
    """The OpenVINO engine; each session gets a fresh VideoPredictor (empty feature cache) over one Runtime."""

    def __init__(self, model_dir: Path, frames_dir: Path, threads: int, precision: str):
        from backend.engine import EngineSettings, VideoPredictor
        self.settings = EngineSettings(model_dir=model_dir, precision=precision, threads=threads, fill_hole_area=0)
        self.runtime = VideoPredictor(self.settings).runtime
        self.frames_dir = frames_dir
        ov = self.runtime.compiled_property("image_encoder", "INFERENCE_PRECISION_HINT")
        self.precision = {"requested": precision, "resolved": self.runtime.precision, "openvino": ov.to_string()}
        self.frame_times: list = []
        self.graph_calls: dict = {}  # (graph, input shapes) -> [calls, seconds]
        run = self.runtime.run

        def recorded(graph, **inputs):
            t0, c0 = time.perf_counter(), time.process_time()
            out = run(graph, **inputs)
            key = (graph, tuple(sorted((k, tuple(np.shape(v))) for k, v in inputs.items())))
            rec = self.graph_calls.setdefault(key, [0, 0.0, 0.0])
            rec[0] += 1
            rec[1] += time.perf_counter() - t0
            rec[2] += time.process_time() - c0  # process CPU: OpenVINO's threads work for this call
            return out
        self.runtime.run = recorded

    @property
    def encoder_calls(self) -> int:
        return self.runtime.calls("image_encoder")

    def start(self) -> None:
        from backend.engine import VideoPredictor, open_source
        self.engine = VideoPredictor(self.settings, runtime=self.runtime)
        self.session = self.engine.start_session(open_source(self.frames_dir))

    def box(self, obj: int, box) -> None:
        self.engine.add_points(self.session, 0, obj, box=box)

    def mask(self, frame: int, obj: int, mask: np.ndarray) -> None:
        self.engine.add_mask(self.session, frame, obj, mask)

    def propagate(self, start: int | None, max_frames: int | None = None, objects=None) -> dict[int, np.ndarray]:
        """objects: re-track only these (the engine's answer to a correction); the others keep their results."""
        return timed_frames(((r.frame, r.logits > 0) for r in self.engine.propagate(
            self.session, start=start, max_frames=max_frames, objects=objects)), self.frame_times)

    def correction_click(self, frame: int, obj: int, point) -> None:
        self.engine.add_points(self.session, frame, obj, points=[point], labels=[1], clear_old_points=False)

    def new_object_click(self, frame: int, obj: int, box) -> None:
        self.engine.add_points(self.session, frame, obj, box=box)

    def forget(self, obj: int) -> None:
        self.engine.remove_object(self.session, obj)

    def close(self) -> None:
        self.engine.close_session(self.session)


def timed_frames(results, times: list) -> dict[int, np.ndarray]:
    """Drain a propagation generator; append (frame, wall s, CPU s) per yielded frame to `times`."""
    out = {}
    times.clear()
    t, c = time.perf_counter(), time.process_time()
    for frame, masks in results:
        t1, c1 = time.perf_counter(), time.process_time()
        times.append((int(frame), t1 - t, c1 - c))
        out[int(frame)] = masks
        t, c = t1, c1
    return out


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
    out = {"backend": backend, "precision": d.precision, "load_s": load_s, "warmup_s": time.perf_counter() - t0,
           "rss_start_mb": rss0 / MB, "rss_loaded_mb": rss_loaded / MB, "phases": {}, "clicks": {}}
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
    (a correction) and, engine only, a box for a new object (removed again, untimed). Frames: every other
    tracked frame except the correction frame, at most cfg["clicks"] of them."""
    n, k = cfg["num_frames"], cfg["correction_frame"]
    frames = [f for f in range(1, n, 2) if f != k][: cfg["clicks"]]
    x0, y0, x1, y1 = cfg["boxes"][0]
    point = [(x0 + x1) / 2, (y0 + y1) / 2]
    corr, new = [], []
    for f in frames:
        t = time.perf_counter()
        d.correction_click(f, 1, point)
        corr.append(time.perf_counter() - t)
        if d.new_object_click is not None:
            t = time.perf_counter()
            d.new_object_click(f, 100 + nobj, cfg["boxes"][-1])
            new.append(time.perf_counter() - t)
            d.forget(100 + nobj)
    return {"frames": frames, "correction": percentiles(corr), "new_object": percentiles(new),
            "note": "torch: sam2 refuses new objects once tracking has started" if d.new_object_click is None else ""}


# ---- the parent: inputs, workers, comparison, report --------------------------------------------
def machine_info(threads: int) -> dict:
    from importlib.metadata import version

    import openvino as ov
    import psutil
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.processor())
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "openvino": ov.get_version(),
            "ov_cpu_capabilities": list(caps), "python": platform.python_version(), "torch": version("torch"),
            "threads": threads or "all", "platform": platform.platform()}


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    """Per frame and object IoU of bool masks [F, N, H, W]; pairs with an empty union count as 1."""
    inter = (ref & got).reshape(*ref.shape[:2], -1).sum(-1)
    union = (ref | got).reshape(*ref.shape[:2], -1).sum(-1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {"iou_mean": float(iou.mean()), "iou_min": float(iou.min()), "pairs": int(iou.size),
            "empty_pairs": int((union == 0).sum()), "torch_fg_fraction": float(ref.mean())}


def unpack(npz, name: str, width: int) -> np.ndarray:
    return np.unpackbits(npz[name.replace("/", "__")], axis=-1, count=width).astype(bool)


def run_all(args) -> dict:
    clip = Path(args.clip)
    masks_dir = clip.with_name(clip.stem + "_masks")
    with tempfile.TemporaryDirectory(prefix="sam2bench_") as tmp:
        tmp = Path(tmp)
        (tmp / "frames").mkdir()
        n, w, h = write_frames(clip, args.frames, tmp / "frames")
        k = n // 2
        first = masks_dir / "00000.png"
        boxes, why = object_boxes(load_mask(str(first)) if first.is_file() else None, w, h, max(args.objects))
        corr = masks_dir / f"{k:05d}.png"
        if not corr.is_file():
            raise SystemExit(f"{corr} is missing: the re-propagation needs the clip's mask on frame {k}")
        t0 = time.perf_counter()
        dirs = {p: str(models.export_dir(args.image_size, p, model=args.model)) for p in ("f32", "bf16")}
        log.info("exports ready in %.1f s: %s", time.perf_counter() - t0, dirs)
        cfg = {"frames_dir": str(tmp / "frames"), "model_dirs": dirs, "threads": args.threads, "boxes": boxes,
               "objects": args.objects, "correction_frame": k, "correction_mask": str(corr), "num_frames": n,
               "clicks": args.clicks, "num_maskmem": models.manifest(Path(dirs["f32"]))["tracker"]["num_maskmem"]}
        report = {"machine": machine_info(args.threads),
                  "config": {"clip": str(clip), "frames": n, "width": w, "height": h, "image_size": args.image_size,
                             "model": args.model, "weights": "random init, seed 0", "model_dirs": dirs,
                             "boxes_xyxy": boxes, "box_sources": why, "correction_frame": k,
                             "rss": "each backend in its own subprocess", "objects": args.objects,
                             "steady_state": "frames >= num_maskmem after the prompted frame (all memory slots full)"},
                  "backends": {}}
        backends = [b for b in args.backends if not (args.skip_torch and b == "torch")]
        for b in backends:
            job = dict(cfg, backend=b, json_out=str(tmp / f"{b}.json"), masks_out=str(tmp / f"{b}.npz"))
            (tmp / f"{b}.cfg.json").write_text(json.dumps(job))
            log.info("running %s ...", b)
            t0, load = time.perf_counter(), os.getloadavg()[0]
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tmp / f"{b}.cfg.json")]
            proc = subprocess.run(cmd + ["-v"] * args.verbose, cwd=ROOT, env=dict(os.environ, TQDM_DISABLE="1"))
            if proc.returncode != 0:
                raise SystemExit(f"the {b} worker failed (exit {proc.returncode})")
            report["backends"][b] = json.loads((tmp / f"{b}.json").read_text())
            report["backends"][b].update(wall_s=time.perf_counter() - t0, load1_before=load)
        if "torch" in backends:
            ref = np.load(tmp / "torch.npz")
            tph = report["backends"]["torch"]["phases"]
            for b in backends[1:]:
                got = np.load(tmp / f"{b}.npz")
                for name, ph in report["backends"][b]["phases"].items():
                    ph["vs_torch"] = compare(unpack(ref, name, w), unpack(got, name, w))
                    ph["vs_torch"]["torch_over_engine"] = tph[name]["s_per_frame"] / ph["s_per_frame"]
                    ph["vs_torch"]["torch_over_engine_cpu"] = tph[name]["cpu_s_per_frame"] / ph["cpu_s_per_frame"]
                    for key in ("steady_s_per_frame", "steady_cpu_s_per_frame", "first8_s_per_frame"):
                        if key in ph and key in tph[name]:
                            ph["vs_torch"][f"torch_over_engine_{key.replace('_s_per_frame', '')}"] = tph[name][key] / ph[key]
        for d in report["backends"].values():  # N objects against one object, same backend, same run
            ph = d["phases"]
            one = ph.get("1obj/first", {}).get("steady_s_per_frame")
            d["objects_over_one"] = {name.split("/")[0]: v["steady_s_per_frame"] / one for name, v in ph.items()
                                     if one and name.endswith("first") and "steady_s_per_frame" in v}
            one_c = ph.get("1obj/first", {}).get("steady_cpu_s_per_frame")
            d["objects_over_one_cpu"] = {name.split("/")[0]: v["steady_cpu_s_per_frame"] / one_c
                                         for name, v in ph.items()
                                         if one_c and name.endswith("first") and "steady_cpu_s_per_frame" in v}
    return report


def print_report(r: dict) -> None:
    m, c = r["machine"], r["config"]
    print(f"\nmachine: {m['cpu']}, {m['logical_cores']} logical / {m['physical_cores']} physical cores, "
          f"{m['ram_gb']} GB RAM, threads: {m['threads']}")
    print(f"OpenVINO {m['openvino']} (CPU capabilities {', '.join(m['ov_cpu_capabilities'])}), torch {m['torch']}")
    print(f"clip: {c['clip']} ({c['width']}x{c['height']}), {c['frames']} frames; model {c['model']} at "
          f"{c['image_size']} px ({c['weights']}); correction: clip mask of object 1 on frame {c['correction_frame']}")
    for i, (b, why) in enumerate(zip(c["boxes_xyxy"], c["box_sources"])):
        print(f"  object {i + 1}: box ({', '.join(f'{v:.0f}' for v in b)}) - {why}")
    print(f"RSS: {c['rss']}\n")
    print(f"{'backend':<12} {'precision req->OV':<18} {'load s':>7} {'warm-up s':>9} {'RSS loaded MB':>13} "
          f"{'RSS peak MB':>11} {'wall s':>7} {'load1':>5}")
    for b, d in r["backends"].items():
        p = d["precision"]
        prec = f"{p['requested']}->{p['openvino'] or 'torch f32'}"
        print(f"{b:<12} {prec:<18} {d['load_s']:7.1f} {d['warmup_s']:9.1f} {d['rss_loaded_mb']:13.0f} "
              f"{d['rss_process_peak_mb']:11.0f} {d['wall_s']:7.1f} {d['load1_before']:5.2f}")
    print(f"\n{'phase':<16} {'backend':<12} {'frames':>6} {'prompt s':>8} {'s/frame':>8} {'FPS':>6} {'cpu s/f':>7} "
          f"{'torch/eng':>9} {'enc calls':>9} {'IoU mean':>8} {'IoU min':>8} {'RSS peak':>8} {'growth':>7}")
    phases = next(iter(r["backends"].values()))["phases"]
    for name in phases:
        for b, d in r["backends"].items():
            ph = d["phases"][name]
            v = ph.get("vs_torch")
            ratio, mean, low = (f"{v['torch_over_engine']:9.2f}", f"{v['iou_mean']:8.4f}", f"{v['iou_min']:8.4f}") \
                if v else (f"{'-':>9}", f"{'-':>8}", f"{'-':>8}")
            print(f"{name:<16} {b:<12} {ph['frames']:6d} {ph['prompt_s']:8.2f} {ph['s_per_frame']:8.3f} "
                  f"{ph['fps']:6.3f} {ph['cpu_s_per_frame']:7.3f} {ratio} {ph['encoder_calls']:9d} {mean} {low} "
                  f"{ph['rss_peak_mb']:8.0f} {ph['rss_growth_mb']:7.0f}")
    print("\ns/frame: propagation wall time; cpu s/f: its process CPU time (all threads); prompt s: session start + "
          "prompts (sam2's init_state decodes all frames, encodes frame 0).\nRSS peak / growth (MB): psutil-sampled "
          "peak of the phase, and its rise over the RSS at the phase's start. load1: load average before the backend "
          "(other work on the machine slows the wall times).")
    print(f"\nsteady state ({c.get('steady_state', '')}) and the first 8 frames, first propagation:")
    print(f"{'phase':<12} {'backend':<12} {'steady s/f':>10} {'cpu s/f':>8} {'torch/eng':>9} {'cpu ratio':>9} "
          f"{'first8 s/f':>10} {'torch/eng':>9} {'N/1 obj':>7} {'N/1 cpu':>7}")
    for name in phases:
        if not name.endswith("first"):
            continue
        for b, d in r["backends"].items():
            ph, v = d["phases"][name], d["phases"][name].get("vs_torch", {})
            if "steady_s_per_frame" not in ph:
                continue
            nobj = name.split("/")[0]
            print(f"{name:<12} {b:<12} {ph['steady_s_per_frame']:10.3f} {ph['steady_cpu_s_per_frame']:8.3f} "
                  f"{v.get('torch_over_engine_steady', float('nan')):9.2f} "
                  f"{v.get('torch_over_engine_steady_cpu', float('nan')):9.2f} {ph['first8_s_per_frame']:10.3f} "
                  f"{v.get('torch_over_engine_first8', float('nan')):9.2f} "
                  f"{d.get('objects_over_one', {}).get(nobj, float('nan')):7.2f} "
                  f"{d.get('objects_over_one_cpu', {}).get(nobj, float('nan')):7.2f}")
    for b, d in r["backends"].items():
        if "matmul_peak" not in d:
            continue
        mp = d["matmul_peak"]
        print(f"\n{b}: per graph (MatMul/conv GFLOP at the shapes run); 2048^3 MatMul peak this run: "
              f"{mp['gflops_wall']:.0f} GFLOP/s wall, {mp['gflop_per_cpu_s']:.0f} GFLOP per CPU-s")
        for name, ph in d["phases"].items():
            row = ", ".join(f"{g} {v['calls']}x {v['s']:.2f} s {v['cpu_s']:.2f} cpu-s {v['gflops']:.0f} GFLOP/s "
                            f"({100 * v['of_matmul_peak']:.0f}% wall, {100 * v['of_matmul_peak_cpu']:.0f}% cpu)"
                            for g, v in sorted(ph.get("graphs", {}).items(), key=lambda kv: -kv[1]["s"]))
            print(f"  {name:<16} {row}")
    print("\nclick latency on tracked frames (s): correction = a point added to object 1; new object = a box")
    for b, d in r["backends"].items():
        for nobj, v in d.get("clicks", {}).items():
            corr, new = v["correction"], v["new_object"]
            fmt = (lambda x: f"p50 {x['p50_s']:.3f} p95 {x['p95_s']:.3f} (n={x['n']})" if x else "n/a")
            print(f"  {b:<12} {nobj}: correction {fmt(corr)}; new object {fmt(new)} {v['note']}")
    cmp = [d["phases"][n]["vs_torch"] for d in r["backends"].values() for n in d["phases"]
           if "vs_torch" in d["phases"][n]]
    if cmp:
        empty = ", ".join(str(v["empty_pairs"]) for v in cmp)
        fg = ", ".join(f"{v['torch_fg_fraction']:.3f}" for v in cmp)
        print(f"IoU per frame and object; pairs with both masks empty (counted as 1), per engine row: {empty};\n"
              f"torch foreground fraction per engine row: {fg}.")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="/work/shared/clips/box.mp4", help="video with <clip>_masks/NNNNN.png beside it")
    p.add_argument("--frames", type=int, default=24, help="first N frames of the clip")
    p.add_argument("--image-size", type=int, default=1024, help="model input side (random-init export at that size)")
    p.add_argument("--model", default=models.MODEL)
    p.add_argument("--threads", type=int, default=0, help="inference threads for torch and OpenVINO (0 = all)")
    p.add_argument("--skip-torch", action="store_true", help="engine only (no reference, no IoU)")
    p.add_argument("--objects", type=lambda v: [int(x) for x in v.split(",")], default=[1, 3, 5],
                   help="object counts to run, e.g. 1,3,5 (at most 5)")
    p.add_argument("--backends", type=lambda v: [b for b in v.split(",") if b], default=list(BACKENDS),
                   help=f"subset of {','.join(BACKENDS)} (torch first: the others are compared with it)")
    p.add_argument("--clicks", type=int, default=8, help="tracked frames clicked per object count (latency)")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file (default: "
                   "benchmarks/results/bench-<UTC time>.json, one per run)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("backend.engine").setLevel(logging.INFO if args.verbose else logging.ERROR)
    if args.worker:
        run_backend(json.loads(Path(args.worker).read_text()))
        return 0
    if args.frames < 2:
        raise SystemExit("--frames must be at least 2")
    if not args.objects or max(args.objects) > 5 or min(args.objects) < 1:
        raise SystemExit("--objects takes counts between 1 and 5, e.g. 1,3,5")
    if any(b not in BACKENDS for b in args.backends):
        raise SystemExit(f"--backends takes a subset of {','.join(BACKENDS)}")
    t0 = time.perf_counter()
    report = run_all(args)
    report["total_wall_s"] = time.perf_counter() - t0
    print_report(report)
    print(f"total wall time {report['total_wall_s']:.0f} s")
    path = args.json or ROOT / "benchmarks" / "results" / time.strftime("bench-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
