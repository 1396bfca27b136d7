"""Pure numeric pieces of the engine against sam2 / torch, and the memory-selection rules with exact values."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend.engine.heads import select_outputs, use_multimask
from backend.engine.memory import plan_memory, pointer_pos_enc, previous_frame, select_cond_frames
from backend.engine.model import TrackerConfig
from backend.engine.numerics import fill_holes, from_bf16, resize_bilinear, sine_pe_1d, to_bf16

SAM21 = TrackerConfig(
    num_maskmem=7, hidden_dim=256, mem_dim=64, sigmoid_scale_for_mem_enc=20.0, sigmoid_bias_for_mem_enc=-10.0,
    binarize_mask_from_pts_for_mem_enc=True, use_mask_input_as_output_without_sam=True, max_cond_frames_in_attn=-1,
    directly_add_no_mem_embed=True, multimask_output_in_sam=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
    multimask_output_for_tracking=True, use_multimask_token_for_obj_ptr=True, dynamic_multimask_via_stability=True,
    dynamic_multimask_stability_delta=0.05, dynamic_multimask_stability_thresh=0.98, memory_temporal_stride_for_eval=1,
    non_overlap_masks_for_mem_enc=False, use_obj_ptrs_in_encoder=True, max_obj_ptrs_in_encoder=16,
    add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True, use_signed_tpos_enc_to_obj_ptrs=True,
    only_obj_ptrs_in_the_past_for_eval=True, pred_obj_scores=True, soft_no_obj_ptr=False, fixed_no_obj_ptr=True,
    no_obj_embed_spatial=True, fill_hole_area=8, non_overlap_masks=False, add_all_frames_to_correct_as_cond=True,
    clear_non_cond_mem_around_input=False)


def test_bf16_round_trip_matches_torch():
    x = torch.randn(200_000) * 7
    x[:4] = torch.tensor([0.0, -0.0, 1e-40, 3.3895e38])
    ours = from_bf16(to_bf16(x.numpy()))
    assert np.array_equal(ours, x.to(torch.bfloat16).float().numpy())


def test_sine_pe_matches_sam2():
    from sam2.modeling.sam2_utils import get_1d_sine_pe
    pos = torch.tensor([0, 1, 3, 15, -2, -15]) / 15
    ref = get_1d_sine_pe(pos, dim=256).numpy()
    assert np.abs(sine_pe_1d(pos.numpy(), 256) - ref).max() < 1e-6


@pytest.mark.parametrize("src,dst", [((256, 256), (480, 640)), ((256, 256), (144, 176)), ((64, 64), (1080, 1920)),
                                     ((32, 48), (32, 48)), ((7, 5), (3, 2))])
def test_resize_bilinear_matches_torch(src, dst):
    x = (np.random.default_rng(0).standard_normal((2,) + src) * 10).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=dst, mode="bilinear", align_corners=False)[0].numpy()
    got = resize_bilinear(x, *dst)
    assert got.shape == (2,) + dst
    assert np.abs(got - ref).max() <= 1e-5


def test_fill_holes_fills_small_background_components_only():
    logits = np.full((12, 12), 5.0, np.float32)
    logits[2:4, 2:5] = -3.0          # 6-pixel hole: filled
    logits[7:10, 6:9] = -3.0         # 9-pixel hole: kept (> 8)
    logits[0, 11] = -1.0             # 1-pixel hole touching the border: filled (sam2 counts any component)
    logits[4, 9] = -1.0              # diagonal neighbours join a component (8-connectivity) ...
    logits[5, 10] = -1.0             # ... of 2 pixels: filled
    logits[9, 0:5] = -2.0            # two 5-pixel runs touching only diagonally: one 10-pixel component
    logits[10, 5:10] = -2.0          # with 8-connectivity (as sam2's kernel), so both are kept
    out = fill_holes(logits, 8)
    assert np.all(out[9, 0:5] == -2.0) and np.all(out[10, 5:10] == -2.0)
    assert np.all(out[2:4, 2:5] == np.float32(0.1)) and out[0, 11] == np.float32(0.1)
    assert out[4, 9] == out[5, 10] == np.float32(0.1)
    assert np.all(out[7:10, 6:9] == -3.0)
    assert np.array_equal(fill_holes(logits, 0), logits)


def test_select_cond_frames_matches_sam2():
    from sam2.modeling.sam2_utils import select_closest_cond_frames
    rng = np.random.default_rng(1)
    for _ in range(200):
        conds = [int(t) for t in rng.choice(100, size=rng.integers(1, 9), replace=False)]
        frame, cap = int(rng.integers(0, 100)), int(rng.choice([-1, 2, 3, 5]))
        sel, unsel = select_cond_frames(frame, conds, cap)
        ref_sel, ref_unsel = select_closest_cond_frames(frame, {t: t for t in conds}, cap)
        assert set(sel) == set(ref_sel) and set(unsel) == set(ref_unsel)


def test_previous_frame_with_stride():
    assert [previous_frame(20, r, 1, False) for r in (1, 2, 6)] == [19, 18, 14]
    assert [previous_frame(20, r, 1, True) for r in (1, 2, 6)] == [21, 22, 26]
    assert [previous_frame(20, r, 5, False) for r in (1, 2, 3)] == [19, 15, 10]
    assert [previous_frame(20, r, 5, True) for r in (1, 2, 3)] == [21, 25, 30]


def test_plan_memory_forward():
    tracked = set(range(0, 30)) - {0}
    plan = plan_memory(30, [0], lambda t: t in tracked, SAM21, num_frames=100, reverse=False)
    assert plan.spatial == ((0, 0), (1, 24), (2, 25), (3, 26), (4, 27), (5, 28), (6, 29))
    # the conditioning frame (distance 30) and the 15 frames before 30
    assert plan.pointers == ((30, 0),) + tuple((d, 30 - d) for d in range(1, 16))


def test_plan_memory_reverse_and_future_prompt():
    tracked = {11, 12, 13}
    plan = plan_memory(10, [20, 5], lambda t: t in tracked, SAM21, num_frames=40, reverse=True)
    assert plan.spatial == ((0, 20), (0, 5), (4, 13), (5, 12), (6, 11))
    # only prompts "in the past" in tracking order (later frames) give pointers; (frame - t) * -1 in reverse
    assert plan.pointers == ((10, 20), (1, 11), (2, 12), (3, 13))
    # forward tracking before the object's first prompt: no pointer at all
    early = plan_memory(3, [8], lambda t: False, SAM21, num_frames=40, reverse=False)
    assert early.spatial == ((0, 8),) and early.pointers == ()


def test_plan_memory_caps_conditioning_frames():
    cfg = replace(SAM21, max_cond_frames_in_attn=2)
    plan = plan_memory(50, [0, 46, 48, 49], lambda t: False, cfg, num_frames=100, reverse=False)
    # 49 (closest before) and 48 (next closest) are selected; the unselected 46 still serves as a previous frame
    assert plan.spatial == ((0, 48), (0, 49), (3, 46))
    assert plan.pointers == ((2, 48), (1, 49), (4, 46))


def test_pointer_pos_enc_matches_sam2_projection():
    rng = np.random.default_rng(2)
    consts = {"obj_ptr_tpos_proj_weight": rng.standard_normal((64, 256)).astype(np.float32),
              "obj_ptr_tpos_proj_bias": rng.standard_normal(64).astype(np.float32)}
    from sam2.modeling.sam2_utils import get_1d_sine_pe
    lin = torch.nn.Linear(256, 64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(consts["obj_ptr_tpos_proj_weight"]))
        lin.bias.copy_(torch.from_numpy(consts["obj_ptr_tpos_proj_bias"]))
        ref = lin(get_1d_sine_pe(torch.tensor([3, 1, -2]) / 15, dim=256)).numpy()
    assert np.abs(pointer_pos_enc([3, 1, -2], 16, SAM21, consts) - ref).max() < 1e-5


def test_use_multimask_rules():
    assert use_multimask(SAM21, True, 1) and use_multimask(SAM21, False, 0)
    assert not use_multimask(SAM21, True, 2)  # a box or two clicks: single mask
    assert not use_multimask(replace(SAM21, multimask_output_for_tracking=False), False, 0)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("score", [2.0, -1.0])
def test_select_outputs_matches_sam2_forward_sam_heads(model_256_f32, multimask, score):
    """Feed identical raw decoder outputs to sam2's `_forward_sam_heads` and to our selection."""
    from tests.models import build_oracle
    model = build_oracle(model_256_f32)
    rng = np.random.default_rng(3)
    b, lr = 3, 64
    masks = torch.from_numpy((rng.standard_normal((b, 4, lr, lr)) * 3).astype(np.float32))
    masks[1, 0] = 5.0                 # a stable single mask on object 1 (no stability fallback)
    ious = torch.from_numpy(rng.random((b, 4)).astype(np.float32))
    tokens = torch.from_numpy(rng.standard_normal((b, 4, 256)).astype(np.float32))
    scores = torch.full((b, 1), score)
    dec = model.sam_mask_decoder

    def fake_predict_masks(**kwargs):
        return masks.clone(), ious.clone(), tokens.clone(), scores.clone()

    dec.predict_masks = fake_predict_masks
    with torch.no_grad():
        ref = model._forward_sam_heads(torch.zeros(b, 256, 16, 16), high_res_features=[torch.zeros(b, 32, 64, 64),
                                       torch.zeros(b, 64, 32, 32)], multimask_output=multimask)
        raw = {"low_res_masks": masks.numpy(), "iou_scores": ious.numpy(),
               "obj_ptrs": model.obj_ptr_proj(tokens).numpy(), "object_score_logits": scores.numpy()}
    out = select_outputs(raw, multimask, SAM21, model.no_obj_ptr.detach().numpy()[0])
    assert np.array_equal(out.low_res, ref[3][:, 0].numpy())
    assert np.abs(out.obj_ptr - ref[5].numpy()).max() < 1e-5


def test_resize_bilinear_is_bit_identical_to_interpolating_each_output_row():
    """The column pass runs once per source row; every output value is still top*wy0 + bottom*wy1 of the same
    float32 column interpolations (the form the torch test above checks), to the last bit."""
    from backend.engine.numerics import _axis
    x = (np.random.default_rng(1).standard_normal((3, 256, 256)) * 20).astype(np.float32)
    y0, y1, wy0, wy1 = _axis(256, 480)
    x0, x1, wx0, wx1 = _axis(256, 640)
    top, bottom = x[..., y0, :], x[..., y1, :]
    a = top[..., x0] * wx0 + top[..., x1] * wx1
    b = bottom[..., x0] * wx0 + bottom[..., x1] * wx1
    assert np.array_equal(resize_bilinear(x, 480, 640), a * wy0[:, None] + b * wy1[:, None])
