"""N objects against one, measured side by side (issue 10, item 3: at steady state 3 objects < 2.1x one object).

    python benchmarks/objects_ratio.py                                  # 1024 px, 24 frames of box.mp4, 1 vs 3 and 5
    python benchmarks/objects_ratio.py --image-size 256 --frames 12     # a quick check

`benchmark.py` runs the 1-object and the N-object propagations one after the other, minutes apart; on a machine
whose speed drifts (shared hosts, frequency), the ratio then moves with the drift: five runs on one machine gave
2.06-2.26x for 3 objects while the 3-object frames hardly moved. Here one session per object count (each with its
own VideoPredictor, so none reuses another's image features; all over one compiled Runtime) propagates the same
frames, and the sessions take turns frame by frame (the order rotates every frame), so a drift hits all of them
alike. Reported: per object count, steady-state s/frame (frames whose memory bank is full, as in benchmark.py),
the ratio of the sums over those frames and the median of the per-frame ratios, CPU s/frame, and the
memory-attention calls per frame. One JSON per run in benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.benchmark import machine_info  # noqa: E402
from benchmarks.clip_inputs import object_boxes, write_frames  # noqa: E402
from tests import models  # noqa: E402
from tests.parity import load_mask  # noqa: E402

log = logging.getLogger("objects_ratio")


def run(model_dir: Path, frames_dir: Path, boxes: list, counts: list[int], threads: int, precision: str) -> dict:
    from backend.engine import EngineSettings, VideoPredictor, open_source
    batch = os.environ.get("ATTENTION_BATCH", "auto").strip().lower()  # as the service reads it
    settings = EngineSettings(model_dir=model_dir, precision=precision, threads=threads, fill_hole_area=0,
                              attention_batch=None if batch in ("", "auto") else int(batch))
    runtime = VideoPredictor(settings).runtime
    engines = {n: VideoPredictor(settings, runtime=runtime) for n in counts}
    # warm-up on a throw-away session: every graph's first call (allocations) stays out of the timing
    warm = engines[counts[0]].start_session(open_source(frames_dir))
    engines[counts[0]].add_points(warm, 0, 1, box=boxes[0])
    for _ in engines[counts[0]].propagate(warm, max_frames=2):
        pass
    engines[counts[0]].close_session(warm)
    sessions, gens = {}, {}
    for n, eng in engines.items():
        sessions[n] = eng.start_session(open_source(frames_dir))
        for i in range(n):
            eng.add_points(sessions[n], 0, i + 1, box=boxes[i])
        gens[n] = eng.propagate(sessions[n])
    times: dict[int, dict[int, tuple[float, float, int]]] = {n: {} for n in counts}
    frame = 0
    while gens:
        order = counts[frame % len(counts):] + counts[:frame % len(counts)]
        for n in order:
            if n not in gens:
                continue
            calls = runtime.calls("memory_attention")
            t, c = time.perf_counter(), time.process_time()
            try:
                result = next(gens[n])
                result.logits  # every object's mask at video resolution, as a consumer gets it (resized lazily)
            except StopIteration:
                del gens[n]
                continue
            times[n][result.frame] = (time.perf_counter() - t, time.process_time() - c,
                                      runtime.calls("memory_attention") - calls)
        frame += 1
    for n, eng in engines.items():
        eng.close_session(sessions[n])
    num_maskmem = engines[counts[0]].cfg.num_maskmem
    steady = sorted(f for f in times[counts[0]] if f >= num_maskmem)
    out = {"attention_batch": engines[counts[0]].tracker.attention_batch, "steady_frames": steady, "by_objects": {}}
    one = times[1]
    for n in counts:
        t = times[n]
        rec = {"steady_s_per_frame": statistics.fmean(t[f][0] for f in steady),
               "steady_cpu_s_per_frame": statistics.fmean(t[f][1] for f in steady),
               "attention_calls_per_frame": statistics.fmean(t[f][2] for f in steady),
               "per_frame_s": {f: round(t[f][0], 4) for f in sorted(t)}}
        if n != 1:
            rec["ratio_of_sums"] = sum(t[f][0] for f in steady) / sum(one[f][0] for f in steady)
            rec["median_frame_ratio"] = statistics.median(t[f][0] / one[f][0] for f in steady)
            rec["cpu_ratio_of_sums"] = sum(t[f][1] for f in steady) / sum(one[f][1] for f in steady)
        out["by_objects"][n] = rec
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--precision", default="bf16", choices=("bf16", "f32"))
    p.add_argument("--frames", type=int, default=24, help="frames propagated (>= 8: the memory bank fills at 7)")
    p.add_argument("--objects", default="3,5", help="object counts to set against one object")
    p.add_argument("--clip", type=Path, default=Path("/work/shared/clips/box.mp4"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    counts = [1] + sorted({int(x) for x in args.objects.split(",") if x.strip()} - {1})
    if max(counts) > 5 or args.frames < 8:
        p.error("at most 5 objects (the clip's boxes), at least 8 frames")
    model_dir = models.export_dir(args.image_size, args.precision)
    load1 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="objratio_") as tmp:
        frames_dir = Path(tmp)
        n, w, h = write_frames(args.clip, args.frames, frames_dir)
        first = args.clip.with_name(args.clip.stem + "_masks") / "00000.png"
        boxes, why = object_boxes(load_mask(str(first)) if first.is_file() else None, w, h, max(counts))
        figures = run(model_dir, frames_dir, boxes, counts, args.threads, args.precision)
    out = {"machine": machine_info(args.threads), "load_avg_before": load1, "load_avg_after": os.getloadavg(),
           "config": {"clip": str(args.clip), "frames": n, "width": w, "height": h, "image_size": args.image_size,
                      "precision": args.precision, "model_dir": str(model_dir), "weights": "random init, seed 0",
                      "boxes_xyxy": boxes, "box_sources": why}, **figures}
    path = args.json or ROOT / "benchmarks" / "results" / \
        f"objects-ratio-{args.image_size}-{time.strftime('%Y%m%dT%H%MZ', time.gmtime())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    m = out["machine"]
    print(f"{m['cpu']} ({m['logical_cores']} cores), {args.image_size} px {args.precision}, {n} frames of "
          f"{args.clip.name}; ATTENTION_BATCH {figures['attention_batch']}; load avg {load1[0]:.1f} -> "
          f"{out['load_avg_after'][0]:.1f}; steady frames {figures['steady_frames'][0]}-{figures['steady_frames'][-1]}")
    print(f"{'objects':>8}{'s/frame':>10}{'CPU s/frame':>13}{'ratio (sums)':>14}{'median ratio':>14}{'CPU ratio':>11}")
    for k, r in figures["by_objects"].items():
        print(f"{k:>8}{r['steady_s_per_frame']:>10.3f}{r['steady_cpu_s_per_frame']:>13.3f}"
              + (f"{r['ratio_of_sums']:>13.2f}x{r['median_frame_ratio']:>13.2f}x{r['cpu_ratio_of_sums']:>10.2f}x"
                 if k != 1 else ""))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
