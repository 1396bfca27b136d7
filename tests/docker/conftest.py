"""Fixtures for the tests that run the built images. They need what scripts/docker_ci.sh builds and starts (a Docker
engine, the stand-in base images, the project's images); run on their own they are skipped with that reason, and
the Docker step of scripts/test.sh runs them (SKIP_DOCKER=1 is the only way to skip that step, and it says so)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.docker.dockerkit import CI, readable_tree


@pytest.fixture(scope="session")
def ci() -> CI:
    found = CI.from_env()
    if found is None:
        pytest.skip("needs the images and engine of scripts/docker_ci.sh (run `bash scripts/docker_ci.sh`)")
    return found


@pytest.fixture(scope="session")
def shared_dir():
    """Make world-readable temp folders under /tmp to bind-mount into containers (pytest's own are 0700)."""
    made = []

    def make(name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"sam2ci-{name}-", dir="/tmp"))
        made.append(path)
        readable_tree(path)
        return path
    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
