"""EdgeTAM export: `python -m model_export --model edgetam` run in the EdgeTAM venv, checked graph by graph.

The export runs through the real CLI with `--random-init --verify` at 256 px (the
smallest size EdgeTAM's perceiver allows) in `.venv-edgetam` (its `sam2` is the
edgetam-dimos fork, so it cannot run in this venv); `--verify` compares every IR
with EdgeTAM's own PyTorch modules and this test checks each row. The OpenVINO
side (shapes, batching of objects, manifest, constants) is then checked here
without torch. scripts/test.sh creates the venv, so CI runs all of this.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from tests import models

ROOT = Path(__file__).resolve().parents[1]
EDGETAM_PY = Path(os.environ.get("EDGETAM_PYTHON", ROOT / ".venv-edgetam" / "bin" / "python"))
SIZE = 256
GRAPHS = ("image_encoder", "prompt_decoder", "memory_encoder", "memory_attention", "mask_prompt")
ROW = re.compile(r"^(\w+)\s+(\S+)\s+(\w+)\s+max\|d\|\s+(\S+)\s+rel\s+(\S+)\s+cos\s+(\S+)\s+(ok|FAIL)$")

needs_venv = pytest.mark.skipif(
    not EDGETAM_PY.exists(),
    reason=f"!!! EdgeTAM export venv missing ({EDGETAM_PY}): run `bash scripts/install_edgetam_export.sh` "
           f"(scripts/test.sh does) - EdgeTAM export parity is NOT tested !!!")


def run_edgetam(*args, timeout=1800):
    return subprocess.run([str(EDGETAM_PY), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def export():
    """(export folder, verify rows), cached by exporter source hash like the SAM 2.1 test exports."""
    out = models.CACHE / f"edgetam_{SIZE}_f32_s0_{models.exporter_hash()}"
    log = out / "verify.log"
    if not log.is_file():
        proc = run_edgetam("-m", "model_export", "--model", "edgetam", "--random-init", "--seed", "0",
                           "--image-size", str(SIZE), "--precision", "f32", "--out", str(out), "--verify")
        assert proc.returncode == 0, f"EdgeTAM export/verify failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        log.write_text(proc.stdout)
    rows = [m.groups() for line in log.read_text().splitlines() if (m := ROW.match(line.strip()))]
    return out, rows


@needs_venv
def test_every_graph_matches_edgetam_pytorch(export):
    _, rows = export
    assert {r[0] for r in rows} == set(GRAPHS)
    cases = {r[1] for r in rows if r[0] == "memory_attention"}
    assert cases == {"1mem+0ptr", "2mem+4ptr", "7mem+64ptr"}
    for graph, case, output, _, rel, _, flag in rows:
        assert flag == "ok" and float(rel) <= 1e-4, f"{graph} {case} {output}: rel {rel}"


@needs_venv
def test_manifest_describes_token_memories(export):
    out, _ = export
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == "edgetam" and m["family"] == "edgetam" and m["random_weights"] is True
    assert m["format_version"] == 2  # an engine that reads spatial-map memories (format 1) must refuse it
    assert m["image_size"] == SIZE and "edgetam-dimos" in m["versions"]
    mem = m["memory"]
    assert mem["layout"] == "tokens" and mem["tokens_per_frame"] == 512 == mem["global_tokens"] + mem["grid_tokens"]
    assert mem["grid_side"] == 16 and mem["token_dim"] == 64
    ma = m["memory_attention"]
    assert ma["num_layers"] == 2 and ma["query_grid"] == [SIZE // 16] * 2 and ma["key_rope_grid"] == [16, 16]
    assert m["graphs"]["memory_encoder"]["outputs"]["maskmem_features"] == [-1, 512, 64]
    assert m["graphs"]["memory_attention"]["inputs"]["mem"] == [-1, -1, 64]
    assert m["graphs"]["image_encoder"]["outputs"]["feat"] == [1, 256, SIZE // 16, SIZE // 16]
    with np.load(out / "constants.npz") as c:
        pos = c["maskmem_pos_enc"]
        assert pos.shape == (512, 64) and c["maskmem_tpos_enc"].shape == (7, 64)
    assert not pos[:256].any(), "global latents carry no position"
    assert np.abs(pos[256:]).max() > 0.5, "grid latents carry a 2D sine position"


@needs_venv
def test_openvino_graphs_batch_objects_and_take_any_memory_count(export):
    """Without torch: 3 objects in one memory-encoder call equal 3 single calls (the perceiver is batch-safe),
    and memory attention accepts any number of 512-token memories and pointers."""
    out, _ = export
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    enc = core.compile_model(str(out / "memory_encoder.xml"), "CPU", cfg)
    rng = np.random.default_rng(3)
    g = SIZE // 16
    pix = rng.standard_normal((1, 256, g, g)).astype(np.float32)
    logits = (rng.standard_normal((3, 1, 4 * g, 4 * g)) * 8).astype(np.float32)
    binarize = np.array([1, 0, 1], np.float32)
    score = np.array([[1.0], [2.0], [-1.0]], np.float32)
    both = enc({"pix_feat": pix, "mask_logits": logits, "binarize": binarize, "object_score_logits": score})[0]
    assert both.shape == (3, 512, 64)
    for i in range(3):
        one = enc({"pix_feat": pix, "mask_logits": logits[i:i + 1], "binarize": binarize[i:i + 1],
                   "object_score_logits": score[i:i + 1]})[0]
        np.testing.assert_allclose(both[i:i + 1], one, rtol=0, atol=1e-4)
    assert not np.allclose(both[0], both[1])
    attn = core.compile_model(str(out / "memory_attention.xml"), "CPU", cfg)
    for n_mem, n_ptr in ((1, 0), (3, 12)):
        res = attn({"curr": rng.standard_normal((2, g * g, 256)).astype(np.float32),
                    "mem": rng.standard_normal((2, n_mem * 512, 64)).astype(np.float32),
                    "mem_pos": rng.standard_normal((2, n_mem * 512, 64)).astype(np.float32),
                    "ptr": rng.standard_normal((2, n_ptr, 64)).astype(np.float32),
                    "ptr_pos": rng.standard_normal((2, n_ptr, 64)).astype(np.float32)})[0]
        assert res.shape == (2, 256, g, g) and np.isfinite(res).all()


@needs_venv
def test_image_size_must_fit_the_perceiver(tmp_path):
    proc = run_edgetam("-m", "model_export", "--model", "edgetam", "--random-init", "--image-size", "384",
                       "--out", str(tmp_path / "x"), timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "multiple of 256" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


@needs_venv
def test_edgetam_checkpoint_file_loads_our_weights(tmp_path):
    """A random state dict saved as a checkpoint file builds into exactly those weights (no timm download)."""
    ckpt = tmp_path / "edgetam_random.pt"
    code = f"""
import torch
from model_export.build import build_video_model, weights_fingerprint
from model_export.catalog import get_model
spec = get_model("edgetam")
m = build_video_model(spec, image_size={SIZE}, seed=11)
torch.save({{"model": m.state_dict()}}, {str(ckpt)!r})
a = weights_fingerprint(m)
b = weights_fingerprint(build_video_model(spec, image_size={SIZE}, checkpoint={str(ckpt)!r}))
c = weights_fingerprint(build_video_model(spec, image_size={SIZE}, seed=12))
print("FP", a == b, a != c)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # any hub access would fail loudly instead of hanging
    proc = subprocess.run([str(EDGETAM_PY), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FP True True" in proc.stdout


def test_main_venv_says_which_venv_edgetam_needs(tmp_path):
    """In the SAM 2.1 venv, --model edgetam fails with the command to run, not a hydra traceback."""
    proc = subprocess.run([sys.executable, "-m", "model_export", "--model", "edgetam", "--random-init",
                           "--image-size", "256", "--out", str(tmp_path / "x")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "install_edgetam_export.sh" in proc.stderr and "Traceback" not in proc.stderr


def test_git_blob_id_matches_git(tmp_path):
    from model_export.checkpoint import git_blob_sha1

    f = tmp_path / "blob.bin"
    f.write_bytes(bytes(range(256)) * 5000)
    want = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert git_blob_sha1(f) == want


def test_downloaded_edgetam_checkpoint_is_checked_against_the_published_blob(tmp_path, caplog):
    """A file at the download path that is not EdgeTAM's published checkpoint is refused before any export."""
    from model_export.cli import main

    (tmp_path / "edgetam.pt").write_bytes(b"not the checkpoint")
    rc = main(["--model", "edgetam", "--download", "--checkpoint-dir", str(tmp_path), "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "not the published edgetam checkpoint" in caplog.text and "delete it and download again" in caplog.text
    assert not (tmp_path / "x").exists()
