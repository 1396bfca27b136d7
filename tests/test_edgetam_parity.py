"""The engine serving an EdgeTAM export against EdgeTAM's own PyTorch video predictor, same random weights.

The same standard as the SAM 2.1 suite (tests/test_engine_parity.py, whose checks this reuses): f32 logits
max|diff| / max|ref| <= 1e-3 on every frame and object of every step, mask IoU >= 0.99 where a mask is neither
(nearly) empty nor full, every scenario proves it is informative (the reference for mirrored prompts, or the
other object, differs), and bf16 asserts that OpenVINO really compiled every graph in bf16 but the prompt decoder, which stays f32
(`backend.engine.runtime.KEEP_F32`; IoU >= 0.97).

The oracle runs in the EdgeTAM venv (its `sam2` is the edgetam-dimos fork), as one subprocess for every scenario
(tests/edgetam_oracle.py), and writes logits to an .npz that this test compares in the main venv. Scenarios
whose session semantics the fork's older predictor does not share with sam2 1.1.0 (objects prompted on
different frames, a new object after propagation, a non-conditioning correction; see tests/edgetam_oracle.py)
run sam2 1.1.0's session code over EdgeTAM's modules; `test_both_oracles_agree_where_semantics_coincide` shows
that oracle computes exactly what EdgeTAM's predictor computes. Frames are the clips' first frames scaled to
256 x 192 (the model input is 256 px either way; small arrays keep the .npz small) at 256 px model size.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests import models
from tests.edgetam_oracle import encode_steps
from tests.parity import Box, Clear, EngineRunner, Mask, Points, Propagate, Remove, iou, logit_error, mirrored
from tests.test_engine_parity import A, A2, B, NEG, TOL, _compared, assert_informative

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256
W, H = 256, 192
N = 8
LONG = 12  # with the engine keeping 7 tracked frames per object in RAM, early memories spill and are read back
ENGINE_ONLY = {"max_resident_frames": 7}  # engine settings the oracle has no counterpart for
MID = N // 2
F32_MIN_IOU, BF16_MIN_IOU = 0.99, 0.97

needs_venv = pytest.mark.skipif(
    not models.EDGETAM_PYTHON.exists(),
    reason=f"!!! EdgeTAM venv missing ({models.EDGETAM_PYTHON}): run `bash scripts/install_edgetam_export.sh` "
           f"(scripts/test.sh does) - EdgeTAM serving parity is NOT tested !!!")
pytestmark = needs_venv

FORK, SESSION = "edgetam", "sam2.1-session"


def _mask(frames_root: Path, clip: str, frame: int) -> str:
    return str(frames_root / f"{clip}_masks" / f"{frame:05d}.png")


def scenarios(root: Path) -> dict:
    """name -> (clip, frames, oracle, steps, settings for both sides)."""
    return {
        "box_forward": ("cup", N, FORK, [Box(0, 1, A), Propagate()], {}),
        "points_with_negative": ("box", N, FORK, [Points(0, 1, ((0.25, 0.3), (0.4, 0.45)), (1, 0)), Propagate()], {}),
        "backward_from_middle": ("box", N, FORK, [Box(MID, 1, A2), Propagate(start=MID, reverse=True)], {}),
        "mask_correction_then_forward": ("cup", N, FORK, [
            Box(0, 1, A), Propagate(), Mask(MID, 1, _mask(root, "cup", MID)), Propagate(start=MID)], {}),
        "click_correction_on_tracked_frame": ("box", N, FORK, [
            Box(0, 1, A2), Propagate(), Points(MID, 1, NEG, (0,)), Propagate(start=MID)], {}),
        "reverse_after_forward": ("cup", N, FORK, [Box(MID, 1, A), Propagate(start=MID),
                                                   Propagate(start=MID, reverse=True)], {}),
        "reclick_on_conditioning_frame": ("cup", N, FORK, [
            Box(0, 1, A), Propagate(), Points(0, 1, ((0.5, 0.45),), (1,), clear_old=False), Propagate()], {}),
        "two_objects_then_remove": ("cup", N, SESSION, [
            Box(0, 1, A), Box(0, 2, B), Propagate(), Remove(2), Points(MID, 1, NEG, (0,)), Propagate(start=MID)], {}),
        "clear_prompt_then_retrack": ("cup", N, FORK, [
            Box(0, 1, A), Points(MID, 1, NEG, (0,)), Propagate(), Clear(MID, 1), Propagate(start=MID)], {}),
        "correction_on_spilled_frame": ("box", LONG, FORK, [
            Box(0, 1, A2), Propagate(), Points(3, 1, NEG, (0,)), Propagate(start=3)], ENGINE_ONLY),
        # sam2 1.1.0 session semantics (what the engine implements for both families) on EdgeTAM's modules
        "two_objects_different_frames": ("cup", N, SESSION, [Box(0, 1, A), Points(3, 2, ((0.2, 0.6),), (1,)),
                                                             Propagate()], {}),
        "new_object_after_propagation_then_reverse": ("box", N, SESSION, [
            Box(0, 1, A2), Propagate(), Box(MID, 2, B), Propagate(start=MID), Propagate(start=MID, reverse=True)], {}),
        "click_correction_not_cond": ("box", N, SESSION, [
            Box(0, 1, A2), Propagate(), Points(MID, 1, NEG, (0,)), Propagate(start=MID)],
            {"add_all_frames_to_correct_as_cond": False}),
        "clear_and_remove": ("cup", N, SESSION, [
            Box(0, 1, A), Points(MID, 1, NEG, (0,)), Box(0, 2, B), Propagate(), Clear(MID, 1), Remove(2),
            Propagate(start=MID)], {}),
    }


CROSS_CHECK = ["box_forward", "click_correction_on_tracked_frame", "reverse_after_forward"]
BF16_SCENARIOS = ["box_forward", "click_correction_on_tracked_frame"]


@pytest.fixture(scope="module")
def edgetam_model() -> Path:
    # seed 0 random weights give EdgeTAM a negative object score on every prompt (every mask is "absent", -1024,
    # and every scenario uninformative); a +10 bias on the object-score head makes objects present (masks still
    # follow the prompts: the mask logits do not depend on the bias). See EDGETAM_OBJECT_SCORE_BIAS in tests/models.py.
    return models.export_dir(SIZE, "f32", bias=models.EDGETAM_OBJECT_SCORE_BIAS, model="edgetam")


@pytest.fixture(scope="module")
def frames_root(clips_dir, tmp_path_factory) -> Path:
    """<root>/<clip><n>/00000.jpg.. scaled to W x H, and <root>/<clip>_masks/NNNNN.png (0/1) scaled alike."""
    import cv2
    root = tmp_path_factory.mktemp("edgetam_frames")
    for clip, n in (("cup", N), ("box", N), ("box", LONG)):
        d = root / f"{clip}{n}"
        d.mkdir()
        cap = cv2.VideoCapture(str(clips_dir / f"{clip}.mp4"))
        for i in range(n):
            ok, bgr = cap.read()
            assert ok, f"{clip}: could not decode frame {i}"
            cv2.imwrite(str(d / f"{i:05d}.jpg"), cv2.resize(bgr, (W, H), interpolation=cv2.INTER_AREA),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        cap.release()
    for clip in ("cup",):
        (root / f"{clip}_masks").mkdir()
        for i in (0, MID):
            from tests.parity import load_mask
            m = load_mask(str(clips_dir / f"{clip}_masks" / f"{i:05d}.png")).astype(np.uint8)
            cv2.imwrite(str(root / f"{clip}_masks" / f"{i:05d}.png"), cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST))
    return root


def _sam21_predictor_file() -> str:
    spec = importlib.util.find_spec("sam2")
    return str(Path(list(spec.submodule_search_locations)[0]) / "sam2_video_predictor.py")


def _load(npz_path: Path) -> dict:
    """{run key: {step: {frame: logits [N, H, W]}}} from the oracle's .npz."""
    out: dict = {}
    with np.load(npz_path) as z:
        for name in z.files:
            key, step, frame = name.rsplit("/", 2)
            out.setdefault(key, {}).setdefault(int(step), {})[int(frame)] = z[name]
    return out


def _oracle_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in ENGINE_ONLY}


@pytest.fixture(scope="module")
def oracle(edgetam_model, frames_root, tmp_path_factory) -> dict:
    """Every scenario, its mirrored contrast and the cross-check runs, in one EdgeTAM-venv subprocess."""
    runs = []
    for name, (clip, n, kind, steps, settings) in scenarios(frames_root).items():
        for tag, script in (("ref", steps), ("mirror", mirrored(steps))):
            runs.append({"key": f"{name}:{tag}", "oracle": kind, "settings": _oracle_settings(settings),
                         "frames_dir": str(frames_root / f"{clip}{n}"), "steps": encode_steps(script)})
        if name in CROSS_CHECK:
            runs.append({"key": f"{name}:session", "oracle": SESSION, "settings": _oracle_settings(settings),
                         "frames_dir": str(frames_root / f"{clip}{n}"), "steps": encode_steps(steps)})
    tmp = tmp_path_factory.mktemp("edgetam_oracle")
    job = tmp / "job.json"
    job.write_text(json.dumps({"model_dir": str(edgetam_model), "sam21_predictor": _sam21_predictor_file(),
                               "out": str(tmp / "out.npz"), "runs": runs}))
    proc = subprocess.run([str(models.EDGETAM_PYTHON), "-m", "tests.edgetam_oracle", str(job)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, env=dict(os.environ, TQDM_DISABLE="1"))
    assert proc.returncode == 0, f"EdgeTAM oracle failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return _load(tmp / "out.npz")


@pytest.fixture(scope="module")
def engines(edgetam_model):
    from backend.engine import EngineSettings, VideoPredictor
    cache = {}

    def get(precision: str, settings: dict):
        key = (precision, tuple(sorted(settings.items())))
        if key not in cache:
            cache[key] = VideoPredictor(EngineSettings(model_dir=edgetam_model, precision=precision, fill_hole_area=0,
                                                       **settings))
        return cache[key]
    return get


def _mask_ious(ref: dict, got: dict) -> list[tuple[float, tuple]]:
    """IoU per (step, frame, object) where the reference mask is neither (nearly) empty nor full."""
    out = []
    for step, frame, obj, r, g in _compared(ref, got):
        if 0.01 < (r > 0).mean() < 0.99:
            out.append((iou(r, g), (step, frame, obj)))
    return out


def test_engine_reads_the_edgetam_export_as_token_memories(edgetam_model):
    from backend.engine import ModelBundle
    b = ModelBundle.load(edgetam_model)
    assert (b.family, b.memory.layout, b.memory.tokens_per_frame, b.memory.token_dim) == ("edgetam", "tokens", 512, 64)
    assert b.memory.pos_enc.shape == (512, 64) and not b.memory.pos_enc[:256].any()


@pytest.mark.parametrize("name", list(scenarios(Path("."))))
def test_engine_matches_edgetam_f32(name, oracle, engines, frames_root):
    clip, n, kind, steps, settings = scenarios(frames_root)[name]
    ref = oracle[f"{name}:ref"]
    assert_informative(name, steps, ref, oracle[f"{name}:mirror"])
    got = EngineRunner(engines("f32", settings), frames_root / f"{clip}{n}").run(steps)
    worst = (0.0, None)
    for step, frame, obj, r, g in _compared(ref, got):
        worst = max(worst, (logit_error(r, g), (step, frame, obj)), key=lambda w: w[0])
    assert worst[0] <= TOL["f32"], f"{name} ({kind}): logits differ by {worst[0]:.3g} of their range at (step, frame, obj) {worst[1]}"
    ious = _mask_ious(ref, got)
    assert ious, f"{name}: no frame with a mask that is neither empty nor full: IoU checks nothing"
    low = min(ious)
    assert low[0] >= F32_MIN_IOU, f"{name}: mask IoU {low[0]:.4f} at (step, frame, obj) {low[1]}"


@pytest.mark.parametrize("name", CROSS_CHECK)
def test_both_oracles_agree_where_semantics_coincide(name, oracle):
    """sam2 1.1.0's session code over EdgeTAM's modules computes what EdgeTAM's own predictor computes, on the
    single-object scenarios where both sessions mean the same: the second oracle adds no compute of its own."""
    fork, session = oracle[f"{name}:ref"], oracle[f"{name}:session"]
    worst = max(logit_error(r, g) for _, _, _, r, g in _compared(fork, session))
    assert worst <= 1e-5, f"{name}: the two oracles differ by {worst:.3g}"


@pytest.mark.parametrize("name", BF16_SCENARIOS)
def test_engine_bf16_runs_bf16_and_stays_close(name, oracle, engines, frames_root):
    import openvino as ov
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU cannot run bf16 (no BF16 in OpenVINO's CPU capabilities): nothing to test here")
    eng = engines("bf16", {})
    from backend.engine.runtime import KEEP_F32
    ran = {g: str(eng.runtime.compiled_property(g, "INFERENCE_PRECISION_HINT")) for g in eng.bundle.graph_files}
    kept = set(KEEP_F32["edgetam"])
    assert all(p in ("bf16", "<Type: 'bfloat16'>") for g, p in ran.items() if g not in kept), \
        f"OpenVINO did not compile every graph in bf16: {ran}"
    assert all(ran[g] in ("f32", "<Type: 'float32'>") for g in kept), f"the decoder should stay f32: {ran}"
    clip, n, _, steps, settings = scenarios(frames_root)[name]
    assert not settings
    got = EngineRunner(eng, frames_root / f"{clip}{n}").run(steps)
    ious = _mask_ious(oracle[f"{name}:ref"], got)
    assert ious
    low = min(ious)
    assert low[0] >= BF16_MIN_IOU, f"{name}: bf16 mask IoU {low[0]:.4f} at (step, frame, obj) {low[1]}"
