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

from .model import ModelBundle

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


class Runtime:
    """Compiled graphs of one `ModelBundle` on one OpenVINO device."""

    def __init__(self, bundle: ModelBundle, *, precision: str = "auto", threads: int = 0,
                 device: str = "CPU", cache_dir: str | Path | None = None):
        import openvino as ov

        self.bundle = bundle
        core = ov.Core()
        if cache_dir:
            core.set_property({"CACHE_DIR": str(cache_dir)})
        caps = core.get_property(device, "OPTIMIZATION_CAPABILITIES") if device == "CPU" else []
        self.precision = resolve_precision(precision, bundle.inference_precision_hint, list(caps))
        config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        t0 = time.perf_counter()
        self._compiled = {g: core.compile_model(str(p), device, config) for g, p in bundle.graph_files.items()}
        self._requests = {g: c.create_infer_request() for g, c in self._compiled.items()}
        self._locks = {g: threading.Lock() for g in self._compiled}
        self._outputs = {g: [o.get_any_name() for o in c.outputs] for g, c in self._compiled.items()}
        self.stats = GraphStats()
        self._stats_lock = threading.Lock()
        log.info("compiled %d graphs of %s for %s/%s in %.1f s", len(self._compiled), bundle.name, device,
                 self.precision, time.perf_counter() - t0)

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
