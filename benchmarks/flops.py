"""Multiply-add work of an OpenVINO IR at concrete input shapes, counted from its MatMul and convolution ops.

    flops = GraphFlops("model/memory_attention.xml").count({"curr": (1, 4096, 256), "mem": (1, 28672, 64), ...})

FLOPs = 2 x multiply-adds of MatMul, Convolution, GroupConvolution, ConvolutionBackpropData and
ScaledDotProductAttention (QK^T and AV); element-wise ops, softmax and normalisation are not counted (they
are small next to these and their cost is memory-bound, not FLOP-bound). Counts are cached per shape set.
"""
from __future__ import annotations

from math import prod
from pathlib import Path


def op_flops(op) -> int:
    kind = op.get_type_name()
    if kind not in ("MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData", "ScaledDotProductAttention"):
        return 0
    out = [int(d) for d in op.get_output_partial_shape(0).to_shape()]
    a = [int(d) for d in op.get_input_partial_shape(0).to_shape()]
    b = [int(d) for d in op.get_input_partial_shape(1).to_shape()]
    if kind == "MatMul":
        k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
        if len(a) == 1:
            k = a[0]
        return 2 * prod(out) * k
    if kind == "Convolution":  # weights [Cout, Cin, kh, kw]
        return 2 * prod(out) * prod(b[1:])
    if kind == "GroupConvolution":  # weights [G, Cout/G, Cin/G, kh, kw]
        return 2 * prod(out) * prod(b[2:])
    if kind == "ConvolutionBackpropData":  # weights [Cin, Cout, kh, kw]; every input pixel scatters Cout*kh*kw
        return 2 * prod(a) * prod(b[1:])
    # SDPA: q [..., L, E], k [..., S, E], v [..., S, Ev]
    v = [int(d) for d in op.get_input_partial_shape(2).to_shape()]
    return 2 * prod(a) * b[-2] + 2 * prod(out[:-1]) * b[-2] * v[-1]


class GraphFlops:
    def __init__(self, xml: str | Path):
        self.xml = str(xml)
        self._cache: dict[tuple, int] = {}

    def count(self, shapes: dict[str, tuple[int, ...]]) -> int:
        key = tuple(sorted((k, tuple(v)) for k, v in shapes.items()))
        if key not in self._cache:
            import openvino as ov

            model = ov.Core().read_model(self.xml)
            model.reshape({k: ov.PartialShape(list(v)) for k, v in shapes.items()})
            self._cache[key] = sum(op_flops(op) for op in model.get_ordered_ops())
        return self._cache[key]
