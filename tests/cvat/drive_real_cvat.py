"""Drive a real CVAT server's lambda API with the UI's exact tracker bodies (a manual check, not a pytest test).

CVAT must be configured to reach our service's nuclio-dashboard endpoints (CVAT_NUCLIO_HOST/PORT,
CVAT_NUCLIO_INVOKE_METHOD=dashboard; see README "CVAT"). This script creates a video task, then does what the
annotation UI does when an annotator tracks with AI Tools -> Trackers (cvat-ui tools-control.tsx, 2.73.0):
``init_tracking`` on the frame the box was drawn, then ``track`` one frame at a time with the signed states CVAT
returned, and the REST-only polygon and mask tracking. It checks every answer, and that CVAT's answers equal the
tracker run in this process on the frames CVAT serves (same model).

    python -m tests.cvat.drive_real_cvat --cvat http://127.0.0.1:8080 --user admin --password ... \
        --video /work/shared/clips/cup.mp4 --frames 12 --model-dir .cache/models/<the service's model>
"""
from __future__ import annotations

import argparse
import base64
import sys
import time
from dataclasses import replace

import requests

FUNCTION = "sam2-tracker"


def wait_request(s: requests.Session, cvat: str, rq_id: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = s.get(f"{cvat}/api/requests/{rq_id}")
        r.raise_for_status()
        status = r.json()["status"]
        if status == "finished":
            return
        if status == "failed":
            raise RuntimeError(f"CVAT request {rq_id} failed: {r.json().get('message')}")
        time.sleep(1)
    raise TimeoutError(f"CVAT request {rq_id} did not finish in {timeout_s} s")


def create_video_task(s: requests.Session, cvat: str, video: str) -> tuple[int, int]:
    r = s.post(f"{cvat}/api/tasks", json={"name": f"sam2 tracker check {time.strftime('%H:%M:%S')}",
                                          "labels": [{"name": "object", "type": "any"}]})
    r.raise_for_status()
    task = r.json()["id"]
    with open(video, "rb") as f:
        r = s.post(f"{cvat}/api/tasks/{task}/data", data={"image_quality": 95, "sorting_method": "natural"},
                   files={"client_files[0]": (video.rsplit("/", 1)[-1], f, "video/mp4")})
    r.raise_for_status()
    wait_request(s, cvat, r.json()["rq_id"])
    jobs = s.get(f"{cvat}/api/jobs", params={"task_id": task}).json()["results"]
    return task, jobs[0]["id"]


def call(s: requests.Session, cvat: str, body: dict) -> dict:
    r = s.post(f"{cvat}/api/lambda/functions/{FUNCTION}", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"POST /api/lambda/functions/{FUNCTION} -> {r.status_code}: {r.text[:500]}")
    return r.json()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cvat", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--model-dir", help="the service's model: also track in-process and compare")
    args = ap.parse_args(argv)
    s = requests.Session()
    s.auth = (args.user, args.password)
    cvat = args.cvat.rstrip("/")

    listed = {f["id"]: f for f in s.get(f"{cvat}/api/lambda/functions").json()}
    fn = listed.get(FUNCTION)
    assert fn and fn["kind"] == "tracker", f"CVAT does not list {FUNCTION} as a tracker: {sorted(listed)}"
    assert "rectangle" in fn["supported_shape_types"], fn
    print(f"CVAT lists {FUNCTION}: kind={fn['kind']} shapes={fn['supported_shape_types']} version={fn['version']}")

    task, job = create_video_task(s, cvat, args.video)
    meta = s.get(f"{cvat}/api/tasks/{task}/data/meta").json()
    print(f"task {task} job {job}: {meta['size']} frames {meta['frames'][0]['width']}x{meta['frames'][0]['height']}")

    box = [220.0, 120.0, 420.0, 400.0]
    poly = [250.0, 140.0, 400.0, 140.0, 410.0, 380.0, 260.0, 390.0]
    mask_shape = {"type": "mask", "points": [0, 100 * 80, 300, 200, 399, 279]}  # a filled 100x80 block
    # the UI: init_tracking on the drawn frame with {type, points}, then track with the states it got back
    ui = call(s, cvat, {"type": "init_tracking", "frame": 0, "shapes": [{"type": "rectangle", "points": box}],
                        "job": job, "task": task})
    api = call(s, cvat, {"frame": 0, "shapes": [{"type": "polygon", "points": poly}, mask_shape], "task": task})
    answers = {0: (ui["shapes"], api["shapes"])}
    box2 = [40.0, 60.0, 200.0, 260.0]
    for frame in range(1, args.frames):
        if frame == 3:  # the annotator draws a second object on frame 2: the UI starts it there, then tracks both
            second = call(s, cvat, {"type": "init_tracking", "frame": 2, "shapes": [{"type": "rectangle",
                                                                                      "points": box2}],
                                    "job": job, "task": task})
            ui["states"] = ui["states"] + second["states"]
        ui = call(s, cvat, {"type": "track", "frame": frame, "states": ui["states"], "job": job, "task": task})
        api = call(s, cvat, {"frame": frame, "states": api["states"], "task": task})
        for reply in (ui, api):
            assert len(reply["shapes"]) == len(reply["states"]) and None not in reply["shapes"], reply
            assert all(isinstance(st, str) for st in reply["states"]), "CVAT signs states"
        assert len(ui["shapes"]) == (1 if frame < 3 else 2)
        assert all(sh["type"] == "rectangle" and len(sh["points"]) == 4 for sh in ui["shapes"])
        assert [sh["type"] for sh in api["shapes"]] == ["polygon", "mask"]
        answers[frame] = (ui["shapes"], api["shapes"])
        print(f"frame {frame}: rectangles {[[round(v, 1) for v in sh['points']] for sh in ui['shapes']]}, "
              f"polygon {len(api['shapes'][0]['points']) // 2} vertices, mask {len(api['shapes'][1]['points'])} runs")
    r = s.post(f"{cvat}/api/lambda/functions/{FUNCTION}",
               json={"type": "track", "frame": 2, "states": ["forged"], "job": job, "task": task})
    print(f"forged state -> {r.status_code} {r.text[:120]}")
    assert r.status_code == 400

    if args.model_dir:  # the same calls in-process on the frames CVAT serves: CVAT must not change a thing
        from backend.cvat.tracker import CvatTracker
        from backend.engine import EngineSettings, VideoPredictor
        from backend.settings import CvatSettings

        predictor = VideoPredictor(EngineSettings(model_dir=args.model_dir, precision="f32"))
        local = CvatTracker(replace(CvatSettings()), lambda t: predictor)

        def frame_b64(k):
            r = s.get(f"{cvat}/api/tasks/{task}/data", params={"type": "frame", "number": k, "quality": "original"})
            r.raise_for_status()
            return base64.b64encode(r.content).decode()

        mine_ui = local.track({"image": frame_b64(0), "shapes": [{"type": "rectangle", "points": box}], "states": []})
        mine_api = local.track({"image": frame_b64(0), "shapes": [{"type": "polygon", "points": poly}, mask_shape],
                                "states": []})
        same = mine_ui["shapes"] == answers[0][0] and mine_api["shapes"] == answers[0][1]
        for k in range(1, args.frames):
            img = frame_b64(k)
            if k == 3:
                extra = local.track({"image": frame_b64(2), "shapes": [{"type": "rectangle", "points": box2}],
                                     "states": []})
                mine_ui["states"] = mine_ui["states"] + extra["states"]
            mine_ui = local.track({"image": img, "shapes": [None] * len(mine_ui["states"]),
                                   "states": mine_ui["states"]})
            mine_api = local.track({"image": img, "shapes": [None, None], "states": mine_api["states"]})
            same &= mine_ui["shapes"] == answers[k][0] and mine_api["shapes"] == answers[k][1]
        print(f"in-process tracker on CVAT's frames gives the same shapes: {same}")
        if not same:
            return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
