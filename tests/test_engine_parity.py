"""The engine against the official sam2 SAM2VideoPredictor on the same random-init weights and real clips.

Both read the same JPEG frames (the first 24 of each clip). The oracle runs
with `add_all_frames_to_correct_as_cond=True` (the engine's product default)
and without hole filling (sam2 skips it without its CUDA extension; the
engine's version is tested on its own in test_engine_numerics).
"""
from __future__ import annotations

import pytest

from tests import models
from tests.parity import Box, EngineRunner, Mask, OracleRunner, Points, Propagate, frame_agreement

N_FRAMES = 24
CLIPS = ("box", "cup", "carphone_pristine")
THRESHOLDS = {"f32": (0.99, 1e-3), "bf16": (0.97, 5e-2)}  # (min IoU, max relative logit error where degenerate)


def scenarios(clip_dir, clip):
    mid = N_FRAMES // 2
    return {
        "box_forward": [Box(0, 1, (0.3, 0.3, 0.6, 0.7)), Propagate()],
        "points_with_negative": [Points(0, 1, ((0.45, 0.5), (0.3, 0.4)), (1, 0)), Propagate()],
        "two_objects_different_frames": [Box(0, 1, (0.3, 0.3, 0.6, 0.7)), Points(5, 2, ((0.2, 0.6),), (1,)), Propagate()],
        "backward_from_middle": [Box(mid, 1, (0.25, 0.2, 0.7, 0.8)), Propagate(start=mid, reverse=True)],
        "mask_correction_then_forward": [Box(0, 1, (0.3, 0.3, 0.6, 0.7)), Propagate(),
                                         Mask(mid, 1, str(clip_dir / f"{clip}_masks" / f"{mid:05d}.png")),
                                         Propagate(start=mid)],
    }


@pytest.fixture(scope="module")
def frames(clips_dir, tmp_path_factory):
    """First N_FRAMES of each clip as JPEG files (what a Label Studio frames task holds)."""
    import cv2
    out = {}
    for clip in CLIPS:
        d = tmp_path_factory.mktemp(clip)
        cap = cv2.VideoCapture(str(clips_dir / f"{clip}.mp4"))
        for i in range(N_FRAMES):
            ok, bgr = cap.read()
            assert ok, f"{clip}: could not decode frame {i}"
            cv2.imwrite(str(d / f"{i:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        out[clip] = d
    return out


@pytest.fixture(scope="module")
def oracle_results(frames, clips_dir, model_256_f32):
    """The oracle's logits per clip and scenario (computed once, compared with both precisions)."""
    model = models.build_oracle(model_256_f32, add_all_frames_to_correct_as_cond=True, fill_hole_area=0)
    res = {}
    for clip in CLIPS:
        for name, steps in scenarios(clips_dir, clip).items():
            res[clip, name] = OracleRunner(model, frames[clip]).run(steps)
    return res


@pytest.fixture(scope="module", params=["f32", "bf16"])
def engine(request, model_256_f32, model_256_bf16):
    """f32: the exact export; bf16: the shipped default (fp16-stored weights, bf16 inference)."""
    from backend.engine import EngineSettings, VideoPredictor
    model = model_256_f32 if request.param == "f32" else model_256_bf16
    return request.param, VideoPredictor(EngineSettings(model_dir=model, precision=request.param, fill_hole_area=0))


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("scenario", ["box_forward", "points_with_negative", "two_objects_different_frames",
                                      "backward_from_middle", "mask_correction_then_forward"])
def test_engine_matches_sam2(engine, frames, clips_dir, oracle_results, clip, scenario):
    precision, eng = engine
    min_iou, max_logit = THRESHOLDS[precision]
    ref = oracle_results[clip, scenario]
    got = EngineRunner(eng, frames[clip]).run(scenarios(clips_dir, clip)[scenario])
    assert ref.keys() == got.keys()
    checked = 0
    for step in ref:
        assert sorted(ref[step]) == sorted(got[step]), f"step {step}: frames differ"
        for frame in ref[step]:
            assert ref[step][frame].shape == got[step][frame].shape
            for obj, (kind, value) in enumerate(frame_agreement(ref[step][frame], got[step][frame])):
                checked += 1
                if kind == "iou":
                    assert value >= min_iou, f"{clip}/{scenario} step {step} frame {frame} object {obj}: IoU {value:.4f}"
                else:
                    assert value <= max_logit, f"{clip}/{scenario} step {step} frame {frame} object {obj}: logits differ {value:.3g}"
    assert checked >= N_FRAMES // 2
