"""A local Ray cluster for tests and benchmarks: `ray start --head` on 127.0.0.1, few CPUs, a small object store,
then the tracking deployment put on it with `serve.run` (HTTP proxy on 127.0.0.1).

Everything is reached through loopback. The head runs as `ray start --head --block` in a process group of its own;
`stop()` ends that group by its id (never `ray stop`, which would stop every Ray process on the machine).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.e2e.ls_server import free_port

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"


@dataclass
class RayCluster:
    address: str
    temp_dir: Path
    metrics_port: int
    proc: subprocess.Popen | None = None
    serve_port: int = 0

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}/sam2"

    def deploy(self, replica_env: dict[str, str], *, replicas: int, replica_cpus: float = 1.0,
               timeout_s: float = 240.0) -> None:
        """Put the tracking deployment on the cluster (from this process, as a Ray driver) and wait for health."""
        import ray
        from ray import serve

        from backend.serve_app import build_app

        if not ray.is_initialized():
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        if not self.serve_port:
            self.serve_port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": self.serve_port})
        env = {**replica_env, "RAY_REPLICAS": str(replicas), "RAY_REPLICA_CPUS": str(replica_cpus)}
        serve.run(build_app({"env": env}), name="sam2", route_prefix="/sam2", blocking=False)
        end = time.monotonic() + timeout_s
        ready: set[str] = set()
        while time.monotonic() < end:  # every replica RUNNING in Serve and its model loaded
            try:
                app = serve.status().applications.get("sam2")
                states = app.deployments["TaskTracker"].replica_states if app and app.deployments else {}
                r = requests.get(self.serve_url + "/health", timeout=5)
                if r.ok and r.json()["health"]["state"] == "ready":
                    ready.add(r.json()["replica"])
                live = {a["replica"] for a in self.replica_actors()}
                if states.get("RUNNING") == replicas and len(live) == replicas and live <= ready:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the deployment did not become healthy in {timeout_s} s; Ray logs in {self.temp_dir}")

    def replica_actors(self) -> list[dict]:
        """Live TaskTracker replica actors: [{"name", "replica"}] (from the GCS; no dashboard needed)."""
        import ray

        out = []
        for a in ray.util.list_named_actors(all_namespaces=True):
            name = a["name"]  # SERVE_REPLICA::sam2#TaskTracker#<replica id>
            if a["namespace"] == "serve" and "#TaskTracker#" in name:
                out.append({"name": name, "replica": name.rsplit("#", 1)[-1]})
        return out

    def kill_replica(self, replica_id: str) -> None:
        """Kill one replica's actor (Serve notices and starts a replacement)."""
        import ray

        for a in self.replica_actors():
            if a["replica"] == replica_id:
                ray.kill(ray.get_actor(a["name"], namespace="serve"), no_restart=True)
                return
        raise AssertionError(f"no live replica {replica_id}: {self.replica_actors()}")

    def shutdown_serve(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        self.serve_port = 0

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # the driver only: the whole cluster (Serve included) goes with the process group below
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of this group is left (workers)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster(*, num_cpus: int = 2, object_store_mb: int = 80, timeout_s: float = 120.0) -> RayCluster:
    """`ray start --head` bound to 127.0.0.1 with its own temp dir; workers import the repo (PYTHONPATH)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
           "PATH": str(RAY.parent) + os.pathsep + os.environ.get("PATH", "")}
    cmd = [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={num_cpus}",
           f"--object-store-memory={object_store_mb << 20}", "--include-dashboard=false", f"--temp-dir={temp_dir}",
           f"--metrics-export-port={metrics_port}", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--node-manager-port={free_port()}",
           f"--object-manager-port={free_port()}", f"--ray-client-server-port={free_port()}", "--block"]
    log = open(temp_dir / "ray-start.log", "ab")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = RayCluster(f"127.0.0.1:{port}", temp_dir, metrics_port, proc=proc)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            text = (temp_dir / "ray-start.log").read_text(errors="replace")
            cluster.stop()
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{text[-3000:]}")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0 and (temp_dir / "session_latest").exists():
                break
        time.sleep(0.5)
    else:
        cluster.stop()
        raise RuntimeError(f"ray start did not listen on {port} in {timeout_s} s")
    os.environ["RAY_ADDRESS"] = cluster.address  # for the state API in this process
    return cluster
