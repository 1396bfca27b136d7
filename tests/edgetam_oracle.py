"""EdgeTAM's own PyTorch video predictor as the parity oracle; runs in the EdgeTAM venv, never in the test's.

    .venv-edgetam/bin/python -m tests.edgetam_oracle JOB.json

JOB.json: {"model_dir": export folder (its manifest names seed and fingerprint), "sam21_predictor": path of sam2
1.1.0's sam2_video_predictor.py, "out": .npz to write, "runs": [{"key", "oracle", "settings", "frames_dir",
"steps"}]}. Each run replays `steps` (tests/parity.py step dataclasses as {"type": name, **fields}) with
tests/parity.py's OracleRunner and stores every output as `<key>/<step>/<frame>` -> logits [N, H, W] float32.

Two oracles, both on EdgeTAM's modules (`SAM2Base` with the spatial perceiver, from the edgetam-dimos fork) with
the export's exact weights (checked by fingerprint):
- "edgetam": the fork's own `SAM2VideoPredictor`. It predates sam2 1.1.0's independent per-object tracking: it
  consolidates all objects per frame (an object without a prompt on another object's prompted frame gets an
  empty-mask memory there), refuses new objects once tracking started, and keeps a non-conditioning correction
  as the frame's output instead of re-tracking it.
- "sam2.1-session": sam2 1.1.0's `SAM2VideoPredictor` session code (loaded from the main venv's file, unmodified,
  with the fork's token-aware `_get_maskmem_pos_enc`) over the same EdgeTAM model, for the scenarios whose
  session semantics differ between the two: the engine (and the product) follow sam2 1.1.0 for both families.
  test_edgetam_parity checks that both oracles agree where their semantics coincide.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from tests import models
from tests.parity import Box, Clear, Mask, OracleRunner, Points, Propagate, Remove

STEP_TYPES = {c.__name__: c for c in (Box, Points, Mask, Clear, Remove, Propagate)}


def encode_steps(steps) -> list[dict]:
    from dataclasses import asdict
    return [{"type": type(s).__name__, **asdict(s)} for s in steps]


def decode_steps(rows: list[dict]) -> list:
    out = []
    for r in rows:
        r = dict(r)
        cls = STEP_TYPES[r.pop("type")]
        for k in ("box", "labels"):
            if k in r:
                r[k] = tuple(r[k])
        if "points" in r:
            r["points"] = tuple(tuple(p) for p in r["points"])
        out.append(cls(**r))
    return out


def _sam21_session_class(path: str):
    """sam2 1.1.0's predictor class over the fork's SAM2Base, with the one predictor method EdgeTAM's fork changed
    for the perceiver: `_get_maskmem_pos_enc` (1.1.0 expands the cached position encoding as a [B, C, H, W] map;
    token memories are [B, T, C])."""
    from sam2.sam2_video_predictor import SAM2VideoPredictor as Fork

    spec = importlib.util.spec_from_file_location("sam21_video_predictor", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # its `sam2.*` imports resolve to the fork: EdgeTAM's SAM2Base

    class Sam21Session(mod.SAM2VideoPredictor):
        _get_maskmem_pos_enc = Fork._get_maskmem_pos_enc

    return Sam21Session


def build(model_dir: Path, oracle: str, settings: dict, sam21_file: str):
    model = models.build_oracle(model_dir, fill_hole_area=0, **settings)
    if oracle == "sam2.1-session":
        # same instance, same weights and predictor attributes; only the session methods are sam2 1.1.0's
        model.__class__ = _sam21_session_class(sam21_file)
    elif oracle != "edgetam":
        raise ValueError(f"unknown oracle {oracle!r}")
    return model


def main(job_path: str) -> int:
    import warnings
    warnings.filterwarnings("ignore")
    job = json.loads(Path(job_path).read_text())
    model_dir = Path(job["model_dir"])
    built, arrays = {}, {}
    for run in job["runs"]:
        settings = dict(run["settings"])
        settings.setdefault("add_all_frames_to_correct_as_cond", True)
        bkey = (run["oracle"], json.dumps(settings, sort_keys=True))
        if bkey not in built:
            t0 = time.perf_counter()
            built[bkey] = build(model_dir, run["oracle"], settings, job["sam21_predictor"])
            print(f"built {bkey[0]} {bkey[1]}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        res = OracleRunner(built[bkey], Path(run["frames_dir"])).run(decode_steps(run["steps"]))
        print(f"{run['key']}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for step, frames in res.items():
            for frame, logits in frames.items():
                arrays[f"{run['key']}/{step}/{frame}"] = np.asarray(logits, np.float32)
    np.savez(job["out"], **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
