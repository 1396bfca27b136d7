"""Trace the graphs of `graphs.py` into OpenVINO IR and store them at the chosen precision."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import graphs

log = logging.getLogger(__name__)

PRECISIONS = ("bf16", "f32", "int8-weights")
# inference precision the manifest recommends for each storage precision
PRECISION_HINT = {"f32": "f32", "bf16": "bf16", "int8-weights": "bf16"}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    module: Callable  # model -> nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    example: Callable  # (S, generator) -> dict of example tensors (traced at these sizes)
    shapes: Callable  # S -> list of partial shapes (-1 = dynamic), one per input


def _rn(g, *shape):
    return torch.randn(*shape, generator=g)


def graph_specs() -> list[GraphSpec]:
    """The five graphs with example inputs; dynamic dimensions are traced at sizes > 1 so nothing gets baked in."""
    return [
        GraphSpec(
            "image_encoder", graphs.ImageEncoderGraph, ("image",), ("hr0", "hr1", "feat"),
            lambda s, g: {"image": _rn(g, 1, 3, s, s)},
            lambda s: [[1, 3, s, s]],
        ),
        GraphSpec(
            "prompt_decoder", graphs.PromptDecoderGraph,
            ("image_embed", "hr0", "hr1", "point_coords", "point_labels", "mask_input", "has_mask_input"),
            ("low_res_masks", "iou_scores", "obj_ptrs", "object_score_logits"),
            lambda s, g: {
                "image_embed": _rn(g, 2, 256, s // 16, s // 16),
                "hr0": _rn(g, 1, 32, s // 4, s // 4),
                "hr1": _rn(g, 1, 64, s // 8, s // 8),
                "point_coords": torch.rand(2, 3, 2, generator=g) * s,
                "point_labels": torch.tensor([[2, 3, 1], [1, 0, -1]], dtype=torch.int32),
                "mask_input": _rn(g, 2, 1, s // 4, s // 4),
                "has_mask_input": torch.tensor([1.0, 0.0]),
            },
            lambda s: [[-1, 256, s // 16, s // 16], [-1, 32, s // 4, s // 4], [-1, 64, s // 8, s // 8],
                       [-1, -1, 2], [-1, -1], [-1, 1, s // 4, s // 4], [-1]],
        ),
        GraphSpec(
            "memory_encoder", graphs.MemoryEncoderGraph,
            ("pix_feat", "mask_logits", "binarize", "object_score_logits"), ("maskmem_features",),
            lambda s, g: {
                "pix_feat": _rn(g, 1, 256, s // 16, s // 16),
                "mask_logits": _rn(g, 2, 1, s // 4, s // 4) * 8,
                "binarize": torch.tensor([1.0, 0.0]),
                "object_score_logits": torch.tensor([[1.0], [-1.0]]),
            },
            lambda s: [[-1, 256, s // 16, s // 16], [-1, 1, s // 4, s // 4], [-1], [-1, 1]],
        ),
        GraphSpec(
            "memory_attention", graphs.MemoryAttentionGraph,
            ("curr", "mem", "mem_pos", "ptr", "ptr_pos"), ("conditioned",),
            lambda s, g: {
                "curr": _rn(g, 1, (s // 16) ** 2, 256),  # one frame, 2 objects: batches broadcast
                "mem": _rn(g, 2, 2 * (s // 16) ** 2, 64),
                "mem_pos": _rn(g, 2, 2 * (s // 16) ** 2, 64),
                "ptr": _rn(g, 2, 8, 64),
                "ptr_pos": _rn(g, 2, 8, 64),
            },
            lambda s: [[-1, (s // 16) ** 2, 256], [-1, -1, 64], [-1, -1, 64], [-1, -1, 64], [-1, -1, 64]],
        ),
        GraphSpec(
            "mask_prompt", graphs.MaskPromptGraph, ("mask",), ("low_res_logits", "mask_for_decoder", "mask_pixels"),
            lambda s, g: {"mask": (torch.rand(1, 1, 120, 200, generator=g) > 0.5).float()},
            lambda s: [[1, 1, -1, -1]],
        ),
    ]


def convert_graph(spec: GraphSpec, model, image_size: int, seed: int = 0):
    """Trace one graph and return the `ov.Model` with named, partially static inputs and outputs."""
    import openvino as ov

    module = spec.module(model).eval()
    example = spec.example(image_size, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ov_model = ov.convert_model(module, example_input=example)
    if len(ov_model.inputs) != len(spec.inputs) or len(ov_model.outputs) != len(spec.outputs):
        raise RuntimeError(f"{spec.name}: traced {len(ov_model.inputs)} inputs / {len(ov_model.outputs)} outputs, "
                           f"expected {len(spec.inputs)} / {len(spec.outputs)}")
    for port, name in zip(ov_model.inputs, spec.inputs):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, spec.outputs):
        port.get_tensor().set_names({name})
    ov_model.reshape({name: ov.PartialShape(shape) for name, shape in zip(spec.inputs, spec.shapes(image_size))})
    return ov_model


def save_graph(ov_model, path: Path, precision: str) -> Path:
    """Store an IR: f32 weights, fp16-compressed weights (bf16) or NNCF int8 weight compression."""
    import openvino as ov

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8-weights":
        import nncf

        ov_model = nncf.compress_weights(ov_model)
    ov.save_model(ov_model, str(path), compress_to_fp16=(precision == "bf16"))
    return path
