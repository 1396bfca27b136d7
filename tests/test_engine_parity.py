"""The engine against the official sam2 SAM2VideoPredictor on the same random-init weights and real clips.

Parity that can fail:
- logits are compared on every frame and object of every step: f32 max|diff| / max|ref| <= 1e-3 (the
  per-graph export test's measure), not a mask IoU that random weights make prompt-independent;
- every scenario proves it is informative: the reference for a contrast (the same script mirrored through the
  image centre, or the other object) must give different masks where prompted (IoU < 0.9) and logits that differ on every
  compared frame and object by at least INFORMATIVE (several times the tolerance), else the scenario fails as
  uninformative. (Measured at 128 px, seed 0: random weights make masks converge a few frames after a prompt —
  IoU 0.99+ between objects from frame 3 on, with or without an object-score bias, whose scores stay ~0.19 for
  every prompt — while logits keep differing by 0.5-1% of their range, 5-9x the tolerance.)
- bf16 asserts that OpenVINO really compiled every graph in bf16, and is skipped, saying so, on CPUs
  without bf16.

Both read the same JPEG frames. The oracle runs without hole filling (sam2 skips it without its CUDA
extension; the engine's version is tested in test_engine_numerics).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from tests import models
from tests.parity import (Box, Clear, EngineRunner, Mask, OracleRunner, Points, Propagate, Remove, iou, logit_error,
                          mirrored)

N = 8
LONG = 34  # beyond the engine's default max_resident_frames (32): early memories are spilled and read back
TOL = {"f32": 1e-3}
INFORMATIVE = 3e-3
NO_OUTPUT = -1024.0  # sam2's logit where an object has no output (e.g. before its first prompt)
A = (0.3, 0.3, 0.6, 0.7)
A2 = (0.15, 0.15, 0.5, 0.6)  # off-centre: on the box clip a centred box and its mirror give masks with IoU > 0.9
B = (0.05, 0.1, 0.4, 0.5)
NEG = ((0.35, 0.4),)


def _mask(clips_dir, clip, frame):
    return str(clips_dir / f"{clip}_masks" / f"{frame:05d}.png")


def scenarios(clips_dir):
    """name -> (clip, frames, folder naming, steps, settings for both sides)."""
    mid = N // 2
    return {
        "box_forward": ("cup", N, "pad", [Box(0, 1, A), Propagate()], {}),
        "points_with_negative": ("box", N, "pad", [Points(0, 1, ((0.25, 0.3), (0.4, 0.45)), (1, 0)), Propagate()], {}),
        "two_objects_different_frames": ("cup", N, "pad", [Box(0, 1, A), Points(3, 2, ((0.2, 0.6),), (1,)),
                                                           Propagate()], {}),
        "backward_from_middle": ("box", N, "pad", [Box(mid, 1, (0.15, 0.15, 0.5, 0.6)),
                                                   Propagate(start=mid, reverse=True)], {}),
        "mask_correction_u8_then_forward": ("cup", N, "pad", [
            Box(0, 1, A), Propagate(), Mask(mid, 1, _mask(clips_dir, "cup", mid), u8=True), Propagate(start=mid)], {}),
        "click_correction_on_tracked_frame": ("box", N, "pad", [
            Box(0, 1, A2), Propagate(), Points(mid, 1, NEG, (0,)), Propagate(start=mid)], {}),
        "click_correction_not_cond": ("box", N, "pad", [
            Box(0, 1, A2), Propagate(), Points(mid, 1, NEG, (0,)), Propagate(start=mid)],
            {"add_all_frames_to_correct_as_cond": False}),
        "mask_correction_not_cond": ("cup", N, "pad", [
            Box(0, 1, A), Propagate(), Mask(mid, 1, _mask(clips_dir, "cup", mid)), Propagate(start=mid)],
            {"add_all_frames_to_correct_as_cond": False}),
        "reverse_after_forward": ("cup", N, "pad", [Box(mid, 1, A), Propagate(start=mid),
                                                    Propagate(start=mid, reverse=True)], {}),
        "new_object_after_propagation_then_reverse": ("box", N, "pad", [
            Box(0, 1, A2), Propagate(), Box(mid, 2, B), Propagate(start=mid), Propagate(start=mid, reverse=True)], {}),
        "clear_and_remove": ("cup", N, "pad", [
            Box(0, 1, A), Points(4, 1, NEG, (0,)), Box(0, 2, B), Propagate(), Clear(4, 1), Remove(2),
            Propagate(start=4)], {}),
        "reclick_on_conditioning_frame": ("cup", N, "pad", [
            Box(0, 1, A), Propagate(), Points(0, 1, ((0.5, 0.45),), (1,), clear_old=False), Propagate()], {}),
        "long_video_correction_on_spilled_frame": ("box", LONG, "pad", [
            Box(0, 1, A2), Propagate(), Points(3, 1, NEG, (0,)), Propagate(start=3)], {}),
        "non_overlap_masks": ("cup", N, "pad", [Box(0, 1, A), Box(0, 2, (0.2, 0.2, 0.5, 0.6)), Propagate()],
                              {"non_overlap_masks": True}),
        "integer_stem_folder": ("box", 12, "int", [Box(0, 1, A2), Propagate()], {}),
    }


@pytest.fixture(scope="module")
def frame_dirs(clips_dir, tmp_path_factory):
    """(clip, frames, naming) -> folder of JPEGs: 00000.jpg.. ("pad") or 0.jpg, 1.jpg, .. 11.jpg ("int", which
    sorts 0, 1, 10, 11, 2 by name)."""
    import cv2
    cache = {}

    def get(clip, n, naming):
        key = (clip, n, naming)
        if key not in cache:
            d = tmp_path_factory.mktemp(f"{clip}{n}{naming}")
            cap = cv2.VideoCapture(str(clips_dir / f"{clip}.mp4"))
            for i in range(n):
                ok, bgr = cap.read()
                assert ok, f"{clip}: could not decode frame {i}"
                name = f"{i:05d}.jpg" if naming == "pad" else f"{i}.jpg"
                cv2.imwrite(str(d / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cache[key] = d
        return cache[key]
    return get


@pytest.fixture(scope="module")
def oracle(model_128_f32, frame_dirs):
    """(scenario settings, clip, frames, naming, steps) -> the oracle's outputs, computed once."""
    builds = {}

    @functools.lru_cache(maxsize=None)
    def run(settings: tuple, clip, n, naming, steps: tuple):
        if settings not in builds:
            over = dict(settings)
            builds[settings] = models.build_oracle(
                model_128_f32, fill_hole_area=0,
                add_all_frames_to_correct_as_cond=over.get("add_all_frames_to_correct_as_cond", True),
                **{k: v for k, v in over.items() if k != "add_all_frames_to_correct_as_cond"})
        return OracleRunner(builds[settings], frame_dirs(clip, n, naming)).run(list(steps))
    return run


@pytest.fixture(scope="module")
def engines(model_128_f32):
    from backend.engine import EngineSettings, VideoPredictor
    cache = {}

    def get(precision, settings: tuple):
        if (precision, settings) not in cache:
            cache[precision, settings] = VideoPredictor(EngineSettings(
                model_dir=model_128_f32, precision=precision, fill_hole_area=0, **dict(settings)))
        return cache[precision, settings]
    return get


def _compared(ref: dict, got: dict):
    """(step, frame, object index, ref logits, engine logits) for every output; the frame sets must agree."""
    assert ref.keys() == got.keys()
    for step in ref:
        assert sorted(ref[step]) == sorted(got[step]), f"step {step}: frames differ"
        for frame in ref[step]:
            assert ref[step][frame].shape == got[step][frame].shape, f"step {step} frame {frame}: objects differ"
            for obj in range(ref[step][frame].shape[0]):
                yield step, frame, obj, ref[step][frame][obj], got[step][frame][obj]


def _untie(ref: dict, got: dict) -> tuple[dict, dict]:
    """Non-overlapping outputs keep, per pixel, only the highest-scoring object's logit (the others are clamped to
    at most -10). Where two objects' logits are equal within float noise (random weights make objects' masks
    converge), the winner is decided by that noise, so sam2 and the engine may pick different winners. Such pixels
    are compared by the winner's logit alone (it must agree within the tolerance: a real tie); every other pixel is
    compared for every object as usual, so an engine that does not clamp, or clamps the wrong object, still fails."""
    ref_out, got_out = {}, {}
    for step in ref:
        ref_out[step], got_out[step] = {}, {}
        for frame, r in ref[step].items():
            g = got[step][frame]
            if r.shape != g.shape or r.shape[0] < 2:
                ref_out[step][frame], got_out[step][frame] = r, g
                continue
            flipped = np.argmax(r, axis=0) != np.argmax(g, axis=0)
            scale = max(float(np.abs(r).max()), 1e-6)
            tie_gap = np.abs(r.max(axis=0).astype(np.float64) - g.max(axis=0)) / scale
            assert (tie_gap[flipped] <= TOL["f32"]).all(), \
                f"step {step} frame {frame}: a different object wins where the logits are not tied"
            g = np.where(flipped[None], r, g)  # tied pixels: checked above by the winner's logit
            ref_out[step][frame], got_out[step][frame] = r, g
    return ref_out, got_out


def assert_informative(name: str, steps: list, ref: dict, contrast: dict) -> None:
    """The scenario can fail: a contrast (mirrored prompts, or the other object where there are two) gives
    different masks where prompted and clearly different logits on every compared frame and object."""
    prompted = {i for i, s in enumerate(steps) if isinstance(s, (Box, Points, Mask))}
    pairs = []  # (prompted?, iou, logit difference)

    def add(step, x, y):
        if not ((x == NO_OUTPUT).all() and (y == NO_OUTPUT).all()):  # an object before its first prompt
            pairs.append((step in prompted, iou(x, y), logit_error(x, y)))
    for step in ref:
        for frame in ref[step]:
            r = ref[step][frame]
            if r.shape[0] >= 2:  # two objects: each against the other
                add(step, r[0], r[1])
            c = contrast[step][frame]
            for obj in range(min(r.shape[0], c.shape[0])):
                add(step, r[obj], c[obj])
    assert min(p[1] for p in pairs if p[0]) < 0.9, f"{name}: uninformative, prompted masks do not depend on the prompt"
    weakest = min(p[2] for p in pairs)
    assert weakest >= INFORMATIVE, (f"{name}: uninformative, on some frame the reference's logits for a different "
                                    f"prompt differ by only {weakest:.2g} of their range (tolerance {TOL['f32']})")


NAMES = ["box_forward", "points_with_negative", "two_objects_different_frames", "backward_from_middle",
         "mask_correction_u8_then_forward", "click_correction_on_tracked_frame", "click_correction_not_cond",
         "mask_correction_not_cond", "reverse_after_forward", "new_object_after_propagation_then_reverse",
         "clear_and_remove", "reclick_on_conditioning_frame", "long_video_correction_on_spilled_frame",
         "non_overlap_masks", "integer_stem_folder"]


@pytest.mark.parametrize("name", NAMES)
def test_engine_matches_sam2_f32(name, clips_dir, oracle, engines, frame_dirs):
    clip, n, naming, steps, settings = scenarios(clips_dir)[name]
    key = tuple(sorted(settings.items()))
    ref = oracle(key, clip, n, naming, tuple(steps))
    assert_informative(name, steps, ref, oracle(key, clip, n, naming, tuple(mirrored(steps))))
    got = EngineRunner(engines("f32", key), frame_dirs(clip, n, naming)).run(steps)
    worst = (0.0, None)
    if settings.get("non_overlap_masks"):
        ref, got = _untie(ref, got)
    for step, frame, obj, r, g in _compared(ref, got):
        err = logit_error(r, g)
        worst = max(worst, (err, (step, frame, obj)), key=lambda w: w[0])
    assert worst[0] <= TOL["f32"], f"{name}: logits differ by {worst[0]:.3g} of their range at (step, frame, obj) {worst[1]}"


BF16_SCENARIOS = ["box_forward", "click_correction_on_tracked_frame"]
BF16_MIN_IOU = 0.95  # per frame and object, where the reference mask is not (nearly) empty or full


@pytest.mark.parametrize("name", BF16_SCENARIOS)
def test_engine_bf16_runs_bf16_and_stays_close(name, clips_dir, oracle, engines, frame_dirs):
    import openvino as ov
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU cannot run bf16 (no BF16 in OpenVINO's CPU capabilities): nothing to test here")
    eng = engines("bf16", ())
    ran = {g: str(eng.runtime.compiled_property(g, "INFERENCE_PRECISION_HINT")) for g in eng.bundle.graph_files}
    assert all(p in ("bf16", "<Type: 'bfloat16'>") for p in ran.values()), f"OpenVINO did not compile every graph in bf16: {ran}"
    clip, n, naming, steps, settings = scenarios(clips_dir)[name]
    ref = oracle((), clip, n, naming, tuple(steps))
    got = EngineRunner(eng, frame_dirs(clip, n, naming)).run(steps)
    for step, frame, obj, r, g in _compared(ref, got):
        fg = (r > 0).mean()
        if 0.01 < fg < 0.99:
            assert iou(r, g) >= BF16_MIN_IOU, f"{name} step {step} frame {frame} object {obj}: IoU {iou(r, g):.3f}"
        else:
            assert (r > 0).mean() == pytest.approx((g > 0).mean(), abs=0.02)
