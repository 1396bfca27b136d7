"""The benchmark script runs end to end at a tiny size (torch reference included) and reports its figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import models

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 4
PHASES = ("1obj/first", "1obj/repropagate", "3obj/first", "3obj/repropagate")


@pytest.mark.timeout(300)
def test_benchmark_runs_and_reports(clips_dir, tmp_path):
    for precision in ("f32", "bf16"):  # export outside the timed run (cached across tests)
        models.export_dir(128, precision)
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--clip", str(clips_dir / "box.mp4"),
                           "--image-size", "128", "--frames", str(FRAMES), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
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

    for phase in PHASES:
        f32 = report["backends"]["engine_f32"]["phases"][phase]
        assert f32["vs_torch"]["iou_min"] >= 0.97, f"{phase}: {f32['vs_torch']}"
        assert f32["vs_torch"]["empty_pairs"] < f32["vs_torch"]["pairs"], "all masks empty: the IoU says nothing"
        for b in ("engine_f32", "engine_bf16"):  # every frame of the re-propagation is already encoded
            assert report["backends"][b]["phases"][phase.replace("first", "repropagate")]["encoder_calls"] == 0
    # sam2 keeps one frame's features: its re-propagation encodes again (the benchmark shows the contrast)
    assert report["backends"]["torch"]["phases"]["1obj/repropagate"]["encoder_calls"] == FRAMES - k
