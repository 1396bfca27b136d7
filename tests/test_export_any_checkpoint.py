"""`--checkpoint FILE` exports any checkpoint of a supported architecture at the size it was tuned for.

Example: MedSAM2 is SAM 2.1 tiny fine-tuned at 512 px (`--model sam2.1_hiera_tiny --checkpoint
MedSAM2.pt --image-size 512`). Here a random SAM 2.1 tiny state dict, saved the way official
checkpoints are ({"model": state_dict}), stands in for it at 256 px (smaller, for test time): the
export must carry exactly those weights (fingerprint), record the file's sha256, and pass --verify.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import torch

from model_export.build import build_video_model, weights_fingerprint
from model_export.catalog import get_model
from model_export.checkpoint import sha256_of
from tests.models import ROOT

SIZE = 256
ROW = re.compile(r"^(\w+)\s+(\S+)\s+(\w+)\s+max\|d\|\s+(\S+)\s+rel\s+(\S+)\s+cos\s+(\S+)\s+(ok|FAIL)$")


def test_fine_tuned_style_checkpoint_exports_its_own_weights(tmp_path):
    spec = get_model("sam2.1_hiera_tiny")
    tuned = build_video_model(spec, image_size=SIZE, seed=5)
    ckpt = tmp_path / "tuned_tiny.pt"
    torch.save({"model": tuned.state_dict()}, ckpt)
    fingerprint = weights_fingerprint(tuned)
    assert fingerprint != weights_fingerprint(build_video_model(spec, image_size=SIZE, seed=0))
    del tuned

    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "model_export", "--model", spec.name, "--checkpoint", str(ckpt),
                           "--image-size", str(SIZE), "--precision", "f32", "--out", str(out), "--verify"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [m.groups() for line in proc.stdout.splitlines() if (m := ROW.match(line.strip()))]
    assert {r[0] for r in rows} == {"image_encoder", "prompt_decoder", "memory_encoder", "memory_attention", "mask_prompt"}
    assert all(r[6] == "ok" and float(r[4]) <= 1e-4 for r in rows), rows

    m = json.loads((out / "manifest.json").read_text())
    assert m["random_weights"] is False and m["image_size"] == SIZE
    w = m["weights"]
    assert w["source"] == "checkpoint" and w["sha256"] == sha256_of(ckpt)
    assert w["fingerprint"] == fingerprint  # the file's weights, not a random init
    assert m["graphs"]["image_encoder"]["inputs"]["image"] == [1, 3, SIZE, SIZE]
