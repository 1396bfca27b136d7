"""The real Label Studio 1.23.2 editor in headless Chromium against the backend (tests/browser/annotate.js).

An annotator's path through the UI: Auto-Annotation on, the smart Key Point tool with label "Car", one click on frame 1
of a 24-frame `<Image valueList>` task; LS calls the backend through /api/ml/{id}/interactive-annotating, and the
brush regions it returns (masks as PNG data URLs, the default) must be listed and drawn on frame 1 and on frame K
(reached with the image pager), then be submitted with `item_index` per frame, as RLE of exactly our masks. Needs
node, tests/browser/node_modules and Chromium: `bash scripts/install_browser.sh`. Screenshots and the script's JSON summary go to artifacts/browser/.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import appkit as kit
from tests.e2e.frames_setup import create_frames_project

REPO = Path(__file__).resolve().parents[2]
BROWSER_DIR = REPO / "tests" / "browser"
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
N = 24  # frames in the task (box.mp4)
K = 6  # the later frame checked in the editor, 1-based as in the pager
SCRIPT_TIMEOUT_S = 300  # annotate.js gives up by itself after this; the subprocess is killed 60 s later


def run_annotate(cmd: list[str], artifacts: Path, timeout_s: int, label_studio) -> dict:
    """Run tests/browser/annotate.js (`cmd`), keep its stderr and JSON summary in `artifacts`, return the summary;
    fails with the script's own message, the screenshots' folder and LS's log tail."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s + 60,
                              env={**os.environ, "CHROMIUM": CHROMIUM})
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"annotate.js did not finish in {timeout_s + 60} s; stderr:\n{exc.stderr}", pytrace=False)
    (artifacts / "annotate.log").write_text(proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    (artifacts / "summary.json").write_text(json.dumps(summary, indent=2))
    assert proc.returncode == 0 and summary.get("ok"), (
        f"annotate.js exited {proc.returncode}: {summary.get('error', 'no JSON summary')}\n"
        f"stderr tail:\n{proc.stderr[-3000:]}\nscreenshots in {artifacts}\nLS log tail:\n{label_studio.log_tail(2000)}")
    return summary


def _playwright_installed() -> bool:
    """node_modules holds the playwright-core version that package-lock.json pins."""
    lock = json.loads((BROWSER_DIR / "package-lock.json").read_text())
    want = lock["packages"]["node_modules/playwright-core"]["version"]
    installed = BROWSER_DIR / "node_modules" / "playwright-core" / "package.json"
    return installed.is_file() and json.loads(installed.read_text())["version"] == want


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None or not Path(CHROMIUM).is_file():
        pytest.fail(f"node or Chromium ({CHROMIUM}) is missing; run `bash scripts/install_browser.sh`.", pytrace=False)
    if not _playwright_installed():
        npm = shutil.which("npm")
        proc = None if npm is None else subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True, text=True, timeout=600)
        if proc is None or proc.returncode != 0 or not _playwright_installed():
            detail = "npm not found" if proc is None else (proc.stdout + proc.stderr)[-2000:]
            pytest.fail(f"could not install tests/browser/node_modules ({detail}); "
                        "run `bash scripts/install_browser.sh`.", pytrace=False)
    return node


@pytest.fixture(scope="module")
def project(label_studio, backend, clips_dir):
    return create_frames_project(label_studio.api, label_studio.media_root, clips_dir / "box.mp4", backend.url,
                                 count=N, folder="box", title="browser e2e")


@pytest.fixture(scope="module")
def annotated(node, label_studio, project) -> dict:
    """Run annotate.js once (with --submit); returns its JSON summary. Fails with the script's own message."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("*.png"), ARTIFACTS / "summary.json", ARTIFACTS / "annotate.log"]:
        old.unlink(missing_ok=True)
    cmd = [node, str(BROWSER_DIR / "annotate.js"), "--url", label_studio.url, "--project", str(project.project),
           "--task", str(project.tasks[0]), "--out", str(ARTIFACTS), "--frame", str(K), "--submit",
           "--timeout", str(SCRIPT_TIMEOUT_S)]
    return run_annotate(cmd, ARTIFACTS, SCRIPT_TIMEOUT_S, label_studio)


def test_editor_gets_the_masks_through_interactive_annotating(annotated):
    inter = annotated["interactive"]
    assert inter["status"] == 200 and inter["brush_results"] == N
    assert inter["item_indices"] == list(range(N))
    # what the editor sent: the smart keypoint on frame 1 (item_index 0), positive, label Car
    assert inter["context"] == [{"type": "keypointlabels", "item_index": 0, "is_positive": True, "labels": ["Car"]}]
    assert annotated["tool"] == {"name": "KeyPointTool", "dynamic": True}
    assert annotated["page_errors"] == []
    # the product default (INTERACTIVE_MASK_FORMAT=png): the editor got PNG data URLs, which the next tests see drawn
    # and submitted as RLE equal to our stored prediction
    assert inter["mask_forms"] == ["maskDataURL"]


def test_region_list_has_one_brush_region_per_frame(annotated):
    regions = annotated["regions"]
    assert regions["by_type"] == {"brushregion": N, "keypointregion": 1}  # the clicked point stays, echoed back
    assert regions["brush_by_item_index"] == {str(i): 1 for i in range(N)}
    assert regions["outliner_rows"] == N + 1 and regions["outliner_max_index"] == N + 1
    for frame in ("1", str(K)):
        seen = annotated["frames"][frame]
        assert seen["pager"] == f"{frame} of {N}"
        assert seen["item_index"] == int(frame) - 1
        assert seen["brush_regions_on_item"] == 1 and seen["brush_region_ids"] == [f"sam2-1-{int(frame) - 1}"]
        assert seen["brush_layer_pixels"] > 0, f"nothing drawn on the brush layer of frame {frame}"


def _image_area(path: Path, box: dict) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    x0, y0 = max(box["x"], 0), max(box["y"], 0)
    return img[y0:y0 + box["height"], x0:x0 + box["width"]]


@pytest.mark.parametrize("frame", [1, K])
def test_screenshots_show_a_mask_over_the_frame(annotated, frame):
    """The mask overlay changes a good part of the image area against the same frame before the click."""
    shots = annotated["screenshots"]
    before, after = Path(shots[f"before_{frame}"]), Path(shots[f"frame_{frame}"])
    assert before.is_file() and after.is_file() and before.parent == ARTIFACTS
    box = annotated["frames"][str(frame)]["image_box"]
    assert box == annotated["frames"][f"before_{frame}"]["image_box"], "the image moved between the screenshots"
    a, b = _image_area(before, box), _image_area(after, box)
    assert a.shape == b.shape and a.size > 0
    changed = np.abs(a - b).sum(axis=2) > 30
    brush_fraction = annotated["frames"][str(frame)]["brush_layer_fraction"]
    assert changed.mean() > 0.02, f"frame {frame}: only {changed.mean():.1%} of the image area changed"
    # the changed area is about what the brush layer covers (overlay alpha is partial: similar colours may not change)
    assert changed.mean() > 0.3 * brush_fraction, (changed.mean(), brush_fraction)


def test_submitted_annotation_and_prediction_carry_item_index(label_studio, project, annotated, backend):
    api = label_studio.api
    task = project.tasks[0]
    width, height = project.size
    annotations = api.get_task(task)["annotations"]
    assert [a["id"] for a in annotations] == [annotated["annotation"]["id"]]
    submitted = kit.brushes(annotations[0]["result"])
    # the clicked keypoint stays in the annotation: the backend echoes its prompts (LS would drop them)
    assert [r["type"] for r in annotations[0]["result"] if r["type"] != "brushlabels"] == ["keypointlabels"]
    assert sorted(r["item_index"] for r in submitted) == list(range(N))
    for r in submitted:
        assert (r["from_name"], r["to_name"], r["value"]["brushlabels"]) == ("mask", "frames", ["Car"])
        assert (r["original_width"], r["original_height"]) == (width, height)
    masks = kit.masks_of(submitted)
    assert all(m.any() for m in masks.values())

    # the backend also wrote the track to LS as a prediction; the editor submitted exactly those masks
    preds = api.predictions(task)
    assert len(preds) == 1 and preds[0]["model_version"] == backend.get("/versions").json()["model_version"]
    predicted = kit.masks_of(preds[0]["result"])
    assert sorted(i for _, i in predicted) == list(range(N))
    assert predicted.keys() == masks.keys()
    assert all(np.array_equal(predicted[k], masks[k]) for k in masks)
