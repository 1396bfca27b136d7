"""Turn the prompt decoder's raw outputs into one mask and one object pointer per object.

The decoder graph returns all four mask tokens; this module applies what
sam2's `MaskDecoder.forward` and `SAM2Base._forward_sam_heads` decide in
Python: multimask vs single mask, the stability fallback, the "object absent"
mask, and the no-object pointer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import TrackerConfig
from .numerics import NO_OBJ_SCORE


@dataclass(frozen=True)
class HeadOutput:
    """Per object (B): low_res [B, S/4, S/4] mask logits, obj_ptr [B, hidden], object_score [B], iou [B]."""

    low_res: np.ndarray
    obj_ptr: np.ndarray
    object_score: np.ndarray
    iou: np.ndarray


def use_multimask(cfg: TrackerConfig, is_init_cond_frame: bool, num_points: int) -> bool:
    """sam2's `_use_multimask`: three candidate masks on first clicks (and, in 2.1, while tracking)."""
    return (cfg.multimask_output_in_sam
            and (is_init_cond_frame or cfg.multimask_output_for_tracking)
            and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num)


def _stability(logits: np.ndarray, delta: float) -> np.ndarray:
    """IoU of the mask at +delta vs -delta thresholds, per mask: logits [B, h, w] -> [B]."""
    flat = logits.reshape(logits.shape[0], -1)
    inter = (flat > delta).sum(-1).astype(np.float32)
    union = (flat > -delta).sum(-1).astype(np.float32)
    return np.where(union > 0, inter / np.maximum(union, 1), np.float32(1.0))


def mix_no_object_pointer(obj_ptr: np.ndarray, present: np.ndarray, cfg: TrackerConfig, no_obj_ptr: np.ndarray) -> np.ndarray:
    """Blend the learned no-object pointer in where the object is absent; present: [B] in [0, 1]."""
    lam = present.astype(np.float32)[:, None]
    if cfg.fixed_no_obj_ptr:
        obj_ptr = lam * obj_ptr
    return (obj_ptr + (np.float32(1.0) - lam) * no_obj_ptr).astype(np.float32)


def select_outputs(raw: dict, multimask: bool, cfg: TrackerConfig, no_obj_ptr: np.ndarray | None) -> HeadOutput:
    """raw: decoder outputs low_res_masks [B,4,h,w], iou_scores [B,4], obj_ptrs [B,4,C], object_score_logits [B,1]."""
    masks_all, iou_all = raw["low_res_masks"], raw["iou_scores"]
    ptrs_all, score = raw["obj_ptrs"], raw["object_score_logits"][:, 0]
    b = np.arange(masks_all.shape[0])
    if multimask:
        masks, ious = masks_all[:, 1:], iou_all[:, 1:]
    elif cfg.dynamic_multimask_via_stability:
        best = np.argmax(iou_all[:, 1:], axis=-1) + 1
        stable = _stability(masks_all[:, 0], cfg.dynamic_multimask_stability_delta) >= cfg.dynamic_multimask_stability_thresh
        pick = np.where(stable, 0, best)
        masks, ious = masks_all[b, pick][:, None], iou_all[b, pick][:, None]
    else:
        masks, ious = masks_all[:, :1], iou_all[:, :1]
    tokens = ptrs_all[:, 1:] if (multimask and cfg.use_multimask_token_for_obj_ptr) else ptrs_all[:, :1]
    if cfg.pred_obj_scores:
        masks = np.where((score > 0)[:, None, None, None], masks, np.float32(NO_OBJ_SCORE))
    if multimask:
        best = np.argmax(ious, axis=-1)
        low, iou = masks[b, best], ious[b, best]
        ptr = tokens[b, best] if tokens.shape[1] > 1 else tokens[:, 0]
    else:
        low, iou, ptr = masks[:, 0], ious[:, 0], tokens[:, 0]
    if cfg.pred_obj_scores:
        present = 1.0 / (1.0 + np.exp(-score)) if cfg.soft_no_obj_ptr else (score > 0)
        ptr = mix_no_object_pointer(ptr, np.asarray(present), cfg, no_obj_ptr)
    return HeadOutput(low.astype(np.float32), ptr.astype(np.float32), score.astype(np.float32), iou.astype(np.float32))
