"""The DEVICE setting: OpenVINO device per graph, precision hints per device, a clear error when a graph does not
compile. Only CPU (and AUTO resolving to it) can run on this machine; GPU/NPU are checked for their settings and
for the failure message, not for results."""
import openvino as ov
import pytest

from backend.engine.model import GRAPHS, ModelBundle, ModelError
from backend.engine.runtime import Runtime, device_config, parse_devices
from tests import models


@pytest.mark.parametrize("spec, want", [
    ("CPU", {g: "CPU" for g in GRAPHS}),
    ("", {g: "CPU" for g in GRAPHS}),
    ("AUTO:GPU,CPU", {g: "AUTO:GPU,CPU" for g in GRAPHS}),
    ("image_encoder=GPU.1", {g: "GPU.1" if g == "image_encoder" else "CPU" for g in GRAPHS}),
    ("image_encoder=AUTO:GPU,CPU,*=NPU", {g: "AUTO:GPU,CPU" if g == "image_encoder" else "NPU" for g in GRAPHS}),
])
def test_parse_devices(spec, want):
    assert parse_devices(spec, GRAPHS) == want


@pytest.mark.parametrize("spec, match", [
    ("TPU", "not an OpenVINO device"),
    ("encoder=GPU", "names graph 'encoder'"),
    ("image_encoder=GPU,,*=CPU", "graph=device pairs"),
])
def test_bad_device_settings_say_what_to_write(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_devices(spec, GRAPHS)


def test_precision_hints_fit_each_device():
    assert device_config("CPU", "bf16", "auto")["INFERENCE_PRECISION_HINT"] == "bf16"
    assert device_config("GPU.0", "bf16", "auto")["INFERENCE_PRECISION_HINT"] == "f16"  # Intel GPUs have no bf16
    assert device_config("GPU", "f32", "f32")["INFERENCE_PRECISION_HINT"] == "f32"
    assert "INFERENCE_PRECISION_HINT" not in device_config("NPU", "bf16", "auto")
    auto = device_config("AUTO:GPU,CPU", "f32", "f32")["DEVICE_PROPERTIES"]
    assert auto == {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}, "GPU": {"INFERENCE_PRECISION_HINT": "f32"}}


@pytest.fixture(scope="module")
def bundle():
    return ModelBundle.load(models.export_dir(128, "f32"))


def test_auto_resolves_to_the_cpu_here_with_the_asked_precision(bundle):
    rt = Runtime(bundle, precision="f32", device="memory_attention=AUTO,*=CPU")
    assert rt.devices["memory_attention"] == "AUTO" and rt.devices["image_encoder"] == "CPU"
    assert list(rt.compiled_property("memory_attention", "EXECUTION_DEVICES")) == ["CPU"]
    assert rt.compiled_property("image_encoder", "INFERENCE_PRECISION_HINT").to_string() == "f32"


@pytest.mark.skipif("GPU" in ov.Core().available_devices, reason="this machine has a GPU")
def test_a_graph_that_does_not_compile_fails_at_start_with_openvinos_message(bundle):
    with pytest.raises(ModelError) as e:
        Runtime(bundle, precision="f32", device="image_encoder=GPU,*=CPU")
    msg = str(e.value)
    assert "image_encoder" in msg and "'GPU'" in msg and "CPU" in msg  # which graph, which device, what exists
    assert "Exception from" in msg or "GPU" in msg.split(":", 1)[1]  # OpenVINO's own reason follows
