"""What the load suite measures from outside the backend: /health probes split into where their time went, the
worker's RSS, CPU seconds per process group, the CPU model. The sampler runs in a forked process of its own."""
from __future__ import annotations

import base64
import http.client
import os
import threading
import time

import numpy as np
import psutil

from backend.ls.maskurl import PREFIX


def _run_delay_ms(schedstat: str) -> float:
    """Time a thread has spent runnable but waiting for a CPU (/proc/.../schedstat, 2nd field, ns) in ms."""
    try:
        with open(schedstat) as f:
            return int(f.read().split()[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


def _probe(port: int) -> tuple[int | None, float, float, str]:
    """GET /health on a fresh connection (as Docker's HEALTHCHECK or a load balancer does): (status or None, ms,
    the server's own ms from its Server-Timing header or nan, a note on failure)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        timing = resp.getheader("Server-Timing") or ""
        server = float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
        return resp.status, ms, server, "" if resp.status == 200 else body[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, (time.perf_counter() - t0) * 1000, float("nan"), f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def sample(main_port: int, health_port: int | None, worker_pid: int, healthd_pid: int | None, duration_s: float,
            out) -> None:
    """In a process and a session of its own, like an orchestrator's prober outside the backend's and the load
    generator's process trees (where the kernel shares CPU per session, the annotator threads' JSON work would
    otherwise delay the prober's own clock): GET /health every 0.2 s on the main port and on HEALTH_PORT, the
    worker's RSS every second and the load average every 5 s, for `duration_s`. Each HEALTH_PORT probe is split
    into the server's own time (Server-Timing), how long this prober and the health process's accepting thread
    waited for a CPU (run delay), and the rest. LOAD_PROBER_SESSION=shared keeps it in pytest's session (to
    measure what that costs)."""
    if os.environ.get("LOAD_PROBER_SESSION", "own") != "shared":
        os.setsid()
    main, side, rss, load, errors = [], [], [], [], []
    worker = psutil.Process(worker_pid)
    mine = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/schedstat"
    theirs = f"/proc/{healthd_pid}/task/{healthd_pid}/schedstat" if healthd_pid else ""
    end, i = time.monotonic() + duration_s, 0
    while time.monotonic() < end:
        status, ms, _, note = _probe(main_port)
        main.append(ms if status == 200 else float("inf"))
        if status != 200:
            errors.append(f"main-port /health -> {status}: {note}")
        if health_port:
            me0, hd0 = _run_delay_ms(mine), _run_delay_ms(theirs)
            status, ms, server, note = _probe(health_port)
            me1, hd1 = _run_delay_ms(mine), _run_delay_ms(theirs)
            side.append((ms if status == 200 else float("inf"), server, me1 - me0, hd1 - hd0))
            if status != 200:
                errors.append(f"HEALTH_PORT /health -> {status} after {ms:.0f} ms: {note}")
        if i % 5 == 0:
            try:
                rss.append(worker.memory_info().rss / 2**20)
            except psutil.Error:
                errors.append("the backend worker process disappeared")
        if i % 25 == 0:
            load.append(os.getloadavg()[0])
        i += 1
        time.sleep(0.2)
    out.send((main, side, rss, load, errors))
    out.close()


def cpu_s(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named group of processes."""
    out = {}
    for name, group in procs.items():
        total = 0.0
        for p in group:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        out[name] = total
    return out


def breakdown(side: list[tuple[float, float, float, float]]) -> str:
    """HEALTH_PORT percentiles, and where the time of the slowest 1% of probes went."""
    ms = np.array([s[0] for s in side])
    worst = sorted((s for s in side if np.isfinite(s[0])), key=lambda s: s[0])[-max(1, len(side) // 100):]
    part = lambda i: np.nanmean([s[i] for s in worst]) if worst else float("nan")  # noqa: E731
    return (f"HEALTH_PORT /health n={len(ms)} p50={np.median(ms):.1f} ms p99={np.percentile(ms, 99):.1f} ms "
            f"max={ms.max():.1f} ms (slowest 1%: {part(0):.1f} ms, of which the health process's own "
            f"{part(1):.1f} ms, the prober waiting for a CPU {part(2):.1f} ms, the health process's accepting "
            f"thread waiting for a CPU {part(3):.1f} ms)")


def canvas_pixels(value: dict) -> float | None:
    """Pixels of the canvas a brush mask was drawn on, from its header alone (nothing decoded): an RLE's value count
    is width * height * 4 (a count that is not a multiple of 4 gives a fraction, never a whole canvas), a PNG data
    URL's IHDR holds width and height; None if it is neither."""
    if value.get("rle") is not None:
        return int.from_bytes(bytes(value["rle"][:4]), "big") / 4
    url = value.get("maskDataURL")
    if not isinstance(url, str) or not url.startswith(PREFIX):
        return None
    head = base64.b64decode(url[len(PREFIX):len(PREFIX) + 32])  # signature + IHDR: width, height at bytes 16-24
    return int.from_bytes(head[16:20], "big") * int.from_bytes(head[20:24], "big")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        return "?"
