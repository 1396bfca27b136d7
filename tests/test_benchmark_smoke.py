"""The benchmark script runs end to end at a tiny size (torch reference included) and reports its figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import models

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 9  # frames 7 and 8 have every memory slot filled: the steady-state figures exist
CLICKS = 2
PHASES = ("1obj/first", "1obj/repropagate", "3obj/first", "3obj/repropagate")


@pytest.mark.timeout(900)
def test_benchmark_runs_and_reports(clips_dir, tmp_path):
    for precision in ("f32", "bf16"):  # export outside the timed run (cached across tests)
        models.export_dir(128, precision)
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--clip", str(clips_dir / "box.mp4"),
                           "--image-size", "128", "--frames", str(FRAMES), "--objects", "1,3",
                            "--clicks", str(CLICKS), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "s/frame" in proc.stdout and "engine_f32" in proc.stdout
    report = json.loads(out.read_text())

    assert report["machine"]["logical_cores"] >= 1 and report["machine"]["openvino"]
    assert set(report["backends"]) == {"torch", "engine_bf16", "engine_f32"}
    k = report["config"]["correction_frame"]
    assert len(report["config"]["boxes_xyxy"]) == 3
    for name, backend in report["backends"].items():
        assert backend["rss_loaded_mb"] > 0 and backend["rss_process_peak_mb"] >= backend["rss_loaded_mb"]
        if name != "torch":
            assert backend["precision"]["openvino"] in ("f32", "bf16")
        for phase in PHASES:
            ph = backend["phases"][phase]
            assert ph["frames"] == (FRAMES if phase.endswith("first") else FRAMES - k)
            assert ph["s_per_frame"] > 0 and ph["fps"] > 0 and ph["rss_peak_mb"] > 0
            if name != "torch":
                assert ph["vs_torch"]["pairs"] == ph["frames"] * int(phase[0])
                assert ph["vs_torch"]["torch_over_engine"] > 0
            if phase.endswith("first"):
                assert ph["encoder_calls"] == FRAMES, f"{name} {phase}"

    for name, backend in report["backends"].items():
        for n in ("1obj", "3obj"):
            ph = backend["phases"][f"{n}/first"]
            assert ph["steady_frames"] == FRAMES - 7 and ph["steady_s_per_frame"] > 0
            assert [f for f, _, _ in ph["per_frame"]] == list(range(FRAMES))
            clicks = backend["clicks"][n]
            assert clicks["correction"]["n"] == CLICKS and clicks["correction"]["p95_s"] >= clicks["correction"]["p50_s"] > 0
            if name == "torch":  # sam2 refuses new object ids once tracking started
                assert clicks["new_object"] == {}
            else:
                assert clicks["new_object"]["n"] == CLICKS and clicks["new_object"]["p50_s"] > 0
        assert set(backend["objects_over_one"]) == {"1obj", "3obj"} and backend["objects_over_one"]["1obj"] == 1.0
        if name == "torch":
            continue
        assert backend["matmul_peak"]["gflops_wall"] > 0
        graphs = backend["phases"]["3obj/first"]["graphs"]
        assert graphs["image_encoder"]["calls"] == FRAMES - 1  # frame 0 was encoded for the prompts
        for g in ("image_encoder", "memory_attention", "prompt_decoder", "memory_encoder"):
            assert graphs[g]["gflop"] > 0 and graphs[g]["gflops"] > 0, g
        assert backend["phases"]["3obj/first"]["vs_torch"]["torch_over_engine_steady"] > 0

    for phase in PHASES:
        f32 = report["backends"]["engine_f32"]["phases"][phase]
        assert f32["vs_torch"]["iou_min"] >= 0.97, f"{phase}: {f32['vs_torch']}"
        assert f32["vs_torch"]["empty_pairs"] < f32["vs_torch"]["pairs"], "all masks empty: the IoU says nothing"
        for b in ("engine_f32", "engine_bf16"):  # every frame of the re-propagation is already encoded
            assert report["backends"][b]["phases"][phase.replace("first", "repropagate")]["encoder_calls"] == 0
    # sam2 keeps one frame's features: its re-propagation encodes again (the benchmark shows the contrast)
    assert report["backends"]["torch"]["phases"]["1obj/repropagate"]["encoder_calls"] == FRAMES - k


@pytest.mark.timeout(720)
def test_attention_benchmark_runs_and_both_forms_agree(tmp_path):
    """benchmarks/attention.py at 128 px: every timed item reports, and the shipped memory attention equals the
    straightforward SDPA form and the one-block form at f32 (the rewrites are exact, only bf16 rounding differs)."""
    out = tmp_path / "attention.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "attention.py"), "--image-size", "128",
                           "--reps", "1", "--objects", "1,2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=660)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["timings"]) == {"shipped", "flat_keys", "sdpa_form", "sdpa_bare", "matmul_peak"}
    assert r["config"]["keys"] == 7 * 64 + 64 and r["config"]["queries"] == 64
    assert all(v["wall_min_s"] > 0 and v["cpu_min_s"] >= 0 for v in r["timings"].values())
    assert r["agreement_shipped_vs"]["f32"]["sdpa_form"]["rel"] <= 1e-4
    assert r["agreement_shipped_vs"]["f32"]["flat_keys"]["rel"] <= 1e-4
    assert r["ratios"]["shipped_vs_4x_sdpa_bare_wall"] > 0
    assert "Subgraph" in r["executed_kernels"]["shipped"]  # the CPU plugin fused attention into its MHA kernel
    assert set(r["objects"]) == {"1", "2"}
    assert set(r["objects"]["2"]) == {"sequential", "batched", "two_1thread_requests"}


@pytest.mark.timeout(900)
def test_benchmark_runs_edgetam_against_its_own_torch_predictor(clips_dir, tmp_path):
    """--model edgetam: EdgeTAM's torch predictor runs in .venv-edgetam (the report says so), the engine in this
    venv, on the same frames; the f32 engine agrees with it."""
    if not models.EDGETAM_PYTHON.exists():
        pytest.skip(f"!!! EdgeTAM venv missing ({models.EDGETAM_PYTHON}): run scripts/install_edgetam_export.sh !!!")
    models.export_dir(256, "f32", model="edgetam")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--clip", str(clips_dir / "box.mp4"),
                           "--model", "edgetam", "--image-size", "256", "--frames", str(FRAMES), "--objects", "1",
                           "--backends", "torch,engine_f32", "--clicks", "1", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["config"]["model"] == "edgetam" and set(report["backends"]) == {"torch", "engine_f32"}
    assert "edgetam-dimos" in report["backends"]["torch"]["versions"]
    assert "edgetam-dimos" not in report["backends"]["engine_f32"]["versions"]
    for phase in ("1obj/first", "1obj/repropagate"):
        v = report["backends"]["engine_f32"]["phases"][phase]["vs_torch"]
        assert v["iou_min"] >= 0.97 and v["empty_pairs"] < v["pairs"], f"{phase}: {v}"
    assert report["backends"]["engine_f32"]["phases"]["1obj/first"]["steady_frames"] == FRAMES - 7
