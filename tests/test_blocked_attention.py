"""The memory attention's key-blocked cross-attention (model_export.graphs) equals attention over all keys at once.

In torch (float64, so the comparison shows the algebra, not rounding) and in the exported OpenVINO graph, whose one
infer request must stay right when a call without object pointers comes first (OpenVINO 2026.4's fused attention
kernel returned garbage there when the pointers went through it).
"""
from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
import torch

from model_export.graphs import blocked_attention, merge_blocks, pointer_attention
from model_export.verify import random_inputs
from tests import models


def reference(q, km, kp, vm, vp):
    k, v = torch.cat([km, kp], dim=1), torch.cat([vm, vp], dim=1)
    return torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v


def blocked(q, km, kp, vm, vp, hw):
    b, m, d = q.shape
    blocks = blocked_attention(q.unsqueeze(1), km.reshape(b, -1, hw, d), vm.reshape(b, -1, hw, vm.shape[-1]))
    ptrs = pointer_attention(q, kp, vp)
    return merge_blocks(*(torch.cat(x, dim=1) for x in zip(blocks, ptrs)))


@pytest.mark.parametrize("n_mem, n_ptr, scale", [(1, 0, 1.0), (3, 5, 1.0), (7, 16, 1.0), (2, 4, 1.8), (4, 0, 1.8),
                                                 (5, 64, 0.01)])
def test_blocks_merge_to_attention_over_all_keys(n_mem, n_ptr, scale):
    """scale 1.8: rows whose largest score is 50-85 above their block's mean (softmax rows one-hot to 1e-20) stay
    exact; 0.01: nearly uniform rows. (Beyond 87 the sink's weight underflows in float32: see `blocked_attention`.)"""
    g = torch.Generator().manual_seed(n_mem * 100 + n_ptr)
    hw, d, c, b = 48, 32, 8, 2

    def rn(*shape, s=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * s
    q, km, kp = rn(b, hw, d, s=scale), rn(b, n_mem * hw, d, s=scale), rn(b, n_ptr, d, s=scale)
    vm, vp = rn(b, n_mem * hw, c), rn(b, n_ptr, c)
    ref = reference(q, km, kp, vm, vp)
    got = blocked(q, km, kp, vm, vp, hw)
    scores = (q.unsqueeze(1) @ km.reshape(b, -1, hw, d).transpose(-1, -2))
    spread = (scores.amax(dim=-1) - scores.mean(dim=-1)).max()
    assert spread < 87 and (scale < 1.5 or spread > 50), float(spread)
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() <= 1e-10 * ref.abs().max()
    # informative: the merge weights matter (the blocks' plain average is far off)
    blocks, _ = blocked_attention(q.unsqueeze(1), km.reshape(b, -1, hw, d), vm.reshape(b, -1, hw, c))
    if n_mem > 1:
        assert (blocks.mean(dim=1) - ref).abs().max() > 1e-3 * ref.abs().max()


def test_no_pointers_weigh_nothing():
    q, k, v = torch.randn(1, 6, 4), torch.zeros(1, 0, 4), torch.zeros(1, 0, 3)
    out, log_z = pointer_attention(q, k, v)
    assert out.shape == (1, 1, 6, 3) and (out == 0).all()
    assert torch.isneginf(log_z).all()


@pytest.fixture(scope="module")
def graph():
    path = models.export_dir(128, "f32") / "memory_attention.xml"
    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def test_one_infer_request_across_memory_and_pointer_counts(graph):
    """The engine reuses one request for every call; a call without pointers first must not spoil later ones."""
    req = graph.create_infer_request()
    for n_mem, n_ptr in [(1, 0), (7, 64), (2, 0), (3, 16), (7, 28), (1, 4)]:
        inputs = random_inputs("memory_attention", 128, seed=n_mem * 100 + n_ptr, n_mem=n_mem, n_ptr=n_ptr)
        req.infer(inputs)
        got = req.get_output_tensor(0).data.copy()
        fresh = graph.create_infer_request()
        fresh.infer(inputs)
        ref = fresh.get_output_tensor(0).data
        assert np.isfinite(got).all(), (n_mem, n_ptr)
        np.testing.assert_array_equal(got, ref, err_msg=f"{n_mem} memories, {n_ptr} pointer tokens")


def test_objects_sharing_the_frame_equal_one_call_each(graph):
    """The engine's batched call: the frame once ([1,hw,256]) for 3 objects with their own memories and pointers."""
    objs = [random_inputs("memory_attention", 128, seed=40 + i, n_mem=7, n_ptr=28) for i in range(3)]
    curr = objs[0]["curr"]
    batch = {k: np.concatenate([o[k] for o in objs]) for k in ("mem", "mem_pos", "ptr", "ptr_pos")}
    together = graph(dict(batch, curr=curr))[0]
    assert together.shape[0] == 3
    for i, o in enumerate(objs):
        alone = graph(dict(o, curr=curr))[0]
        assert np.abs(together[i] - alone[0]).max() <= 1e-5 * np.abs(alone).max(), i
    assert np.abs(together[0] - together[1]).max() > 1e-2 * np.abs(together[0]).max()  # the objects differ
