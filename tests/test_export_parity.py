"""Each exported sub-model against sam2's own PyTorch code on identical inputs, at the real 1024 px size.

f32 IR: worst |ov - torch| / max|torch| <= 1e-4; bf16 export (fp16-stored weights, bf16 inference):
cosine >= 0.999. Memory attention at 1, 2, 4, 7 memories x 0, 1, 16 object pointers.
"""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest

from model_export.verify import Oracle, compare, random_inputs
from tests import models

SIZE = 1024
GRAPH_OUTPUTS = {
    "image_encoder": ("hr0", "hr1", "feat"),
    "prompt_decoder": ("low_res_masks", "iou_scores", "obj_ptrs", "object_score_logits"),
    "memory_encoder": ("maskmem_features",),
    "mask_prompt": ("low_res_logits", "mask_for_decoder", "mask_pixels"),
}


@pytest.fixture(scope="module")
def exports():
    return {p: models.export_dir(SIZE, p) for p in ("f32", "bf16")}


@pytest.fixture(scope="module")
def oracle(exports):
    return Oracle(models.build_oracle(exports["f32"]))


@pytest.fixture(scope="module")
def compiled(exports):
    core = ov.Core()
    cache = {}

    def get(precision, graph):
        if (precision, graph) not in cache:
            cache[precision, graph] = core.compile_model(str(exports[precision] / f"{graph}.xml"), "CPU",
                                                         {"INFERENCE_PRECISION_HINT": precision})
        return cache[precision, graph]
    return get


def check(precision, got, ref, what):
    d, rel, cos = compare(got, ref)
    if precision == "f32":
        assert rel <= 1e-4, f"{what}: relative error {rel:.3g} (max |d| {d:.3g})"
    else:
        assert cos >= 0.999, f"{what}: cosine {cos:.6f}"


@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("graph", list(GRAPH_OUTPUTS))
def test_graph_matches_sam2(compiled, oracle, precision, graph):
    inputs = random_inputs(graph, SIZE, seed=7)
    got = compiled(precision, graph)(inputs)
    ref = getattr(oracle, graph)(**inputs)
    assert set(ref) == set(GRAPH_OUTPUTS[graph])
    for name in GRAPH_OUTPUTS[graph]:
        assert got[name].shape == ref[name].shape
        check(precision, got[name], ref[name], f"{graph}.{name}")


@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("n_mem", [1, 2, 4, 7])
@pytest.mark.parametrize("n_ptr", [0, 1, 16])
def test_memory_attention_matches_sam2(compiled, oracle, precision, n_mem, n_ptr):
    """Against the stock complex-RoPE MemoryAttention; each pointer is 4 tokens of 64 channels."""
    inputs = random_inputs("memory_attention", SIZE, seed=n_mem * 100 + n_ptr, n_mem=n_mem, n_ptr=4 * n_ptr)
    got = compiled(precision, "memory_attention")(inputs)["conditioned"]
    ref = oracle.memory_attention(**inputs)["conditioned"]
    check(precision, got, ref, f"memory attention {n_mem} memories, {n_ptr} pointers")


def test_memory_attention_batches_objects(compiled, oracle):
    """Two objects with different memories in one call equal two separate calls."""
    a = random_inputs("memory_attention", SIZE, seed=1, n_mem=2, n_ptr=8)
    b = random_inputs("memory_attention", SIZE, seed=2, n_mem=2, n_ptr=8)
    both = {k: np.concatenate([a[k], b[k]]) for k in a}
    got = compiled("f32", "memory_attention")(both)["conditioned"]
    for i, single in enumerate((a, b)):
        check("f32", got[i:i + 1], oracle.memory_attention(**single)["conditioned"], f"object {i}")


def test_manifest_records_what_the_engine_needs(exports, oracle):
    m = json.loads((exports["bf16"] / "manifest.json").read_text())
    model = oracle.m
    assert m["random_weights"] is True and m["weights"]["source"] == "random-init" and "RANDOM" in m["weights"]["warning"]
    assert m["image_size"] == SIZE and m["precision"] == "bf16" and m["inference_precision_hint"] == "bf16"
    assert m["versions"]["openvino"] == ov.get_version()
    t = m["tracker"]
    # values read from the sam2 config and the video-predictor defaults, not hard-coded
    assert t["num_maskmem"] == model.num_maskmem == 7
    assert t["max_obj_ptrs_in_encoder"] == model.max_obj_ptrs_in_encoder
    assert t["sigmoid_scale_for_mem_enc"] == model.sigmoid_scale_for_mem_enc
    assert t["fill_hole_area"] == model.fill_hole_area
    assert t["binarize_mask_from_pts_for_mem_enc"] is True  # set by build_sam2_video_predictor
    assert t["no_obj_embed_spatial"] and t["fixed_no_obj_ptr"] and t["use_mask_input_as_output_without_sam"]
    with np.load(exports["bf16"] / "constants.npz") as c:
        assert c["maskmem_tpos_enc"].shape == (7, 64)
        assert np.array_equal(c["no_obj_ptr"], model.no_obj_ptr.detach().numpy()[0])
        assert c["maskmem_pos_enc"].shape == (64, SIZE // 16, SIZE // 16)
    for g, spec in m["graphs"].items():
        assert (exports["bf16"] / spec["xml"]).is_file()
    assert m["graphs"]["memory_attention"]["inputs"]["mem"] == [-1, -1, 64]  # memories and pointers stay dynamic
    assert m["graphs"]["image_encoder"]["inputs"]["image"] == [1, 3, SIZE, SIZE]
