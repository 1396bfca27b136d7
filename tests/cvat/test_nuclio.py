"""The nuclio function as deploy.sh stages it, run through nuclio_sdk's test platform in a clean process.

The staged folder is what `nuctl deploy` builds into the image; importing it with only that folder on sys.path
proves the function carries everything it needs. Its answers must equal the in-process tracker's.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cvat.test_tracker import as_cvat

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "serverless" / "sam2-tracker"

RUNNER = r"""
import json, sys
sys.path.insert(0, ".")  # the staged folder only (python -I leaves out the repo and PYTHONPATH)
import nuclio_sdk
from nuclio_sdk.test import Platform
import main

platform = Platform()
out = []
for body, as_bytes in json.load(sys.stdin):
    if isinstance(body, dict) and body.get("states") == "PREV":  # continue from the previous answer, as CVAT does
        body = {**body, "states": json.loads(json.dumps(out[-1][2]["states"], separators=(",", ":")))}
    payload = json.dumps(body).encode() if as_bytes else body  # nuclio hands JSON bodies over decoded
    if isinstance(body, str):
        payload = body.encode()
    event = nuclio_sdk.Event(body=payload, content_type="application/json", method="POST", path="/")
    r = platform.call_handler(main.handler, event)
    out.append([r.status_code, r.content_type, json.loads(r.body)])
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def staged(tmp_path_factory, model_128_f32):
    stage = tmp_path_factory.mktemp("nuclio-stage")
    subprocess.run(["bash", str(FUNCTION / "deploy.sh"), str(model_128_f32)], check=True, capture_output=True,
                   env={**os.environ, "STAGE_ONLY": str(stage)})
    return stage


def run_function(stage: Path, calls: list, **env) -> list:
    """Feed `calls` ([body, as_bytes]) to the staged handler in a fresh interpreter that sees only the stage."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL_DIR")}
    (stage / "runner.py").write_text(RUNNER)
    proc = subprocess.run([sys.executable, "-I", "runner.py"],
                          cwd=stage, input=json.dumps(calls), capture_output=True, text=True, timeout=900,
                          env={**clean, "MODEL_DIR": str(stage / "model"), "PRECISION": "f32", **env})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT "):])


def test_deploy_stages_a_self_contained_function(staged):
    names = sorted(p.name for p in staged.iterdir())
    assert names == ["backend", "function.yaml", "main.py", "model", "requirements.txt"]
    assert sorted(p.name for p in (staged / "backend").iterdir()) == \
        ["__init__.py", "cvat", "engine", "serving", "settings.py"]
    assert (staged / "model" / "manifest.json").is_file()
    spec = (staged / "function.yaml").read_text()
    for needle in ("type: tracker", "supported_shape_types: rectangle,polygon,mask", "maxRequestBodySize:",
                   "handler: main:handler", "numWorkers: 1"):
        assert needle in spec


def test_handler_tracks_like_the_service(staged, clip, make_tracker):
    start = {"image": clip.b64[0], "shapes": [{"type": "rectangle", "points": [200, 100, 420, 380]},
                                              {"type": "mask", "points": [0, 50 * 40, 100, 100, 149, 139]}],
             "states": []}
    calls = [[start, False]] + [[{"image": clip.b64[k], "shapes": [None, None], "states": "PREV"}, k % 2 == 0]
                                for k in (1, 2, 3)]
    first = run_function(staged, calls)
    assert [o[:2] for o in first] == [[200, "application/json"]] * 4
    local = make_tracker()
    mine = [local.track(start)]
    for k in (1, 2, 3):
        mine.append(local.track({"image": clip.b64[k], "shapes": [None, None], "states": as_cvat(mine[-1]["states"])}))
    assert [o[2]["shapes"] for o in first] == [m["shapes"] for m in mine]
    assert [s["frame"] for s in first[-1][2]["states"]] == [3, 3]
    # a new process has no sessions (the restart case): a continue call re-initialises and still answers
    states = first[0][2]["states"]
    restarted = run_function(staged, [[{"image": clip.b64[1], "shapes": [None, None], "states": as_cvat(states)},
                                       True]])
    assert restarted[0][0] == 200 and [s["frame"] for s in restarted[0][2]["states"]] == [0, 0]
    assert None not in restarted[0][2]["shapes"]


def test_handler_errors_are_json_4xx(staged, clip):
    calls = [
        [{"image": "@@not base64@@", "shapes": [[1, 2, 3, 4]], "states": []}, False],
        [{"image": clip.b64[0], "shapes": [None], "states": [{"v": 1, "session": 3}]}, True],
        ["{not json", True],
        [{"image": clip.b64[0], "shapes": [[1, 2, 3, 4]], "states": []}, True],  # 640x480 > 0.1 MPix
        [{"image": "A" * 1_200_000, "shapes": [[1, 2, 3, 4]], "states": []}, True],  # > 1 MB body
    ]
    out = run_function(staged, calls, CVAT_MAX_IMAGE_MPIX="0.1", CVAT_MAX_BODY_MB="1")
    assert [o[0] for o in out] == [400, 400, 400, 413, 413]
    assert "base64" in out[0][2]["error"] and "malformed" in out[1][2]["error"]
    assert "JSON" in out[2][2]["error"] and "640x480" in out[3][2]["error"] and "CVAT_MAX_BODY_MB" in out[4][2]["error"]
