"""What CVAT's frame-by-frame calls cost against the engine tracking the same frames offline, in the same run.

For each frame: one CVAT call (base64 JPEG decode, one encoder run, memory attention and decoding for every object,
shapes out) versus the engine's own `propagate` over the same JPEGs with the same box prompts. Prints wall and
process-CPU seconds per frame, their ratio, and whether the masks are identical (they must be).

    .venv/bin/python benchmarks/cvat_tracker.py --model-dir .cache/models/<export> --frames 20 --objects 2
"""
from __future__ import annotations

import argparse
import base64
import platform
import tempfile
import time
from pathlib import Path

import cv2

from backend.cvat.shapes import rle_to_mask
from backend.cvat.tracker import CvatTracker
from backend.engine import EngineSettings, ImageSequenceSource, VideoPredictor
from backend.settings import CvatSettings


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--clip", default="/work/shared/clips/cup.mp4")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--precision", default="f32")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cvat-bench-"))
    cap = cv2.VideoCapture(args.clip)
    paths = []
    for i in range(args.frames):
        ok, frame = cap.read()
        assert ok, f"{args.clip} has fewer than {args.frames} frames"
        paths.append(tmp / f"{i:05d}.jpg")
        cv2.imwrite(str(paths[-1]), frame)
    h, w = frame.shape[:2]
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    boxes = [(w * (0.1 + 0.4 * k / args.objects), h * 0.2, w * (0.35 + 0.4 * k / args.objects), h * 0.8)
             for k in range(args.objects)]

    predictor = VideoPredictor(EngineSettings(model_dir=args.model_dir, precision=args.precision))
    tracker = CvatTracker(CvatSettings(), lambda t: predictor)

    def clock():
        return time.perf_counter(), time.process_time()

    # CVAT path: mask prompts would differ from boxes; start with rectangles and read the masks back as masks
    t0 = clock()
    reply = tracker.track({"image": b64[0], "shapes": [{"type": "rectangle", "points": list(b)} for b in boxes],
                           "states": []})
    states = [{**s, "type": "mask"} for s in reply["states"]]  # our own states: ask for masks from here on
    got = []
    for k in range(1, args.frames):
        reply = tracker.track({"image": b64[k], "shapes": [None] * len(states), "states": states})
        states = reply["states"]
        got.append([rle_to_mask(s["points"], w, h) if s["points"] else None for s in reply["shapes"]])
    t1 = clock()

    session = predictor.start_session(ImageSequenceSource(paths))
    for obj, box in enumerate(boxes):
        predictor.add_points(session, 0, obj, box=box)
    want = [r.masks() for r in predictor.propagate(session, start=0)]
    t2 = clock()

    same = all((g[i] == want[k + 1][i]).all() or not want[k + 1][i].any()
               for k, g in enumerate(got) for i in range(len(boxes)))
    n = args.frames
    cvat_wall, cvat_cpu = (t1[0] - t0[0]) / n, (t1[1] - t0[1]) / n
    eng_wall, eng_cpu = (t2[0] - t1[0]) / n, (t2[1] - t1[1]) / n
    print(f"CPU: {cpu_name()}; machine may be shared: prefer the CPU-second ratio")
    print(f"model {Path(args.model_dir).name}, {n} frames {w}x{h}, {len(boxes)} objects, precision {args.precision}")
    print(f"CVAT calls   : {cvat_wall:.3f} s/frame wall, {cvat_cpu:.3f} CPU-s/frame")
    print(f"engine offline: {eng_wall:.3f} s/frame wall, {eng_cpu:.3f} CPU-s/frame")
    print(f"ratio CVAT/engine: wall {cvat_wall / eng_wall:.2f}, CPU {cvat_cpu / eng_cpu:.2f}; masks identical: {same}")
    print(f"sessions bytes held: {tracker.sessions.nbytes / 1e6:.1f} MB; "
          f"largest state {max(len(str(s)) for s in states)} characters")
    assert same, "streamed masks differ from the engine's"


if __name__ == "__main__":
    main()
