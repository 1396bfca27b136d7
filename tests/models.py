"""Random-init SAM 2.1 exports for tests, cached under .cache/models by exporter source hash and arguments.

Exports run through the real CLI (`python -m model_export`) in a subprocess, so
the command users run is what the tests exercise and its memory is freed.
"""
from __future__ import annotations

import hashlib
import json
import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("TEST_MODEL_CACHE", ROOT / ".cache" / "models"))
MODEL = "sam2.1_hiera_tiny"


def exporter_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "model_export").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def export_dir(image_size: int, precision: str, seed: int = 0, bias: float | None = None,
               model: str = MODEL) -> Path:
    """Path of a cached export, exporting it first when missing or stale."""
    tag = f"{model}_{image_size}_{precision}_s{seed}" + (f"_b{bias:g}" if bias is not None else "")
    out = CACHE / f"{tag}_{exporter_hash()}"
    if (out / "manifest.json").is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{tag}.lock", "w") as lock:  # one export per folder, even across pytest processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").is_file():
            _export(out, model, seed, image_size, precision, bias)
    return out


EDGETAM_OBJECT_SCORE_BIAS = 10.0  # seed-0 EdgeTAM scores every object absent; with this bias objects are present
EDGETAM_PYTHON = Path(os.environ.get("EDGETAM_PYTHON", ROOT / ".venv-edgetam" / "bin" / "python"))


def python_for(model: str) -> str:
    """The interpreter whose `sam2` builds this model: EdgeTAM's fork lives in its own venv
    (scripts/install_edgetam_export.sh), every SAM 2.1 model in this one."""
    return str(EDGETAM_PYTHON) if model == "edgetam" else sys.executable


def _export(out: Path, model: str, seed: int, image_size: int, precision: str, bias: float | None) -> None:
    cmd = [python_for(model), "-m", "model_export", "--model", model, "--random-init", "--seed", str(seed),
           "--image-size", str(image_size), "--precision", precision, "--out", str(out)]
    if bias is not None:
        cmd += ["--random-object-bias", str(bias)]
    verify = model == "edgetam" and precision == "f32"  # the folder tests/test_edgetam_export.py reads its rows from
    proc = subprocess.run(cmd + ["--verify"] * verify, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"export failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    if verify:
        (out / "verify.log").write_text(proc.stdout)


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def build_oracle(path: Path, **overrides):
    """The official sam2 SAM2VideoPredictor with the export's exact weights (checked by fingerprint).

    overrides: extra hydra settings, e.g. add_all_frames_to_correct_as_cond=True.
    """
    from model_export.build import build_video_model, weights_fingerprint
    from model_export.catalog import get_model

    m = manifest(path)
    w = m["weights"]
    extra = [f"++model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()]
    model = build_video_model(get_model(m["model"]), image_size=m["image_size"], seed=w["seed"],
                              object_score_bias=w.get("object_score_bias"), extra_overrides=extra)
    if weights_fingerprint(model) != w["fingerprint"]:
        raise AssertionError("oracle weights differ from the exported ones (fingerprint mismatch)")
    _float_memories(model)
    _perceiver_per_object(model)
    return model


def _perceiver_per_object(model) -> None:
    """Work around an EdgeTAM fork bug: its perceiver's `forward_2d` does `expand(B, ...).view(...)`, which fails
    for more than one object in a batch (so its predictor cannot track two objects prompted on the same frame).
    Running it one object at a time gives exactly the per-object results (objects never mix in it)."""
    p = getattr(model, "spatial_perceiver", None)
    if p is None:
        return
    import types

    import torch
    one = type(p).forward_2d

    def per_object(self, x):
        outs = [one(self, x[i:i + 1]) for i in range(x.shape[0])]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    p.forward_2d = types.MethodType(per_object, p)


def _float_memories(model) -> None:
    """Work around a sam2 1.1.0 CPU bug: memories are stored in bfloat16 and only become float32
    when concatenated with object pointers; a frame with no pointer (an object tracked before its
    first prompt) then hits `mat1 and mat2 must have the same dtype` in memory attention. Casting
    to float32 gives the same values sam2 uses whenever pointers are present."""
    attn = model.memory_attention
    forward = attn.forward

    def float_forward(curr, memory, curr_pos=None, memory_pos=None, **kw):  # kw: EdgeTAM's num_spatial_mem too
        return forward(curr=curr, memory=memory.float(), curr_pos=curr_pos, memory_pos=memory_pos.float(), **kw)

    attn.forward = float_forward
