"""An exported model on disk: `manifest.json` + `constants.npz` + five IR graphs, read and validated once.

Two model families run on the same engine; what differs between them is data read here:
- format 1 (SAM 2.1): a memory frame is a spatial map [mem_dim, S/16, S/16] whose position encoding
  `maskmem_pos_enc` is [mem_dim, S/16, S/16];
- format 2 (EdgeTAM, `memory.layout: tokens`): the memory encoder's perceiver compresses a memory frame to
  `tokens_per_frame` tokens [T, mem_dim] with their own position encoding `maskmem_pos_enc` [T, mem_dim].
Both are described by `MemoryLayout`; the memory-attention graph takes either as a token sequence.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = (1, 2)
GRAPHS = ("image_encoder", "prompt_decoder", "memory_encoder", "memory_attention", "mask_prompt")


class ModelError(RuntimeError):
    """The model folder is missing, incomplete, or was exported with settings this engine cannot run."""


@dataclass(frozen=True)
class TrackerConfig:
    """SAM 2 video-predictor settings, as recorded by the exporter (names follow sam2's `SAM2Base`)."""

    num_maskmem: int
    hidden_dim: int
    mem_dim: int
    sigmoid_scale_for_mem_enc: float
    sigmoid_bias_for_mem_enc: float
    binarize_mask_from_pts_for_mem_enc: bool
    use_mask_input_as_output_without_sam: bool
    max_cond_frames_in_attn: int
    directly_add_no_mem_embed: bool
    multimask_output_in_sam: bool
    multimask_min_pt_num: int
    multimask_max_pt_num: int
    multimask_output_for_tracking: bool
    use_multimask_token_for_obj_ptr: bool
    dynamic_multimask_via_stability: bool
    dynamic_multimask_stability_delta: float
    dynamic_multimask_stability_thresh: float
    memory_temporal_stride_for_eval: int
    non_overlap_masks_for_mem_enc: bool
    use_obj_ptrs_in_encoder: bool
    max_obj_ptrs_in_encoder: int
    add_tpos_enc_to_obj_ptrs: bool
    proj_tpos_enc_in_obj_ptrs: bool
    use_signed_tpos_enc_to_obj_ptrs: bool
    only_obj_ptrs_in_the_past_for_eval: bool
    pred_obj_scores: bool
    soft_no_obj_ptr: bool
    fixed_no_obj_ptr: bool
    no_obj_embed_spatial: bool
    fill_hole_area: int
    non_overlap_masks: bool
    add_all_frames_to_correct_as_cond: bool
    clear_non_cond_mem_around_input: bool

    @classmethod
    def from_dict(cls, d: dict) -> "TrackerConfig":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ModelError(f"manifest tracker section lacks {missing}; re-export the model with this version of model_export")
        return cls(**{n: d[n] for n in names})


@dataclass(frozen=True)
class MemoryLayout:
    """How one object's memory of one frame is stored and fed to memory attention.

    layout: "spatial" (SAM 2.1: a [mem_dim, h, w] map, h = w = S/16, read as h*w tokens) or "tokens"
    (EdgeTAM: [tokens_per_frame, mem_dim] from the perceiver). pos_enc: the spatial position encoding of
    every token [tokens_per_frame, mem_dim]; the temporal encoding of the memory's slot is added on top.
    """

    layout: str
    tokens_per_frame: int
    token_dim: int
    pos_enc: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one stored memory (what the memory encoder returns per object)."""
        if self.layout == "spatial":
            side = int(round(self.tokens_per_frame ** 0.5))
            return (self.token_dim, side, side)
        return (self.tokens_per_frame, self.token_dim)

    def tokens(self, memory: np.ndarray) -> np.ndarray:
        """One stored memory (either layout) as the [tokens_per_frame, mem_dim] rows memory attention reads."""
        if self.layout == "spatial":
            return memory.reshape(self.token_dim, -1).T
        return memory.reshape(self.tokens_per_frame, self.token_dim)

    @classmethod
    def from_manifest(cls, m: dict, constants: dict, feat_size: int, mem_dim: int, where: Path) -> "MemoryLayout":
        pos = constants.get("maskmem_pos_enc")
        if pos is None:
            raise ModelError(f"{where} lacks maskmem_pos_enc; re-export the model with model_export")
        if m.get("format_version") == 1:
            if pos.shape != (mem_dim, feat_size, feat_size):
                raise ModelError(f"maskmem_pos_enc in {where} has shape {pos.shape}, expected "
                                 f"{(mem_dim, feat_size, feat_size)} for spatial memories; re-export the model")
            return cls("spatial", feat_size * feat_size, mem_dim, np.ascontiguousarray(pos.reshape(mem_dim, -1).T))
        mem = m.get("memory") or {}
        if mem.get("layout") != "tokens":
            raise ModelError(f"{where}: format_version 2 needs a memory section with layout 'tokens' (got "
                             f"{mem.get('layout')!r}); re-export the model with this version of model_export")
        t, dim = int(mem["tokens_per_frame"]), int(mem["token_dim"])
        if dim != mem_dim or pos.shape != (t, dim):
            raise ModelError(f"{where}: token memories of {t} x {dim} (mem_dim {mem_dim}) but maskmem_pos_enc has shape "
                             f"{pos.shape}; the export is inconsistent, run model_export again")
        graph_out = ((m.get("graphs") or {}).get("memory_encoder") or {}).get("outputs", {}).get("maskmem_features")
        if graph_out is not None and list(graph_out[1:]) != [t, dim]:
            raise ModelError(f"{where}: the memory encoder returns {graph_out[1:]} per object but the manifest says "
                             f"{t} tokens of {dim}; the export is inconsistent, run model_export again")
        return cls("tokens", t, dim, np.ascontiguousarray(pos))


# settings of sam2 this engine does not implement; each entry: (field, value the engine needs, why)
_REQUIRED = (
    ("directly_add_no_mem_embed", True, "SAM 2.1 configs add the no-memory embedding directly on first frames"),
    ("use_mask_input_as_output_without_sam", True, "mask prompts are taken as the frame's output, as in SAM 2.1"),
    ("non_overlap_masks_for_mem_enc", False, "non-overlap constraints in the memory encoder are a training option"),
    ("clear_non_cond_mem_around_input", False, "sam2 1.1.0 itself fails with this option on"),
    ("use_obj_ptrs_in_encoder", True, "all SAM 2.1 configs use object pointers"),
)


@dataclass(frozen=True)
class ModelBundle:
    """Everything the engine reads from an export folder.

    `image_size` is the model input side S in pixels; features are S/16 on a side.
    `constants` holds float32 arrays: maskmem_tpos_enc [num_maskmem, mem_dim],
    maskmem_pos_enc ([mem_dim, S/16, S/16] spatial or [T, mem_dim] tokens, see `memory`),
    no_mem_embed [hidden], no_obj_ptr [hidden],
    obj_ptr_tpos_proj_weight [mem_dim, hidden] / _bias [mem_dim] (when the config projects them).
    `family`: "sam2.1" or "edgetam" (informational: everything the engine does differently is in `memory`).
    `objects_share_frame`: the memory-attention graph takes the frame once ([1,hw,256]) for a batch of objects
    (exports since key-blocked attention); older exports and EdgeTAM take one object per call.
    """

    path: Path
    name: str
    family: str
    memory: MemoryLayout
    image_size: int
    backbone_stride: int
    precision: str
    inference_precision_hint: str
    random_weights: bool
    weights: dict
    config: TrackerConfig
    constants: dict
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    graph_files: dict
    objects_share_frame: bool = False

    @property
    def feat_size(self) -> int:
        return self.image_size // self.backbone_stride

    @property
    def low_res_size(self) -> int:
        """Side of SAM's low-resolution mask logits (S/4)."""
        return self.image_size // 4

    @classmethod
    def load(cls, path: str | Path) -> "ModelBundle":
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise ModelError(f"no manifest.json in {path}: set MODEL_DIR to a folder written by `python -m model_export`")
        m = json.loads(mpath.read_text())
        if m.get("format_version") not in SUPPORTED_FORMATS:
            raise ModelError(f"{mpath} has format_version {m.get('format_version')}, this engine reads "
                             f"{' or '.join(map(str, SUPPORTED_FORMATS))}; re-export the model with this version of model_export")
        files = {}
        for g in GRAPHS:
            xml = path / m["graphs"][g]["xml"] if g in m.get("graphs", {}) else path / f"{g}.xml"
            if not xml.is_file() or not xml.with_suffix(".bin").is_file():
                raise ModelError(f"{xml} (or its .bin) is missing: the export in {path} is incomplete, run model_export again")
            files[g] = xml
        cfg = TrackerConfig.from_dict(m["tracker"])
        for name, need, why in _REQUIRED:
            if getattr(cfg, name) != need:
                raise ModelError(f"model sets {name}={getattr(cfg, name)}, this engine needs {need} ({why})")
        with np.load(path / m.get("constants", "constants.npz")) as npz:
            constants = {k: npz[k].astype(np.float32) for k in npz.files}
        if m.get("random_weights"):
            log.warning("model %s has RANDOM WEIGHTS (%s): masks are meaningless", path, m["weights"].get("seed"))
        pre = m["preprocess"]
        feat_size = int(m["image_size"]) // int(m["backbone_stride"])
        memory = MemoryLayout.from_manifest(m, constants, feat_size, cfg.mem_dim, path)
        return cls(path=path, name=m["model"], family=m.get("family", "sam2.1"), memory=memory,
                   image_size=int(m["image_size"]),
                   backbone_stride=int(m["backbone_stride"]), precision=m["precision"],
                   inference_precision_hint=m["inference_precision_hint"], random_weights=bool(m["random_weights"]),
                   weights=m["weights"], config=cfg, constants=constants,
                   mean=tuple(pre["mean"]), std=tuple(pre["std"]), graph_files=files,
                   objects_share_frame=bool(m.get("memory_attention_objects_share_frame", False)))
