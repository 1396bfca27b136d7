"""Which past frames a frame attends to, and the memory tensors built from them.

A line-by-line port of the selection rules in sam2's
`SAM2Base._prepare_memory_conditioned_features` (conditioning frames at
temporal position 0, the `num_maskmem - 1` previous frames at positions
1..num_maskmem-1, object pointers with signed temporal distances), as pure
functions over frame indices so they can be tested exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .model import MemoryLayout, TrackerConfig
from .numerics import from_bf16, sine_pe_1d


@dataclass(frozen=True)
class MemoryPlan:
    """spatial: (t_pos, frame) pairs, t_pos 0 for conditioning frames; pointers: (temporal distance, frame)."""

    spatial: tuple[tuple[int, int], ...]
    pointers: tuple[tuple[int, int], ...]


def select_cond_frames(frame: int, cond_frames: Sequence[int], max_cond: int) -> tuple[list[int], list[int]]:
    """sam2's `select_closest_cond_frames`: (selected, unselected) conditioning frames, in input order."""
    if max_cond == -1 or len(cond_frames) <= max_cond:
        return list(cond_frames), []
    selected = []
    before = max((t for t in cond_frames if t < frame), default=None)
    if before is not None:
        selected.append(before)
    after = min((t for t in cond_frames if t >= frame), default=None)
    if after is not None:
        selected.append(after)
    rest = sorted((t for t in cond_frames if t not in selected), key=lambda t: abs(t - frame))
    selected += rest[: max_cond - len(selected)]
    chosen = set(selected)
    return [t for t in cond_frames if t in chosen], [t for t in cond_frames if t not in chosen]


def previous_frame(frame: int, t_rel: int, stride: int, reverse: bool) -> int:
    """The frame `t_rel` memory steps before `frame` in tracking order (stride applies beyond the last frame)."""
    if t_rel == 1:
        return frame + 1 if reverse else frame - 1
    if reverse:
        return -(-(frame + 2) // stride) * stride + (t_rel - 2) * stride
    return ((frame - 2) // stride) * stride - (t_rel - 2) * stride


def plan_memory(frame: int, cond_frames: Sequence[int], has_non_cond: Callable[[int], bool], cfg: TrackerConfig,
                num_frames: int, reverse: bool) -> MemoryPlan:
    """Memory frames and object pointers for tracking `frame` (not an initial conditioning frame).

    cond_frames: the object's conditioning frames in insertion order; has_non_cond(t): whether a
    non-conditioning output exists on frame t. Unselected conditioning frames (when
    max_cond_frames_in_attn limits them) still serve as ordinary previous frames.
    """
    selected, unselected = select_cond_frames(frame, cond_frames, cfg.max_cond_frames_in_attn)
    unselected_set = set(unselected)
    spatial = [(0, t) for t in selected]
    for t_pos in range(1, cfg.num_maskmem):
        prev = previous_frame(frame, cfg.num_maskmem - t_pos, cfg.memory_temporal_stride_for_eval, reverse)
        if has_non_cond(prev) or prev in unselected_set:
            spatial.append((t_pos, prev))
    pointers = []
    if cfg.use_obj_ptrs_in_encoder:
        max_ptrs = min(num_frames, cfg.max_obj_ptrs_in_encoder)
        ptr_cond = selected
        if cfg.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = [t for t in selected if (t >= frame if reverse else t <= frame)]
        sign = -1 if reverse else 1
        for t in ptr_cond:
            pointers.append(((frame - t) * sign if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame - t), t))
        for t_diff in range(1, max_ptrs):
            t = frame + t_diff if reverse else frame - t_diff
            if t < 0 or t >= num_frames:
                break
            if has_non_cond(t) or t in unselected_set:
                pointers.append((t_diff, t))
    return MemoryPlan(tuple(spatial), tuple(pointers))


@dataclass(frozen=True)
class MemoryInputs:
    """Inputs of the memory-attention graph for one object (batch dimension added by the caller).

    mem/mem_pos: [n*T, mem_dim] (T tokens per memory frame: h*w for SAM 2.1, the perceiver's for EdgeTAM);
    ptr/ptr_pos: [p*k, mem_dim] with k = hidden // mem_dim tokens per pointer.
    """

    mem: np.ndarray
    mem_pos: np.ndarray
    ptr: np.ndarray
    ptr_pos: np.ndarray


def pointer_pos_enc(distances: Sequence[int], max_ptrs: int, cfg: TrackerConfig, constants: dict) -> np.ndarray:
    """Temporal encoding of object pointers [P, mem_dim] (before splitting pointers into tokens)."""
    if not cfg.add_tpos_enc_to_obj_ptrs:
        return np.zeros((len(distances), cfg.mem_dim), np.float32)
    t_diff_max = max(max_ptrs - 1, 1)  # sam2 divides by zero on one-frame videos; use 1 there
    dim = cfg.hidden_dim if cfg.proj_tpos_enc_in_obj_ptrs else cfg.mem_dim
    pe = sine_pe_1d(np.asarray(distances, np.float32) / np.float32(t_diff_max), dim)
    if cfg.proj_tpos_enc_in_obj_ptrs:
        pe = pe @ constants["obj_ptr_tpos_proj_weight"].T + constants["obj_ptr_tpos_proj_bias"]
    return pe.astype(np.float32)


def gather_memory(plan: MemoryPlan, maskmem_of: Callable[[int, int], np.ndarray | None],
                  obj_ptr_of: Callable[[int], np.ndarray], cfg: TrackerConfig, constants: dict,
                  num_frames: int, layout: MemoryLayout | None = None) -> MemoryInputs:
    """Stack the planned memories into graph inputs.

    maskmem_of(t_pos, frame) returns the frame's memory as bf16 bits (`layout.shape`: [mem_dim, h, w] or
    [T, mem_dim]) or None when it is no longer available (then the frame is skipped, as sam2 skips missing
    frames); obj_ptr_of(frame) returns the object pointer [hidden]. layout: the model's memory layout (None:
    SAM 2.1's spatial maps, their position encoding read from `constants`).
    """
    tpos = constants["maskmem_tpos_enc"]
    if layout is None:
        pos = constants["maskmem_pos_enc"]
        layout = MemoryLayout("spatial", pos[0].size, cfg.mem_dim, pos.reshape(cfg.mem_dim, -1).T)
    mems, poss = [], []
    for t_pos, frame in plan.spatial:
        m = maskmem_of(t_pos, frame)
        if m is None:
            continue
        mems.append(layout.tokens(from_bf16(m)))
        poss.append(layout.pos_enc + tpos[cfg.num_maskmem - t_pos - 1])
    k = cfg.hidden_dim // cfg.mem_dim
    if plan.pointers:
        ptrs = np.stack([obj_ptr_of(t) for _, t in plan.pointers]).astype(np.float32)
        pos = pointer_pos_enc([d for d, _ in plan.pointers], min(num_frames, cfg.max_obj_ptrs_in_encoder), cfg, constants)
        ptr = ptrs.reshape(len(ptrs) * k, cfg.mem_dim) if k > 1 else ptrs
        ptr_pos = np.repeat(pos, k, axis=0) if k > 1 else pos
    else:
        ptr = np.zeros((0, cfg.mem_dim), np.float32)
        ptr_pos = np.zeros((0, cfg.mem_dim), np.float32)
    if not mems:
        raise RuntimeError("no spatial memory is available for this frame; add a prompt on a nearby frame")
    return MemoryInputs(np.concatenate(mems).astype(np.float32), np.concatenate(poss).astype(np.float32),
                        np.ascontiguousarray(ptr), np.ascontiguousarray(ptr_pos))
