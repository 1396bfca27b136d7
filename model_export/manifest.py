"""What the serving engine needs besides the graphs: tracker constants (`constants.npz`) and `manifest.json`.

Every value is read from the built model (its config and weights), never
hard-coded here, so another SAM 2.1 config exports correctly.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def exporter_source_hash() -> str:
    """sha256 of this package's source: a cache key for exports made by this exact exporter."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def tracker_flags(model) -> dict:
    """The SAM 2 video-predictor settings the engine must reproduce."""
    dec = model.sam_mask_decoder
    return {
        "num_maskmem": int(model.num_maskmem),
        "hidden_dim": int(model.hidden_dim),
        "mem_dim": int(model.mem_dim),
        "sigmoid_scale_for_mem_enc": float(model.sigmoid_scale_for_mem_enc),
        "sigmoid_bias_for_mem_enc": float(model.sigmoid_bias_for_mem_enc),
        "binarize_mask_from_pts_for_mem_enc": bool(model.binarize_mask_from_pts_for_mem_enc),
        "use_mask_input_as_output_without_sam": bool(model.use_mask_input_as_output_without_sam),
        "max_cond_frames_in_attn": int(model.max_cond_frames_in_attn),
        "directly_add_no_mem_embed": bool(model.directly_add_no_mem_embed),
        "multimask_output_in_sam": bool(model.multimask_output_in_sam),
        "multimask_min_pt_num": int(model.multimask_min_pt_num),
        "multimask_max_pt_num": int(model.multimask_max_pt_num),
        "multimask_output_for_tracking": bool(model.multimask_output_for_tracking),
        "use_multimask_token_for_obj_ptr": bool(model.use_multimask_token_for_obj_ptr),
        "dynamic_multimask_via_stability": bool(dec.dynamic_multimask_via_stability),
        "dynamic_multimask_stability_delta": float(dec.dynamic_multimask_stability_delta),
        "dynamic_multimask_stability_thresh": float(dec.dynamic_multimask_stability_thresh),
        "memory_temporal_stride_for_eval": int(model.memory_temporal_stride_for_eval),
        "non_overlap_masks_for_mem_enc": bool(model.non_overlap_masks_for_mem_enc),
        "use_obj_ptrs_in_encoder": bool(model.use_obj_ptrs_in_encoder),
        "max_obj_ptrs_in_encoder": int(model.max_obj_ptrs_in_encoder),
        "add_tpos_enc_to_obj_ptrs": bool(model.add_tpos_enc_to_obj_ptrs),
        "proj_tpos_enc_in_obj_ptrs": bool(model.proj_tpos_enc_in_obj_ptrs),
        "use_signed_tpos_enc_to_obj_ptrs": bool(model.use_signed_tpos_enc_to_obj_ptrs),
        "only_obj_ptrs_in_the_past_for_eval": bool(model.only_obj_ptrs_in_the_past_for_eval),
        "pred_obj_scores": bool(model.pred_obj_scores),
        "soft_no_obj_ptr": bool(model.soft_no_obj_ptr),
        "fixed_no_obj_ptr": bool(model.fixed_no_obj_ptr),
        "no_obj_embed_spatial": model.no_obj_embed_spatial is not None,
        # SAM2VideoPredictor post-processing defaults
        "fill_hole_area": int(getattr(model, "fill_hole_area", 0)),
        "non_overlap_masks": bool(getattr(model, "non_overlap_masks", False)),
        "add_all_frames_to_correct_as_cond": bool(getattr(model, "add_all_frames_to_correct_as_cond", False)),
        "clear_non_cond_mem_around_input": bool(getattr(model, "clear_non_cond_mem_around_input", False)),
    }


def tracker_constants(model) -> dict[str, np.ndarray]:
    """Learned tensors the numpy tracker uses between graphs, as float32 arrays."""
    import torch

    grid = model.image_size // model.backbone_stride
    with torch.no_grad():
        pos = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, grid, grid))
        c = {
            "maskmem_tpos_enc": model.maskmem_tpos_enc.reshape(model.num_maskmem, model.mem_dim),
            "maskmem_pos_enc": pos[0],
            "no_mem_embed": model.no_mem_embed.reshape(-1),
        }
        if model.pred_obj_scores and model.use_obj_ptrs_in_encoder:
            c["no_obj_ptr"] = model.no_obj_ptr.reshape(-1)
        if model.proj_tpos_enc_in_obj_ptrs:
            c["obj_ptr_tpos_proj_weight"] = model.obj_ptr_tpos_proj.weight
            c["obj_ptr_tpos_proj_bias"] = model.obj_ptr_tpos_proj.bias
    return {k: v.detach().float().cpu().numpy().copy() for k, v in c.items()}


def write_manifest(out_dir: Path, *, model_name: str, model, image_size: int, precision: str, hint: str,
                   weights: dict, graphs: dict, extra: dict | None = None) -> Path:
    import openvino
    import torch
    from importlib.metadata import version

    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "random_weights": weights.get("source") == "random-init",
        "weights": weights,
        "image_size": image_size,
        "backbone_stride": int(model.backbone_stride),
        "precision": precision,
        "inference_precision_hint": hint,
        "preprocess": {"resize": "PIL bicubic to image_size x image_size", "scale": 1 / 255,
                       "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD), "channels": "RGB"},
        "tracker": tracker_flags(model),
        "constants": "constants.npz",
        "graphs": graphs,
        "versions": {"openvino": openvino.get_version(), "torch": torch.__version__, **_sam2_versions(version)},
        "exporter_source_sha256": exporter_source_hash(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    path = Path(out_dir) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _sam2_versions(version) -> dict:
    """Version of the distribution that provides the `sam2` module: sam2 itself or EdgeTAM's fork."""
    from importlib.metadata import PackageNotFoundError

    for dist in ("sam2", "edgetam-dimos"):
        try:
            return {dist: version(dist)}
        except PackageNotFoundError:
            continue
    return {}


def port_shapes(ov_model) -> dict:
    """{"inputs": {name: shape}, "outputs": {...}} with -1 for dynamic dimensions."""
    def shape(port):
        return [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    return {
        "inputs": {p.get_any_name(): shape(p) for p in ov_model.inputs},
        "outputs": {p.get_any_name(): shape(p) for p in ov_model.outputs},
    }
