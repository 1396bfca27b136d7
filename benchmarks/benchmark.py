"""Speed, memory and agreement of the OpenVINO engine against the model's own torch predictor, on one clip.

    python benchmarks/benchmark.py                       # box.mp4, 24 frames, 1024 px (slow: torch ~6 s/frame)
    python benchmarks/benchmark.py --frames 8 --image-size 512 --json out.json
    python benchmarks/benchmark.py --objects 1,3 --backends torch,engine_bf16 --clicks 8
    python benchmarks/benchmark.py --model sam2.1_hiera_tiny,edgetam --objects 1,3   # both models, same frames

Models: SAM 2.1 (torch = sam2 1.1.0's SAM2VideoPredictor in this venv) and EdgeTAM (torch = EdgeTAM's own
predictor from the edgetam-dimos fork, run in `.venv-edgetam`, see scripts/install_edgetam_export.sh; its
exports need --image-size a multiple of 256). Several models run one after the other on the same frames and
boxes; each engine is compared with its own model's torch predictor, and a last table sets the models side by
side (ratios to the first model named). Modules: clip_inputs (frames, boxes), drivers (torch / engine behind
one interface), worker (one backend per subprocess), report (tables).

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

Boxes: see benchmarks/clip_inputs.py.
IoU is per frame and object, engine vs torch masks (both empty counts as 1 and is reported).
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
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.clip_inputs import object_boxes, write_frames  # noqa: E402
from benchmarks.report import print_cross_model, print_report  # noqa: E402
from tests import models  # noqa: E402  (the cached random-init exports and the torch oracle)
from tests.parity import load_mask  # noqa: E402

log = logging.getLogger("benchmark")
BACKENDS = ("torch", "engine_bf16", "engine_f32")
MODELS = ("sam2.1_hiera_tiny", "edgetam")


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


def worker_python(model: str, backend: str) -> str:
    """EdgeTAM's torch predictor lives in its own venv (its `sam2` is the edgetam-dimos fork); all else here."""
    if backend != "torch":
        return sys.executable
    py = models.python_for(model)
    if not Path(py).exists():
        raise SystemExit(f"{py} is missing: the {model} torch reference runs in the EdgeTAM venv; run "
                         f"`bash scripts/install_edgetam_export.sh`, or pass --skip-torch")
    return py


def run_all(args) -> dict:
    """Every model on the same frames and boxes: {model: report}."""
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
        inputs = {"clip": str(clip), "frames": n, "width": w, "height": h, "boxes_xyxy": boxes, "box_sources": why,
                  "correction_frame": k, "correction_mask": str(corr)}
        return {m: run_model(args, m, tmp, inputs) for m in args.model}


def run_model(args, model: str, tmp: Path, inputs: dict) -> dict:
    """One model: every backend in its own subprocess, engines compared with this model's torch predictor."""
    n, w, k, boxes = inputs["frames"], inputs["width"], inputs["correction_frame"], inputs["boxes_xyxy"]
    backends = [b for b in args.backends if not (args.skip_torch and b == "torch")]
    t0 = time.perf_counter()
    precisions = ["f32"] + (["bf16"] if "engine_bf16" in backends else [])  # f32: the torch side's weights too
    # seed-0 EdgeTAM scores every object absent (all masks empty, nothing to compare): its exports get the
    # object-score bias the parity tests use, so objects are present and tracked
    bias = models.EDGETAM_OBJECT_SCORE_BIAS if model == "edgetam" else None
    dirs = {p: str(models.export_dir(args.image_size, p, bias=bias, model=model)) for p in precisions}
    log.info("%s exports ready in %.1f s: %s", model, time.perf_counter() - t0, dirs)
    cfg = {"frames_dir": str(tmp / "frames"), "model_dirs": dirs, "threads": args.threads, "boxes": boxes,
           "objects": args.objects, "correction_frame": k, "correction_mask": inputs["correction_mask"],
           "num_frames": n, "clicks": args.clicks,
           "num_maskmem": models.manifest(Path(dirs["f32"]))["tracker"]["num_maskmem"]}
    report = {"machine": machine_info(args.threads),
              "config": {"clip": inputs["clip"], "frames": n, "width": w, "height": inputs["height"],
                         "image_size": args.image_size, "model": model, "weights": "random init, seed 0",
                         "model_dirs": dirs, "boxes_xyxy": boxes, "box_sources": inputs["box_sources"],
                         "correction_frame": k, "rss": "each backend in its own subprocess", "objects": args.objects,
                         "steady_state": "frames >= num_maskmem after the prompted frame (all memory slots full)"},
              "backends": {}}
    for b in backends:
        tag = f"{model}-{b}"
        job = dict(cfg, backend=b, json_out=str(tmp / f"{tag}.json"), masks_out=str(tmp / f"{tag}.npz"))
        (tmp / f"{tag}.cfg.json").write_text(json.dumps(job))
        log.info("running %s %s ...", model, b)
        t0, load = time.perf_counter(), os.getloadavg()[0]
        cmd = [worker_python(model, b), "-m", "benchmarks.worker", str(tmp / f"{tag}.cfg.json")]
        proc = subprocess.run(cmd + ["-v"] * args.verbose, cwd=ROOT, env=dict(os.environ, TQDM_DISABLE="1"))
        if proc.returncode != 0:
            raise SystemExit(f"the {model} {b} worker failed (exit {proc.returncode})")
        report["backends"][b] = json.loads((tmp / f"{tag}.json").read_text())
        report["backends"][b].update(wall_s=time.perf_counter() - t0, load1_before=load)
    if "torch" in backends:
        ref = np.load(tmp / f"{model}-torch.npz")
        tph = report["backends"]["torch"]["phases"]
        for b in backends[1:]:
            got = np.load(tmp / f"{model}-{b}.npz")
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="/work/shared/clips/box.mp4", help="video with <clip>_masks/NNNNN.png beside it")
    p.add_argument("--frames", type=int, default=24, help="first N frames of the clip")
    p.add_argument("--image-size", type=int, default=1024, help="model input side (random-init export at that size)")
    p.add_argument("--model", type=lambda v: [m for m in v.split(",") if m], default=[models.MODEL],
                   help=f"model(s) to run on the same frames, comma-separated, from {','.join(MODELS)}")
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
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("backend.engine").setLevel(logging.INFO if args.verbose else logging.ERROR)
    if args.frames < 2:
        raise SystemExit("--frames must be at least 2")
    if not args.objects or max(args.objects) > 5 or min(args.objects) < 1:
        raise SystemExit("--objects takes counts between 1 and 5, e.g. 1,3,5")
    if any(b not in BACKENDS for b in args.backends):
        raise SystemExit(f"--backends takes a subset of {','.join(BACKENDS)}")
    if not args.model or any(m not in MODELS for m in args.model):
        raise SystemExit(f"--model takes one or more of {','.join(MODELS)}, comma-separated")
    if "edgetam" in args.model and args.image_size % 256:
        raise SystemExit(f"--image-size {args.image_size}: EdgeTAM needs a multiple of 256 (its perceiver's 16 x 16 grid)")
    t0 = time.perf_counter()
    reports = run_all(args)
    for r in reports.values():
        print_report(r)
    # one model: its report as before; several: {"models": {name: report}} and the side-by-side table
    report = next(iter(reports.values())) if len(reports) == 1 else {"models": reports}
    if len(reports) > 1:
        print_cross_model(reports)
    report["total_wall_s"] = time.perf_counter() - t0
    print(f"total wall time {report['total_wall_s']:.0f} s")
    path = args.json or ROOT / "benchmarks" / "results" / time.strftime("bench-%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
