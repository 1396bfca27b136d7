"""Which inference precision the engine asks OpenVINO for, per request, manifest hint and CPU capabilities."""
import logging

import pytest

from backend.engine.runtime import resolve_precision


@pytest.mark.parametrize("requested, hint, caps, want", [
    ("auto", "bf16", ["FP32", "BF16"], "bf16"),
    ("auto", "bf16", ["FP32", "INT8"], "f32"),
    ("auto", "f32", ["FP32", "BF16"], "f32"),
    ("f32", "bf16", ["FP32", "BF16"], "f32"),
    ("bf16", "f32", ["FP32", "BF16"], "bf16"),
    ("bf16", "bf16", ["FP32"], "f32"),  # what OpenVINO would run anyway: say so instead of pretending
])
def test_resolve_precision(requested, hint, caps, want):
    assert resolve_precision(requested, hint, caps) == want


def test_bf16_on_a_cpu_without_it_warns(caplog):
    with caplog.at_level(logging.WARNING):
        resolve_precision("bf16", "bf16", ["FP32", "INT8", "BIN"])
    assert "no bf16 support" in caplog.text and "f32" in caplog.text


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "bf16", ["FP32"])
