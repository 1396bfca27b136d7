"""benchmarks/click_latency_ls.py runs end to end at a tiny size (its own Label Studio and backend, 3 clicks through
LS's /api/ml/{id}/interactive-annotating) and writes the JSON the lead reads; keeps the benchmark from rotting."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import models

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_click_latency_benchmark_runs_and_reports(clips_dir, tmp_path):
    models.export_dir(128, "f32")  # outside the timed run (cached across tests)
    out = tmp_path / "clicks.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "click_latency_ls.py"), "--image-size", "128",
                           "--precision", "f32", "--clip", str(clips_dir / "box.mp4"), "--frames", "40",
                           "--clicks", "1", "--modes", "idle", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "embedded" in proc.stdout and "unseen" in proc.stdout and str(out) in proc.stdout
    report = json.loads(out.read_text())
    assert report["endpoint"] == "/api/ml/{id}/interactive-annotating" and report["image_size"] == 128
    assert report["cpu_before"]["cores"] >= 1 and len(report["cpu_after"]["load_avg"]) == 3
    assert set(report["modes"]) == {"idle"}
    mode = report["modes"]["idle"]
    records = mode["records"]
    assert [r["kind"] for r in records] == ["first_click", "unseen", "embedded"]
    for r in records:
        assert r["status"] == 200 and r["ms"] > 0 and r["results"] >= 1
        assert r["clicked_point_echoed"], r  # the backend answered this very click (it echoes the keypoint)
        assert r["backend_cpu_ms"] >= 0 and r["answer_bytes"] > 0
    # the unseen click was on a frame no earlier click or prewarm touched; the embedded one on the frame just clicked
    first, unseen, embedded = records
    assert unseen["frame"] >= 4 and unseen["frame"] != first["frame"] and embedded["frame"] == unseen["frame"]
    for kind in ("first_click", "unseen", "embedded"):
        s = mode["kinds"][kind]
        assert s["n"] == 1 and 0 < s["p50_ms"] <= s["p95_ms"] <= s["max_ms"]
    assert sum(r["backend_cpu_ms"] for r in records) > 0  # the backend's CPU was measured (its process group)
