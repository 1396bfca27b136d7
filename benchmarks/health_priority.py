"""How long a /health probe waits on busy cores, with the busy work at the health process's priority or below it.

The situation inside the backend's container (one cgroup, so the kernel's per-session CPU groups do not apply): the
health process (`backend.serving.healthd`) shares the cores with the worker's OpenVINO and request threads. This
starts the health process and `--burners` CPU-bound processes (2 per core by default, like OpenVINO's threads plus
the request threads' Python work) all in this one session, probes GET /health every 0.1 s from a fresh connection
for `--seconds`, with the burners at nice 0 and at WORKER_NICE (10) in this session, and at nice 0 in a session of
their own (where the kernel shares CPU per session, autogroup, that is what the backend does for its health
process), and prints p50/p99/max per case.

    .venv/bin/python benchmarks/health_priority.py [--seconds 20] [--burners 4] [--nice 10]

Figures depend on the machine and on what else runs: say which CPU (lscpu) and the load average.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BURN = "import os, sys; os.nice(int(sys.argv[1]))\nwhile True: pass"


def _probe(port: int) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        return (time.perf_counter() - t0) * 1000 if resp.status == 200 else float("inf")
    except OSError:
        return float("inf")
    finally:
        conn.close()


def _case(port: int, burners: int, nice: int, seconds: float, own_session: bool = False) -> np.ndarray:
    procs = [subprocess.Popen([sys.executable, "-c", BURN, str(nice)], start_new_session=own_session)
             for _ in range(burners)]
    try:
        time.sleep(1.0)
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            out.append(_probe(port))
            time.sleep(0.1)
        return np.array(out)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--burners", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--port", type=int, default=19191)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "health.json"
        state.write_text(json.dumps({"status": "UP", "http_status": 200, "heartbeat": time.time() + 3600}))
        healthd = subprocess.Popen([sys.executable, "-m", "backend.serving.healthd", "--port", str(a.port), "--state",
                                    str(state), "--parent", str(os.getpid())], cwd=ROOT)
        try:
            while _probe(a.port) == float("inf"):
                time.sleep(0.1)
            for nice, own in ((0, False), (a.nice, False), (0, True)):
                ms = _case(a.port, a.burners, nice, a.seconds, own)
                where = "in a session of their own" if own else "in the health process's session"
                print(f"{a.burners} CPU burners at nice {nice:2d} {where}, health process at nice 0: /health "
                      f"n={len(ms)} p50={np.median(ms):.1f} ms p99={np.percentile(ms, 99):.1f} ms max={ms.max():.1f} "
                      f"ms; load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        finally:
            healthd.terminate()
            healthd.wait(10)


if __name__ == "__main__":
    main()
