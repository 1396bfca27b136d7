"""How the annotator sees the propagated masks with the product's defaults (issue 10, item 2), in the real LS 1.23.2
editor (headless Chromium, tests/browser/annotate.js --later-label).

A click answers once its frame is ready (INTERACTIVE_WAIT_S=0): the editor gets the clicked frame at once and tracking
goes on in the backend, which writes the whole track into LS as its prediction. The editor does not load that
prediction by itself (LS shows predictions when a task is opened). The next click brings it: its answer carries every
frame tracked by then, and the editor shows masks on later frames without reopening the task. Here: a Car keypoint on
frame 1, wait until the backend's prediction in LS holds every frame and the editor has autosaved its draft (LS does
that 5 s after the last change; a 1024 px track takes far longer), then a Person keypoint on frame 1 (a second
object); the editor's region store then has Car masks on every frame and frame K is drawn (screenshot in
artifacts/browser/later-click/).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.frames_setup import create_frames_project
from tests.e2e.test_browser import BROWSER_DIR, REPO, node, run_annotate  # noqa: F401  (node is a fixture)

ARTIFACTS = REPO / "artifacts" / "browser" / "later-click"
N = 24
K = 18  # a frame far from the click, 1-based as in the pager
SCRIPT_TIMEOUT_S = 420
# the second click lands on the box, next to the first (72,30); with random weights the first object's mask on frame 1
# covers most of the frame but not the box, and a click on a mask would not be a click on the image


@pytest.fixture(scope="module")
def project(label_studio, backend_instant, clips_dir):
    return create_frames_project(label_studio.api, label_studio.media_root, clips_dir / "box.mp4",
                                 backend_instant.url, count=N, folder="box-later", title="browser later click")


@pytest.fixture(scope="module")
def annotated(node, label_studio, project) -> dict:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("*.png"), ARTIFACTS / "summary.json", ARTIFACTS / "annotate.log"]:
        old.unlink(missing_ok=True)
    cmd = [node, str(BROWSER_DIR / "annotate.js"), "--url", label_studio.url, "--project", str(project.project),
           "--task", str(project.tasks[0]), "--out", str(ARTIFACTS), "--frame", str(K), "--label", "Car",
           "--later-label", "Person", "--later-point", "80,20", "--timeout", str(SCRIPT_TIMEOUT_S)]
    return run_annotate(cmd, ARTIFACTS, SCRIPT_TIMEOUT_S, label_studio)


def test_the_first_click_answers_with_its_frame_before_tracking_is_done(annotated):
    first = annotated["first_interactive"]
    assert first["status"] == 200 and 0 in first["item_indices"]
    assert first["context"] == [{"type": "keypointlabels", "item_index": 0, "is_positive": True, "labels": ["Car"]}]
    # the product's default: the answer did not wait for the whole track (else this scenario shows nothing)
    assert len(first["item_indices"]) < N, first
    # the whole track then reached LS as the backend's prediction, while the editor still held only the first answer
    assert annotated["tracking_done_frames"] == N
    before = {int(i) for i in annotated["regions_before_later_click"]["brush_by_item_index"]}
    assert before <= set(first["item_indices"]) and (K - 1) not in before


def test_a_later_click_brings_every_frame_tracked_by_then(annotated):
    # LS sent the annotator's draft with the request: that is how the backend knows the click is this annotation's
    assert annotated["draft_before_later_click"]["id"] > 0
    later = annotated["interactive"]
    assert later["status"] == 200
    # LS sends only the new label's keypoints; the backend answers with every object's frames
    assert later["context"] == [{"type": "keypointlabels", "item_index": 0, "is_positive": True, "labels": ["Person"]}]
    assert set(later["item_indices"]) == set(range(N))
    assert "Car" in later["labels"]


def test_the_editor_shows_masks_on_later_frames_without_reopening(annotated):
    by_item = {int(i): n for i, n in annotated["regions"]["brush_by_item_index"].items()}
    assert set(by_item) == set(range(N)), by_item  # regions with item_index > 0 are in LS's region store
    seen = annotated["frames"][str(K)]
    assert seen["pager"] == f"{K} of {N}" and seen["item_index"] == K - 1
    assert seen["brush_regions_on_item"] >= 1 and f"sam2-1-{K - 1}" in seen["brush_region_ids"]
    assert seen["brush_layer_pixels"] > 0, f"nothing drawn on frame {K}"
    shot = Path(annotated["screenshots"][f"frame_{K}"])
    assert shot.is_file() and shot.parent == ARTIFACTS
    assert annotated["page_errors"] == []
