"""Small helpers for the tests that run the built images (tests/docker), driven by scripts/docker_ci.sh.

The script builds the images and passes their names in the environment (`CI` below); these helpers run the Debian
docker client and the Compose v2 binary it names, label everything with the run id (so the script's exit trap removes
whatever a failed test leaves behind), and record figures (seconds, MB) in the script's figures.json. Only loopback
addresses of this machine and the containers' own network are ever contacted.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CI:
    """What scripts/docker_ci.sh built and how to reach it (read from SAM2_CI_* variables)."""

    docker: str  # the docker client binary
    compose: str  # the Compose v2 binary (standalone)
    run_id: str  # label value sam2-ci.run=<run_id> and the compose project name
    image: str  # the runtime image (MODEL_SOURCE=local), tagged as docker-compose.yml names the backend image
    ls_image: str  # the Label Studio STAND-IN image
    random_image: str | None  # the MODEL_SOURCE=random-init image, when it was built
    figures: Path

    @classmethod
    def from_env(cls) -> "CI | None":
        env = os.environ
        if not env.get("SAM2_CI_DOCKER"):
            return None
        return cls(docker=env["SAM2_CI_DOCKER"], compose=env["SAM2_CI_COMPOSE"], run_id=env["SAM2_CI_RUN_ID"],
                   image=env["SAM2_CI_IMAGE"], ls_image=env["SAM2_CI_LS_IMAGE"],
                   random_image=env.get("SAM2_CI_RANDOM_IMAGE") or None, figures=Path(env["SAM2_CI_FIGURES"]))

    # -- docker ------------------------------------------------------------------------------------------------------
    def docker_run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """`docker ARGS...` -> the completed process (text); raises with stderr when `check` and it failed."""
        proc = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} -> exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return proc

    def out(self, *args: str) -> str:
        return self.docker_run(*args).stdout.strip()

    def inspect(self, container: str) -> dict:
        return json.loads(self.out("inspect", container))[0]

    def label(self) -> list[str]:
        return ["--label", f"sam2-ci.run={self.run_id}"]

    # -- figures -----------------------------------------------------------------------------------------------------
    def figure(self, key: str, value: float | str) -> None:
        """Record a figure in figures.json (printed by scripts/docker_ci.sh at the end)."""
        data = json.loads(self.figures.read_text()) if self.figures.is_file() else {}
        data[key] = round(value, 2) if isinstance(value, float) else value
        self.figures.write_text(json.dumps(data, indent=2, sort_keys=True))
        logger.info("figure %s = %s", key, data[key])


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.2,
             on_timeout: Callable[[], str] = lambda: "") -> object:
    """Poll `predicate` until it returns something truthy (returned) or `timeout_s` passes (AssertionError)."""
    end = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < end:
        try:
            last = predicate()
            if last:
                return last
        except (requests.RequestException, OSError) as exc:
            last = exc
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})\n{on_timeout()}")


def health_up(url: str) -> dict | None:
    """GET <url>/health -> its JSON when the status is UP, else None."""
    resp = requests.get(url + "/health", timeout=3)
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    return body if resp.status_code == 200 and body.get("status") == "UP" else None


def readable_tree(path: Path) -> None:
    """Make `path` and everything under it world-readable: the containers run as uid 10001 (backend) and 1001 (LS)."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
