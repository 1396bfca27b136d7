"""Export one SAM 2.1 model: build it, trace the five graphs, write IR + constants + manifest."""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .build import build_video_model, weights_fingerprint
from .catalog import ModelSpec
from .checkpoint import sha256_of
from .convert import PRECISION_HINT, convert_graph, graph_specs, save_graph
from .manifest import port_shapes, tracker_constants, write_manifest

log = logging.getLogger(__name__)


def export(spec: ModelSpec, out_dir: Path, *, precision: str = "bf16", image_size: int = 1024,
           checkpoint: Path | None = None, checkpoint_url: str | None = None, seed: int | None = None,
           object_score_bias: float | None = None, model=None) -> tuple[Path, object]:
    """Write the export to `out_dir` (replaced atomically) and return (out_dir, torch model).

    `model` may be passed to reuse an already built torch model (it must match
    the other arguments); otherwise it is built from `checkpoint` or `seed`.
    """
    if precision not in PRECISION_HINT:
        raise ValueError(f"--precision must be one of {', '.join(PRECISION_HINT)}")
    out_dir = Path(out_dir)
    if model is None:
        model = build_video_model(spec, image_size=image_size, checkpoint=checkpoint, seed=seed,
                                  object_score_bias=object_score_bias)
    if checkpoint is not None:
        weights = {"source": "checkpoint", "checkpoint": str(checkpoint), "url": checkpoint_url,
                   "sha256": sha256_of(Path(checkpoint))}
    else:
        weights = {"source": "random-init", "seed": seed, "object_score_bias": object_score_bias,
                   "warning": "RANDOM WEIGHTS: for tests only, masks are meaningless"}
    weights["fingerprint"] = weights_fingerprint(model)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a private temp dir beside the target: two exports to one folder must not delete each other's files
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    # the SAM 2.1 memory attention takes the frame once for all objects of a call (graphs.MemoryAttentionGraph)
    specs, constants, extra = graph_specs(), tracker_constants, {"memory_attention_objects_share_frame": True}
    if spec.family == "edgetam":
        from . import edgetam
        specs, constants, extra = edgetam.graph_specs(model), edgetam.tracker_constants, edgetam.manifest_fields(model)
    graphs = {}
    for gs in specs:
        t0 = time.perf_counter()
        ov_model = convert_graph(gs, model, image_size)
        save_graph(ov_model, tmp / f"{gs.name}.xml", precision)
        graphs[gs.name] = {"xml": f"{gs.name}.xml", **port_shapes(ov_model)}
        log.info("exported %-16s in %5.1f s", gs.name, time.perf_counter() - t0)
        del ov_model
    np.savez(tmp / "constants.npz", **constants(model))
    write_manifest(tmp, model_name=spec.name, model=model, image_size=image_size, precision=precision,
                   hint=PRECISION_HINT[precision], weights=weights, graphs=graphs, extra=extra)
    old = None
    if out_dir.exists():  # move the old export aside first, so readers see the old or the new folder, whole
        old = Path(tempfile.mkdtemp(prefix=out_dir.name + ".old-", dir=out_dir.parent))
        out_dir.rename(old / out_dir.name)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir, model
