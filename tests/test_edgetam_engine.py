"""The product's engine behaviours on an EdgeTAM export: the re-tracking / click-cache / prewarm suite, unchanged.

tests/test_engine_retrack.py's tests run here again with its model fixture bound to EdgeTAM's random-init export
(256 px, token memories): re-track only the changed object (others bit-identical, their memory attention not
run), a new object tracked both ways alone, a cancelled pass, clicks on tracked frames that skip memory attention
and equal a recompute, prewarm only while no propagation runs. Spill to disk, corrections and reverse passes are
compared with EdgeTAM's own predictor in tests/test_edgetam_parity.py.
"""
from __future__ import annotations

import pytest

from backend.engine import EngineSettings, VideoPredictor
from tests import models
from tests.test_engine_retrack import (  # noqa: F401  (collected here, with this module's fixtures)
    frames,
    test_a_cancelled_pass_leaves_exactly_the_rest_pending,
    test_click_latency_measures_the_cached_paths,
    test_click_on_a_tracked_frame_skips_memory_attention_and_is_exact,
    test_correction_of_one_object_retracks_it_alone,
    test_new_object_after_propagation_tracks_only_it_both_ways,
    test_prewarm_encodes_ahead_only_while_no_propagation_runs,
    test_prompts_on_two_frames_of_a_new_object_track_it_once,
)

pytestmark = pytest.mark.skipif(
    not models.EDGETAM_PYTHON.exists(),
    reason=f"!!! EdgeTAM venv missing ({models.EDGETAM_PYTHON}) to export the test model: run "
           f"`bash scripts/install_edgetam_export.sh` - EdgeTAM engine behaviour is NOT tested !!!")


@pytest.fixture(scope="module")
def model_128_f32():
    """The name the imported tests ask for; here EdgeTAM's export (the smallest size its perceiver allows)."""
    path = models.export_dir(256, "f32", bias=models.EDGETAM_OBJECT_SCORE_BIAS, model="edgetam")  # objects present
    assert models.manifest(path)["memory"]["layout"] == "tokens"
    return path


@pytest.fixture(scope="module")
def eng(model_128_f32):
    return VideoPredictor(EngineSettings(model_dir=model_128_f32, precision="f32"))


def test_the_app_serves_an_edgetam_export_with_only_model_dir_changed(media, model_128_f32, tmp_path):
    """MODEL_DIR is all a user changes: /health names the model, LS gets EdgeTAM's own model_version, and a
    `<Video>` task is tracked through the unchanged Label Studio adapter."""
    from backend.app import create_app
    from backend.settings import Settings
    from tests import appkit as kit

    root, _ = media
    app = create_app(Settings.from_env({
        "MODEL_DIR": str(model_128_f32), "LOCAL_FILES_DOCUMENT_ROOT": str(root), "PRECISION": "f32",
        "MEDIA_CACHE_DIR": str(tmp_path / "cache"), "DATA_DIR": str(tmp_path / "d"),
        "PREDICT_TIME_BUDGET_S": "90", "INTERACTIVE_WAIT_S": "90"}))
    try:
        client = app.test_client()
        kit.wait_ready(client)
        health = client.get("/health").get_json()
        assert health["model"] == "edgetam" and health["state"] == "ready", health
        version = health["model_version"]
        assert version.startswith("edgetam-f32-256-") and version.endswith("-random"), version
        task = {"id": 1301, "data": {"video": "/data/local-files/?d=cup.mp4"}}
        rect = {"id": "objA", "from_name": "box", "to_name": "video", "type": "videorectangle", "origin": "manual",
                "value": {"framesCount": kit.N, "duration": kit.N / 25, "labels": ["Car"],
                          "sequence": [{"frame": 1, "enabled": True, "rotation": 0, "x": 30, "y": 20, "width": 40,
                                        "height": 60, "time": 1 / 25}]}}
        resp = kit.predict(client, task, kit.VIDEO_CONFIG, [rect])
        assert resp.status_code == 200, resp.get_json()
        kit.wait_job(client, 1301)
        pred = kit.predict(client, task, kit.VIDEO_CONFIG, None).get_json()["results"][0]
        assert pred["model_version"] == version
        (r,) = pred["result"]
        assert r["id"] == "objA" and len(r["value"]["sequence"]) >= 2  # the prompt and tracked keyframes
    finally:
        app.config["SERVICE"].shutdown()
