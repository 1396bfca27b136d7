"""Would a smaller answer lose what the annotator sees? In the real LS 1.23.2 editor (headless Chromium,
tests/browser/annotate.js --later-drop): a Car keypoint on frame 1 (its answer's masks land in the editor), wait until
the track is done and the editor autosaved its draft, then a Person keypoint whose answer reaches the editor WITHOUT any Car mask (the browser drops them
from the response, as an answer carrying only what is new would). Recorded: the editor's brush regions before and
after that answer (artifacts/browser/partial-answer/summary.json). Finding: the editor keeps them; the answer stays
complete all the same, because the request does not say what the editor holds (last test).
"""
from __future__ import annotations


import pytest

from tests.e2e.frames_setup import create_frames_project
from tests.e2e.test_browser import BROWSER_DIR, REPO, node, run_annotate  # noqa: F401  (node is a fixture)

ARTIFACTS = REPO / "artifacts" / "browser" / "partial-answer"
N = 12
SCRIPT_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def project(label_studio, backend_instant, clips_dir):
    return create_frames_project(label_studio.api, label_studio.media_root, clips_dir / "box.mp4",
                                 backend_instant.url, count=N, folder="box-partial", title="browser partial answer")


@pytest.fixture(scope="module")
def observed(node, label_studio, project) -> dict:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("*.png"), ARTIFACTS / "summary.json", ARTIFACTS / "annotate.log"]:
        old.unlink(missing_ok=True)
    cmd = [node, str(BROWSER_DIR / "annotate.js"), "--url", label_studio.url, "--project", str(project.project),
           "--task", str(project.tasks[0]), "--out", str(ARTIFACTS), "--frame", "6", "--label", "Car",
           "--later-label", "Person", "--later-point", "80,20", "--later-drop", "Car",
           "--timeout", str(SCRIPT_TIMEOUT_S)]
    return run_annotate(cmd, ARTIFACTS, SCRIPT_TIMEOUT_S, label_studio)


def test_the_scenario_is_informative(observed):
    before = [i for i in observed["brush_ids_before_later_click"] if i.startswith("sam2-1-")]
    assert before, "the first answer put no Car mask into the editor: nothing to lose"
    assert observed["partial_answer"]["results_delivered"] < observed["partial_answer"]["results_sent"]
    assert observed["interactive"]["labels"] == ["Person"], observed["interactive"]


def test_the_editor_keeps_masks_a_later_answer_leaves_out(observed):
    """Measured in LS 1.23.2 with Auto-Accept on: an accepted mask stays in the annotation (and is drawn) when a later
    answer does not carry it; a later answer replaces masks by region id and adds new ones, it does not prune."""
    before = {i for i in observed["brush_ids_before_later_click"] if i.startswith("sam2-1-")}
    after = set(observed["brush_ids_after_partial_answer"])
    assert before <= after, (before, after)
    assert "sam2-2-0" in after  # the later answer itself arrived
    on_frame_1 = observed["frames"]["partial_1"]
    assert "sam2-1-0" in on_frame_1["brush_region_ids"] and on_frame_1["brush_layer_pixels"] > 0


def test_the_context_does_not_say_which_masks_the_editor_holds(observed):
    """Why the answer stays complete anyway: the editor's request carries only the clicked label's keypoints, none of
    our masks, so the backend cannot tell what this editor (or another one open on the task, or one reopened from an
    older prediction) already shows; an answer of only what changed since our previous answer would leave gaps there."""
    assert observed["interactive"]["context"] == [
        {"type": "keypointlabels", "item_index": 0, "is_positive": True, "labels": ["Person"]}]
