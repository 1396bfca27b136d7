"""A small OpenVINO runtime adapter: compile the five graphs once, run them by name, count calls.

Graphs are compiled at construction (seconds); each `run` is serialised per
graph by a lock because an infer request is not re-entrant. Call counts and
cumulative seconds per graph feed the metrics and the tests ("did the image
encoder run again?").

Two priorities. `run` is foreground work (clicks, propagation). `run_background` (prewarm) runs on an infer
request of its own, one at a time, starts only while no foreground run is in flight, and is cancelled by the
first foreground run that starts while it computes: OpenVINO stops it at the next node, so a click never waits
behind a background encoding (it waits at most one node), and the background caller gets None and may retry.

Stoppable foreground work: inside `with runtime.stop_on(event):` every run on that thread stops at its next node
once `event` is set (polled every ABORT_POLL_MS) and raises `Aborted`. A propagation job runs so, with its cancel
event: a click that cancels the job waits for one node of the frame in flight, not for the whole frame.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import ModelBundle, ModelError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "f32", "bf16")
ABORT_POLL_MS = 10  # how often a stoppable run looks at its stop event


class Aborted(RuntimeError):
    """A run inside `Runtime.stop_on(event)` was stopped because `event` was set; it produced nothing."""


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


# Graphs that stay f32 on the CPU when the others run bf16, by model family (measured with
# tests/test_edgetam_parity.py, 256 px, 2-core AVX512-BF16 EPYC): with EdgeTAM's prompt decoder in bf16 its masks
# reached only IoU 0.963 (box, forward) and 0.913 (click correction) against EdgeTAM's torch predictor; with the
# decoder alone in f32, 0.993 and 0.976 (every other graph alone in f32: <= 0.967 and <= 0.946). The decoder is
# about 2% of a frame's time.
KEEP_F32: dict[str, tuple[str, ...]] = {"edgetam": ("prompt_decoder",)}


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
        self._core, self._configs = core, {}
        for g, p in bundle.graph_files.items():
            graph_precision = "f32" if self.precision == "bf16" and g in KEEP_F32.get(bundle.family, ()) \
                else self.precision
            config = device_config(self.devices[g], graph_precision, precision)
            if threads and self.devices[g].upper().startswith("CPU"):
                config["INFERENCE_NUM_THREADS"] = int(threads)
            self._configs[g] = config
            try:
                self._compiled[g] = core.compile_model(str(p), self.devices[g], config)
            except RuntimeError as e:
                raise ModelError(f"graph {g} does not compile on {self.devices[g]!r} (set DEVICE to a device this "
                                 f"machine has: {', '.join(core.available_devices)}): {e}") from None
        self._requests = {g: c.create_infer_request() for g, c in self._compiled.items()}
        self._locks = {g: threading.Lock() for g in self._compiled}
        self._init_priority()
        self._outputs = {g: [o.get_any_name() for o in c.outputs] for g, c in self._compiled.items()}
        self.stats = GraphStats()
        self._stats_lock = threading.Lock()
        log.info("compiled %d graphs of %s (%s; CPU precision %s) in %.1f s", len(self._compiled), bundle.name,
                 ", ".join(f"{g}={d}" for g, d in self.devices.items()), self.precision, time.perf_counter() - t0)

    def _init_priority(self) -> None:
        self._bg_requests: dict = {}             # graph -> the background lane's own infer request
        self._bg_lock = threading.Lock()         # one background inference at a time
        self._prio = threading.Condition()       # guards the three fields below
        self._fg_running = 0                     # foreground runs in flight
        self._fg_last_end = 0.0                  # time.monotonic() when the last foreground run ended
        self._bg_inflight = None                 # the background request computing now, if any
        self._bg_cancelled = False
        self.preempted = 0                       # background runs cancelled by a foreground run
        self.aborted = 0                         # foreground runs stopped by their stop event
        self.recompiled = 0                      # graphs recompiled after such a stop (see _recompile)
        self.on_event = None                     # tests: called as on_event(what, graph) at each start/end
        self._local = threading.local()          # .stop: the stop event of stoppable runs on this thread

    @contextmanager
    def stop_on(self, event: threading.Event | None):
        """Runs on this thread inside the block stop at their next node once `event` is set, raising `Aborted`
        (None: nothing changes). What a stopped run would have produced is lost: callers drop the unit of work."""
        prev = getattr(self._local, "stop", None)
        self._local.stop = event
        try:
            yield
        finally:
            self._local.stop = prev

    def _infer_stoppable(self, req, feed: dict, stop: threading.Event, graph: str) -> None:
        req.start_async(feed)
        try:
            while not req.wait_for(ABORT_POLL_MS):
                if stop.is_set():
                    req.cancel()
                    raise Aborted(f"{graph} stopped at a node: its work was cancelled")
        except Aborted:
            with contextlib.suppress(Exception):
                req.wait()  # cancelled: returns or raises at once
            if any(i.get_partial_shape().is_dynamic for i in self._compiled[graph].inputs):
                self._recompile(graph)  # static shapes (the image encoder) cannot go stale
            self.aborted += 1
            raise

    def _recompile(self, graph: str) -> None:
        """A fresh compiled model for a graph with dynamic shapes after one of its runs was cancelled mid-graph (the
        caller holds the graph's lock). OpenVINO 2026.4.1 keeps some nodes' shapes from the cancelled run in the
        compiled model itself, so a later run with other dynamic shapes fails shape inference or computes on stale
        shapes, even on a new infer request (seen in the load suite; benchmarks/cancel_safety.py reproduces it).
        Recompiling costs ~0.3 s for the 1024 px memory attention or decoder, paid only after a cancellation. (A
        spare compiled in the background would make the swap instant, but the load suite's RSS bound broke with
        one spare per dynamic graph: not kept.)"""
        t0 = time.perf_counter()
        self._compiled[graph] = self._core.compile_model(str(self.bundle.graph_files[graph]), self.devices[graph],
                                                         self._configs[graph])
        self._requests[graph] = self._compiled[graph].create_infer_request()
        self._bg_requests.pop(graph, None)  # the background lane makes its next request from the new model
        self.recompiled += 1
        log.info("recompiled %s after a cancelled run in %.2f s", graph, time.perf_counter() - t0)

    def _event(self, what: str, graph: str) -> None:
        if self.on_event is not None:
            self.on_event(what, graph)

    def run(self, graph: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run one graph; inputs by name (numpy), outputs by name (fresh numpy arrays). Foreground: a background
        inference in flight is cancelled first, so this never waits behind one."""
        t0 = time.perf_counter()
        with self._prio:
            self._fg_running += 1
            if self._bg_inflight is not None and not self._bg_cancelled:
                self._bg_cancelled = True
                self._bg_inflight.cancel()  # returns at once; the request stops at its next node
                self.preempted += 1
        try:
            with self._locks[graph]:
                stop = getattr(self._local, "stop", None)
                if stop is not None and stop.is_set():
                    raise Aborted(f"{graph} was not started: its work was cancelled")
                self._event("fg_start", graph)
                req = self._requests[graph]
                feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
                if stop is None:
                    req.infer(feed)
                else:
                    self._infer_stoppable(req, feed, stop, graph)
                out = {name: req.get_tensor(name).data.copy() for name in self._outputs[graph]}
                self._event("fg_end", graph)
        finally:
            with self._prio:
                self._fg_running -= 1
                self._fg_last_end = time.monotonic()
                self._prio.notify_all()
        self._count(graph, time.perf_counter() - t0)
        return out

    def run_background(self, graph: str, **inputs: np.ndarray) -> dict[str, np.ndarray] | None:
        """Run one graph at background priority: None (nothing computed) when foreground work was in flight at the
        start or started before it finished. Never delays a foreground `run` by more than one node."""
        t0 = time.perf_counter()
        with self._bg_lock:
            req = self._bg_requests.get(graph)
            if req is None:
                req = self._bg_requests[graph] = self._compiled[graph].create_infer_request()
            feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
            with self._prio:  # start and publish atomically: a foreground run either sees it (and cancels) or
                if self._fg_running:  # is seen here (and it never starts)
                    return None
                self._bg_cancelled = False
                self._event("bg_start", graph)
                req.start_async(feed)
                self._bg_inflight = req
            aborted = False
            try:
                req.wait()
            except Exception:  # OpenVINO raises ov::Cancelled from wait() when the request stopped early
                aborted = True
            with self._prio:
                self._bg_inflight = None
                cancelled = self._bg_cancelled
            if cancelled or aborted:  # aborted: stopped at a node; else it had finished: its outputs are dropped
                self._event("bg_cancelled" if aborted else "bg_discarded", graph)
                return None
            out = {name: req.get_tensor(name).data.copy() for name in self._outputs[graph]}
            self._event("bg_end", graph)
        self._count(graph, time.perf_counter() - t0)
        return out

    def wait_quiet(self, quiet_s: float, timeout: float) -> bool:
        """True once no foreground run has been in flight for `quiet_s` seconds (False after `timeout` s). Background
        work waits for this so it does not start in the gap between two runs of one click."""
        end = time.monotonic() + timeout
        with self._prio:
            while True:
                now = time.monotonic()
                idle_for = now - self._fg_last_end
                if not self._fg_running and idle_for >= quiet_s:
                    return True
                if now >= end:
                    return False
                self._prio.wait(min(end - now, max(quiet_s - idle_for, 0.01)))

    def _count(self, graph: str, dt: float) -> None:
        with self._stats_lock:
            self.stats.calls[graph] += 1
            self.stats.seconds[graph] += dt

    def calls(self, graph: str) -> int:
        return self.stats.calls[graph]

    def compiled_property(self, graph: str, name: str):
        """A property of one compiled graph as OpenVINO reports it, e.g. the precision it actually
        runs at: `compiled_property("image_encoder", "INFERENCE_PRECISION_HINT")`."""
        return self._compiled[graph].get_property(name)
