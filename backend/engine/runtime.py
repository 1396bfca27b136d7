"""A small OpenVINO runtime adapter: compile the five graphs once, run them by name, count calls.

Graphs are compiled at construction (seconds); each `run` is serialised per
graph by a lock because an infer request is not re-entrant. Call counts and
cumulative seconds per graph feed the metrics and the tests ("did the image
encoder run again?").
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import ModelBundle, ModelError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "f32", "bf16")


def resolve_precision(requested: str, hint: str, cpu_capabilities: list[str]) -> str:
    """Inference precision to ask the CPU plugin for.

    requested: "auto" (the manifest's hint, downgraded to f32 on CPUs without
    bf16 support), "f32" (exact, for parity checks) or "bf16".
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    want = hint if requested == "auto" else requested
    if want == "bf16" and "BF16" not in cpu_capabilities:
        if requested == "bf16":
            log.warning("this CPU has no bf16 support (capabilities: %s); OpenVINO runs the graphs in f32",
                        ", ".join(cpu_capabilities))
        want = "f32"
    return want


@dataclass
class GraphStats:
    calls: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)


DEVICES = ("CPU", "GPU", "NPU", "AUTO", "HETERO", "MULTI")


def parse_devices(spec: str, graphs: tuple[str, ...]) -> dict[str, str]:
    """OpenVINO device per graph from a setting.

    spec: one device for every graph ("CPU", "GPU", "GPU.1", "NPU", "AUTO", "AUTO:GPU,CPU"), or per graph
    "image_encoder=GPU,memory_attention=CPU,*=CPU" ("*" = every graph not named; default CPU). In the
    per-graph form a comma-separated piece without "=" continues the previous device (AUTO:GPU,CPU).
    """
    spec = (spec or "CPU").strip()
    if "=" not in spec:
        table = {"*": spec}
    else:
        table, last = {}, None  # last: the graph name the previous piece set
        for piece in (p.strip() for p in spec.split(",")):
            if "=" in piece:
                name, dev = (s.strip() for s in piece.split("=", 1))
                if name != "*" and name not in graphs:
                    raise ValueError(f"DEVICE names graph {name!r}; graphs are {', '.join(graphs)} or * for the rest")
                table[name], last = dev, name
                continue
            if last is None or not piece:
                raise ValueError(f"DEVICE {spec!r}: write graph=device pairs separated by commas")
            table[last] += "," + piece
    out = {g: table.get(g, table.get("*", "CPU")) for g in graphs}
    for g, dev in out.items():
        base = dev.split(":", 1)[0].split(".", 1)[0].upper()
        if base not in DEVICES or not dev:
            raise ValueError(f"device {dev!r} for {g} is not an OpenVINO device ({', '.join(DEVICES)})")
    return out


def device_config(device: str, cpu_precision: str, requested: str) -> dict:
    """Compile properties for one device: precision hints that fit it.

    CPU: the resolved precision (bf16 where the CPU has it, f32 for exact parity). GPU: f16 unless f32 was asked
    for (Intel GPUs have no bf16). NPU: its own precision (it takes no f32/bf16 hint). AUTO/HETERO/MULTI: the
    CPU and GPU hints, handed to whichever device it picks.
    """
    gpu = "f32" if requested == "f32" else "f16"
    base = device.split(":", 1)[0].split(".", 1)[0].upper()
    cfg: dict = {"PERFORMANCE_HINT": "LATENCY"}
    if base == "CPU":
        cfg["INFERENCE_PRECISION_HINT"] = cpu_precision
    elif base == "GPU":
        cfg["INFERENCE_PRECISION_HINT"] = gpu
    elif base in ("AUTO", "HETERO", "MULTI"):
        cfg["DEVICE_PROPERTIES"] = {"CPU": {"INFERENCE_PRECISION_HINT": cpu_precision},
                                    "GPU": {"INFERENCE_PRECISION_HINT": gpu}}
    return cfg


class Runtime:
    """Compiled graphs of one `ModelBundle` on one OpenVINO device."""

    def __init__(self, bundle: ModelBundle, *, precision: str = "auto", threads: int = 0,
                 device: str = "CPU", cache_dir: str | Path | None = None):
        import openvino as ov

        self.bundle = bundle
        core = ov.Core()
        if cache_dir:
            core.set_property({"CACHE_DIR": str(cache_dir)})
        self.devices = parse_devices(device, tuple(bundle.graph_files))
        uses_cpu = any(d.split(":", 1)[0].upper() in ("CPU", "AUTO", "HETERO", "MULTI") for d in self.devices.values())
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") if uses_cpu else []
        self.precision = resolve_precision(precision, bundle.inference_precision_hint, list(caps))
        t0 = time.perf_counter()
        self._compiled = {}
        for g, p in bundle.graph_files.items():
            config = device_config(self.devices[g], self.precision, precision)
            if threads and self.devices[g].upper().startswith("CPU"):
                config["INFERENCE_NUM_THREADS"] = int(threads)
            try:
                self._compiled[g] = core.compile_model(str(p), self.devices[g], config)
            except RuntimeError as e:
                raise ModelError(f"graph {g} does not compile on {self.devices[g]!r} (set DEVICE to a device this "
                                 f"machine has: {', '.join(core.available_devices)}): {e}") from None
        self._requests = {g: c.create_infer_request() for g, c in self._compiled.items()}
        self._locks = {g: threading.Lock() for g in self._compiled}
        self._outputs = {g: [o.get_any_name() for o in c.outputs] for g, c in self._compiled.items()}
        self.stats = GraphStats()
        self._stats_lock = threading.Lock()
        log.info("compiled %d graphs of %s (%s; CPU precision %s) in %.1f s", len(self._compiled), bundle.name,
                 ", ".join(f"{g}={d}" for g, d in self.devices.items()), self.precision, time.perf_counter() - t0)

    def run(self, graph: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run one graph; inputs by name (numpy), outputs by name (fresh numpy arrays)."""
        t0 = time.perf_counter()
        with self._locks[graph]:
            req = self._requests[graph]
            req.infer({k: np.ascontiguousarray(v) for k, v in inputs.items()})
            out = {name: req.get_tensor(name).data.copy() for name in self._outputs[graph]}
        dt = time.perf_counter() - t0
        with self._stats_lock:
            self.stats.calls[graph] += 1
            self.stats.seconds[graph] += dt
        return out

    def calls(self, graph: str) -> int:
        return self.stats.calls[graph]

    def compiled_property(self, graph: str, name: str):
        """A property of one compiled graph as OpenVINO reports it, e.g. the precision it actually
        runs at: `compiled_property("image_encoder", "INFERENCE_PRECISION_HINT")`."""
        return self._compiled[graph].get_property(name)
