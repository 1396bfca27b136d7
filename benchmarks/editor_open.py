"""How fast the Label Studio editor opens a long frames task with a multi-object prediction: ours vs plain brush.

    python benchmarks/editor_open.py                                  # 200 frames, 2 objects, 3 runs per variant
    python benchmarks/editor_open.py --frames 200 --objects 2 --runs 5 --json artifacts/editor_open/result.json

Starts a Label Studio (tests/e2e/ls_server.py, template database), writes the first `--frames` JPEGs of the clip under
its local-files root and creates one FRAMES_CONFIG project with one task per `--variants` entry (default: ours,
plain), all over the same frames. No ML backend is connected: this measures the editor, not the model. Each task gets
one prediction (POST /api/predictions/) with the same masks, `--objects` objects x `--frames` frames, encoded once:

- `ours`: what TaskTracker._brush_results writes: the echoed prompt regions first (a positive keypoint on frame 0 for
  object 1, a rectangle on frame 0 for every further object, as LS sent them: origin "manual", random ids), then
  `results.brush_result` per (frame, object) with id `prompts.brush_region_id` (`sam2-<obj>-<frame>`),
  meta text `Car <obj>` and origin "prediction";
- `plain`: brush regions only, same RLE and fields, random LS-style 10-char ids, no meta, no origin (the editor
  still shows every region of a prediction with origin "prediction");
- ablations, only with --variants: `ours_nometa`, `ours_noprompts`, `ours_randids` (see VARIANTS).
The editor opens a task without annotations by turning its prediction into a draft annotation: that is what is timed.

Masks: object 1 is the clip's approximate mask (box_masks/NNNNN.png); object k > 1 is that mask mirrored, shrunk to
1/k and put in the lower part of the frame (a second moving blob with a real outline, not noise); empty masks are
skipped, as the backend does.

Then `benchmarks/editor_open.js` (headless Chromium via playwright-core, one login) opens every task `--runs` times,
variants alternating (order reversed every other round), each in a fresh page of one browser profile, after
`--warmup` uncounted opens each. Per open (all times from navigation start): `ready` = the editor store holds every
region of the prediction, the outliner (region list) renders rows and frame 1's masks are drawn on their canvas
layers; its phases: `task API` (GET /api/tasks/<t> done: server + transfer + the data manager booting before it),
`API>store` (the editor turning the prediction into regions), `store>ready` (region list + first frame drawn);
`main CPU` / `script` = renderer main-thread CPU / script time until ready (less sensitive to other load than wall
time); main-thread long tasks until ready; `page x5` = five clicks on the pager's next button until frame 6 shows with
its masks drawn; JS heap used (after a forced GC) at ready and after paging. Screenshots of frame 1 and frame 6 of
each variant go to --out. Unless --no-profile, one more open per variant runs under the CPU profiler: the table ends
with the named functions taking the most inclusive time (the editor's own, unminified names).
The machine's load average is printed: wall times on a busy machine are inflated and noisy; compare medians.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.ls.prompts import brush_region_id  # noqa: E402
from backend.ls.results import brush_result  # noqa: E402
from tests import appkit as kit  # noqa: E402
from tests.e2e.frames_setup import frame_urls  # noqa: E402
from tests.e2e.ls_server import FRAMES_CONFIG, LS_PASSWORD, LS_USER, start_label_studio  # noqa: E402

log = logging.getLogger("editor_open")
CLIP = Path("/work/shared/clips/box.mp4")
JS = ROOT / "benchmarks" / "editor_open.js"
NODE_MODULES = ROOT / "tests" / "browser" / "node_modules"
LABEL = "Car"
VARIANTS = {  # name -> what it is (ablations of `ours` help tell which difference costs what)
    "ours": "as the backend writes it: prompts echoed, sam2-<obj>-<frame> ids, meta text, origin prediction",
    "plain": "brush regions only: same RLE, random ids, no meta, no origin",
    "ours_nometa": "ours without the meta text",
    "ours_noprompts": "ours without the echoed prompt regions",
    "ours_randids": "ours with random ids instead of sam2-<obj>-<frame>",
}
METRICS = (  # (key in the JS summary, column title, unit)
    ("ready_ms", "ready", "ms"), ("task_api_ms", "task API", "ms"), ("api_to_store_ms", "API>store", "ms"),
    ("store_ms", "store full", "ms"), ("store_to_ready_ms", "store>ready", "ms"), ("cpu_main_ms", "main CPU", "ms"),
    ("script_ms", "script", "ms"), ("long_tasks_ms", "long tasks", "ms"), ("page5_ms", "page x5", "ms"),
    ("heap_ready_mb", "heap ready", "MB"), ("heap_paged_mb", "heap paged", "MB"),
)


# ---- inputs ------------------------------------------------------------------------------------
def load_masks(masks_dir: Path, frames: int, objects: int, size: tuple[int, int]) -> dict[tuple[int, int], np.ndarray]:
    """{(object, frame): HxW bool} for objects 1..`objects` on frames 0..frames-1 (see the module docstring)."""
    import cv2
    from PIL import Image
    w, h = size
    out = {}
    for f in range(frames):
        m = np.asarray(Image.open(masks_dir / f"{f:05d}.png")) > 0
        if m.shape != (h, w):
            raise ValueError(f"{masks_dir}/{f:05d}.png is {m.shape[1]}x{m.shape[0]}, the frames are {w}x{h}")
        out[(1, f)] = m
        for k in range(2, objects + 1):
            small = cv2.resize(m[:, ::-1].astype(np.uint8), (w // k, h // k), interpolation=cv2.INTER_NEAREST)
            x0 = int((k - 2) * w / max(1, objects - 1) * 0.5) + 8
            y0 = h - h // k - 4
            o = np.zeros((h, w), bool)
            o[y0:y0 + h // k, x0:x0 + w // k] = small[:, : w - x0] > 0
            out[(k, f)] = o
    return out


def random_id(rng: random.Random) -> str:
    """A region id like the editor makes (10 characters)."""
    return "".join(rng.choices(string.ascii_letters + string.digits + "_-", k=10))


def prompt_regions(masks: dict, objects: int, size: tuple[int, int], rng: random.Random) -> list[dict]:
    """The prompts the annotator placed on frame 0, as LS sends (and we echo) them: a positive keypoint inside object 1,
    a rectangle around every further object."""
    w, h = size
    out = []
    for obj in range(1, objects + 1):
        ys, xs = np.nonzero(masks[(obj, 0)])
        if obj == 1:
            i = len(xs) // 2
            r = kit.point(random_id(rng), 0, 100 * (xs[i] + 0.5) / w, 100 * (ys[i] + 0.5) / h, size, label=LABEL)
        else:
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            r = kit.rect(random_id(rng), 0, 100 * x0 / w, 100 * y0 / h, 100 * (x1 - x0) / w, 100 * (y1 - y0) / h,
                         size, label=LABEL)
        r["origin"] = "manual"
        out.append(r)
    return out


def build_results(masks: dict, frames: int, objects: int, size: tuple[int, int], seed: int = 0) -> dict[str, list]:
    """{variant: LS result list} for the same masks (each mask RLE-encoded once, by our encoder): see VARIANTS."""
    rng = random.Random(seed)
    w, h = size
    prompts = prompt_regions(masks, objects, size, rng)
    ours, plain = list(prompts), []
    for f in range(frames):  # (frame, object) order, as TaskTracker emits them
        for obj in range(1, objects + 1):
            m = masks[(obj, f)]
            if not m.any():
                continue
            r = brush_result(brush_region_id(obj, f), "mask", "frames", f, m, LABEL, width=w, height=h,
                             meta_text=f"{LABEL} {obj}")
            ours.append(r)
            p = {k: v for k, v in r.items() if k not in ("meta", "origin")}
            p["id"] = random_id(rng)
            plain.append(p)
    brush = ours[len(prompts):]
    return {
        "ours": ours, "plain": plain,
        "ours_nometa": prompts + [{k: v for k, v in r.items() if k != "meta"} for r in brush],
        "ours_noprompts": brush,
        "ours_randids": prompts + [{**r, "id": random_id(rng)} for r in brush],
    }


# ---- Label Studio --------------------------------------------------------------------------------
def setup_ls(work: Path, clip: Path, masks_dir: Path, frames: int, objects: int, variants: list[str]):
    """Start LS, create the project, one task per variant and their predictions -> (server, project,
    {variant: (task, results)}, (width, height))."""
    media = work / "media"
    t = time.monotonic()
    size = kit.extract_frames(clip, media / "frames", frames)
    masks = load_masks(masks_dir, frames, objects, size)
    results = build_results(masks, frames, objects, size)
    log.info("frames and %d masks ready in %.1f s", len(masks), time.monotonic() - t)
    server = start_label_studio(work / "data", media, db_template=True)
    try:
        api = server.api
        project = api.create_project("editor open benchmark", FRAMES_CONFIG)
        api.add_local_storage(project, media / "frames", sync=False)
        urls = frame_urls("frames", frames)
        task_ids = api.import_tasks(project, [{"frames": urls, "variant": v} for v in variants])
        tasks = {}
        for v, task in zip(variants, task_ids):
            api.call("POST", "/api/predictions/",
                     json={"task": task, "result": results[v], "model_version": "editor-open-bench"})
            tasks[v] = (task, results[v])
        for v, (task, res) in tasks.items():
            stored = api.predictions(task)
            if len(stored) != 1 or len(stored[0]["result"]) != len(res):
                raise RuntimeError(f"LS holds {len(stored)} predictions for task {task} ({v}), "
                                   f"expected 1 of {len(res)} results")
    except BaseException:
        server.stop()
        raise
    return server, project, tasks, size


def run_browser(url: str, project: int, tasks: dict, args, out_dir: Path) -> dict:
    spec = ",".join(f"{v}:{task}:{len(res)}" for v, (task, res) in tasks.items())
    cmd = ["node", str(JS), "--url", url, "--project", str(project), "--tasks", spec, "--runs", str(args.runs),
           "--warmup", str(args.warmup), "--out", str(out_dir), "--objects", str(args.objects),
           "--timeout", str(args.timeout)] + (["--no-profile"] if args.no_profile else [])
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "LS_USER": LS_USER, "LS_PASSWORD": LS_PASSWORD}
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env, timeout=args.timeout + 60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"editor_open.js exited {proc.returncode} without a JSON summary: {proc.stdout[-2000:]}")
    summary = json.loads(lines[-1])
    if proc.returncode != 0 or not summary.get("ok"):
        raise RuntimeError(f"editor_open.js failed: {summary.get('error')} (screenshots in {out_dir})")
    return summary


# ---- report ---------------------------------------------------------------------------------------
def stats(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(browser: dict, tasks: dict) -> dict:
    out = {}
    for v, (task, res) in tasks.items():
        runs = [r for r in browser["runs"] if r["variant"] == v]
        out[v] = {
            "task": task, "regions": len(res), "result_json_bytes": len(json.dumps(res)),
            "brush_regions": sum(r["type"] == "brushlabels" for r in res),
            "metrics": {k: stats([r.get(k) for r in runs]) for k, _, _ in METRICS},
        }
    base = out["plain"]["metrics"]
    out["vs_plain"] = {v: {k: (out[v]["metrics"][k]["median"] - base[k]["median"])
                           if out[v]["metrics"][k]["n"] and base[k]["n"] else None for k, _, _ in METRICS}
                       for v in tasks if v != "plain"}
    return out


def print_table(summary: dict, tasks: dict, profiles: dict) -> None:
    print(f"{'variant':14} {'metric':11} {'median':>9} {'min':>9} {'max':>9}  unit")
    for v in tasks:
        s = summary[v]
        for key, title, unit in METRICS:
            m = s["metrics"][key]
            if not m["n"]:
                continue
            fmt = (lambda x: f"{x:9.0f}") if unit == "ms" else (lambda x: f"{x:9.1f}")
            print(f"{v:14} {title:11} {fmt(m['median'])} {fmt(m['min'])} {fmt(m['max'])}  {unit}")
        print(f"{v:14} {'regions':11} {s['regions']:9d}   result JSON {s['result_json_bytes'] / 1e6:.2f} MB")
    base = summary["plain"]["metrics"]
    for v, d in summary["vs_plain"].items():
        print(f"{v} - plain (medians): " + ", ".join(
            f"{t} {d[k]:+.0f} ms ({100 * d[k] / base[k]['median']:+.0f}%)" if u == "ms" else f"{t} {d[k]:+.1f} MB"
            for k, t, u in METRICS if d[k] is not None and base[k]["median"]))
    for v, p in profiles.items():
        top = ", ".join(f"{name} {ms:.0f}" for name, ms in p["top_inclusive_named"][1:7])
        print(f"profile {v} (one open, ready {p['ready_ms']:.0f} ms): inclusive ms: {top}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="counted opens per variant")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted opens per variant first")
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--masks", type=Path, help="mask PNG folder (default: <clip stem>_masks next to the clip)")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "editor_open", help="screenshots")
    ap.add_argument("--json", type=Path, help="write the figures and every run here")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for the browser part")
    ap.add_argument("--variants", default="ours,plain",
                    help="comma-separated, from: " + "; ".join(f"{k} = {v}" for k, v in VARIANTS.items()))
    ap.add_argument("--no-profile", action="store_true", help="skip the extra CPU-profiled open per variant")
    ap.add_argument("--keep", action="store_true", help="keep the LS data dir (printed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    masks_dir = args.masks or args.clip.with_name(args.clip.stem + "_masks")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.frames < 6 or args.objects < 1 or args.runs < 1:
        ap.error("need --frames >= 6 (the pager steps 5 frames), --objects >= 1, --runs >= 1")
    if "plain" not in variants or not set(variants) <= set(VARIANTS) or len(set(variants)) != len(variants):
        ap.error(f"--variants must list distinct names from {', '.join(VARIANTS)}, plain included")
    if not (NODE_MODULES / "playwright-core").is_dir():
        ap.error(f"{NODE_MODULES}/playwright-core is missing: run `bash scripts/install_browser.sh`")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="editor-open-"))
    load0 = os.getloadavg()[0]
    server = None
    try:
        server, project, tasks, size = setup_ls(work, args.clip, masks_dir, args.frames, args.objects,
                                                variants)
        log.info("LS at %s, project %d, tasks %s", server.url, project, {v: t for v, (t, _) in tasks.items()})
        browser = run_browser(server.url, project, tasks, args, args.out)
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            log.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(browser, tasks)
    print(f"load average (1 min) at start {load0:.1f}, at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print_table(summary, tasks, browser.get("profiles", {}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "config": {"frames": args.frames, "objects": args.objects, "runs": args.runs, "warmup": args.warmup,
                       "variants": {v: VARIANTS[v] for v in variants},
                       "clip": str(args.clip), "size": list(size)},
            "machine": {"logical_cores": os.cpu_count(), "load_avg_1m": [load0, os.getloadavg()[0]],
                        "python": platform.python_version(), "browser": browser.get("browser_version")},
            "summary": summary, "runs": browser["runs"], "warmup_runs": browser.get("warmup_runs", []),
            "checks": browser.get("checks", {}), "screenshots": browser.get("screenshots", {}),
            "profiles": browser.get("profiles", {}),
        }
        args.json.write_text(json.dumps(report, indent=1))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
