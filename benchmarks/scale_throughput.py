"""Throughput of the Ray Serve scale-out with 1 vs 2 tracking replicas, on several tasks prompted at once.

    python benchmarks/scale_throughput.py                         # 4 tasks x 40 frames, 128 px, replicas 1 then 2
    python benchmarks/scale_throughput.py --tasks 6 --frames 60 --image-size 256 --json out.json

A local Ray cluster (`ray start --head` on 127.0.0.1, tests/scale/ray_cluster.py) runs the deployment with N replicas,
each reserving `--replica-cpus` CPUs with OV_THREADS equal to it and JOB_WORKERS=1 (one propagation at a time per
replica: the replica is the unit of capacity). The front's client (`RayTrackingClient`, the same forwarding code
gunicorn runs, minus Flask) prompts every task with a box on frame 0 at the same moment and waits for each answer;
the time budget is long enough that an answer means the whole clip is tracked. Figures: wall seconds for all tasks,
frames per second, CPU seconds of the cluster's processes per frame (psutil over `ray start` and its descendants), and the
2-vs-1 ratio of the same run. No Label Studio: predictions are not written anywhere (the write fails and is logged).
Frames are the first `--frames` of box.mp4, one folder per task (so no task reuses another's features).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.app import build_service  # noqa: E402
from backend.settings import Settings  # noqa: E402
from tests import appkit as kit  # noqa: E402
from tests import models  # noqa: E402
from tests.scale.ray_cluster import start_cluster  # noqa: E402

logger = logging.getLogger("scale_throughput")
CONFIG = kit.FRAMES_CONFIG


def _cpu_seconds(root_pid: int) -> float:
    """CPU seconds used so far by `ray start --block` and every process under it (GCS, raylet, replicas)."""
    try:
        root = psutil.Process(root_pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def run(replicas: int, args, media: Path, size, model: Path) -> dict:
    cluster = start_cluster(num_cpus=max(2, int(replicas * args.replica_cpus)))
    try:
        env = {"MODEL_DIR": str(model), "PRECISION": "f32", "OV_THREADS": str(int(args.replica_cpus)),
               "JOB_WORKERS": "1", "MAX_SESSIONS": str(args.tasks), "PREDICT_TIME_BUDGET_S": "300",
               "LOCAL_FILES_DOCUMENT_ROOT": str(media), "DATA_DIR": str(media / "data"), "LOG_LEVEL": "WARNING",
               "MEDIA_CACHE_DIR": str(media / "cache"), "RAY_MAX_ONGOING_REQUESTS": "16"}
        cluster.deploy(env, replicas=replicas, replica_cpus=args.replica_cpus)
        settings = Settings.from_env({"MODEL_DIR": str(model), "TRACKING_BACKEND": "ray",
                                      "RAY_SERVE_URL": cluster.serve_url, "RAY_REQUEST_TIMEOUT_S": "600"})
        client = build_service(settings)  # the front as the app wires it (RayTrackingClient)
        ctx = [kit.rect("b", 0, 25, 25, 50, 50, size)]

        def prompt(i: int) -> tuple[float, str, int]:
            task = kit.frames_task(1000 + i, f"t{i}", args.frames)
            t0 = time.monotonic()
            out = client.predict({"tasks": [task], "label_config": CONFIG, "params": {"context": {"result": ctx}}})
            frames = len(kit.brushes(out["results"][0]["result"]))
            return time.monotonic() - t0, client.job_status(1000 + i)["replica"], frames

        prompt(args.tasks)  # warm-up on an extra task (first compile, first request through the proxy)
        root = cluster.proc.pid
        cpu0, t0 = _cpu_seconds(root), time.monotonic()
        with ThreadPoolExecutor(args.tasks) as pool:
            results = list(pool.map(prompt, range(args.tasks)))
        wall, cpu = time.monotonic() - t0, _cpu_seconds(root) - cpu0
        frames = sum(r[2] for r in results)
        client.shutdown()
        return {"replicas": replicas, "wall_s": round(wall, 2), "frames": frames,
                "frames_per_s": round(frames / wall, 2), "cpu_s_per_frame": round(cpu / frames, 3),
                "per_task_s": [round(r[0], 2) for r in results],
                "replica_of_task": [r[1] for r in results], "distinct_replicas": len({r[1] for r in results})}
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--replica-cpus", type=float, default=1.0)
    parser.add_argument("--clip", type=Path, default=Path(os.environ.get("CLIPS_DIR", "/work/shared/clips")) / "box.mp4")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = models.export_dir(args.image_size, "f32")
    media = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    size = None
    for i in range(args.tasks + 1):
        size = kit.extract_frames(args.clip, media / f"t{i}", args.frames)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    load0 = os.getloadavg()
    rows = [run(n, args, media, size, model) for n in (1, 2)]
    report = {"cpu": cpu_model, "cores": os.cpu_count(), "platform": platform.platform(),
              "loadavg_before": [round(x, 1) for x in load0], "loadavg_after": [round(x, 1) for x in os.getloadavg()],
              "tasks": args.tasks, "frames_per_task": args.frames, "image_size": args.image_size,
              "replica_cpus": args.replica_cpus, "runs": rows,
              "ratio_2_vs_1": round(rows[1]["frames_per_s"] / rows[0]["frames_per_s"], 2)}
    print(json.dumps(report, indent=2))
    print(f"\n{args.tasks} tasks x {args.frames} frames, {args.image_size} px, {cpu_model} ({os.cpu_count()} cores), "
          f"load {load0[0]:.1f} before:")
    for r in rows:
        print(f"  {r['replicas']} replica(s): {r['wall_s']:7.1f} s wall, {r['frames_per_s']:6.2f} frames/s, "
              f"{r['cpu_s_per_frame']:.3f} CPU s/frame, tasks on {r['distinct_replicas']} replica(s)")
    print(f"  2 vs 1 replicas: x{report['ratio_2_vs_1']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
