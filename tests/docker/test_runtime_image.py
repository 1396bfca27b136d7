"""The runtime image as built from docker/Dockerfile (MODEL_SOURCE=local, 128 px f32 random-init export), run the way
an operator would: a read-only root filesystem, a named volume on /data, task media mounted read-only, the port
published on 127.0.0.1 only. Times are recorded as figures, never asserted (the machine is shared)."""
from __future__ import annotations

import re
import time

import pytest
import requests

from tests import appkit as kit
from tests.docker.dockerkit import CI, health_up, wait_for
from tests.e2e.ls_server import free_port

N = 8  # frames of cup.mp4 in the /predict task
AUTH = ("ci-user", "ci-secret")
STOP_GRACE_S = 40  # > gunicorn's --graceful-timeout 30


class Container:
    """One `docker run -d` of the runtime image; `url` is its published port on 127.0.0.1."""

    def __init__(self, ci: CI, name: str, image: str, volume: str, media: str, network: str):
        self.ci, self.name, self.image, self.volume, self.media, self.network = ci, name, image, volume, media, network
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """docker run -> seconds until /health answers UP (polled every 0.2 s from this host)."""
        t0 = time.monotonic()
        self.ci.docker_run(
            "run", "-d", "--name", self.name, *self.ci.label(), "--network", self.network,
            "-p", f"127.0.0.1:{self.port}:9090", "--read-only", "-v", f"{self.volume}:/data",
            "-v", f"{self.media}:/media:ro", "-e", "LOCAL_FILES_DOCUMENT_ROOT=/media",
            "-e", f"BASIC_AUTH_USER={AUTH[0]}", "-e", f"BASIC_AUTH_PASS={AUTH[1]}",
            "-e", "PREDICT_TIME_BUDGET_S=90",
            "-e", "INTERACTIVE_WAIT_S=90", self.image)  # the click waits for every frame (tests the whole clip)
        wait_for(lambda: health_up(self.url), 180, f"{self.name} /health UP", on_timeout=self.logs)
        return time.monotonic() - t0

    def logs(self) -> str:
        proc = self.ci.docker_run("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-6000:]

    def exec(self, *cmd: str) -> str:
        return self.ci.out("exec", self.name, *cmd)

    def remove(self) -> None:
        self.ci.docker_run("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def env(ci, shared_dir, clips_dir):
    """A labelled network and /data volume for this module, and cup.mp4's first frames in a read-only media folder."""
    net, vol = f"{ci.run_id}-rt", f"{ci.run_id}-rt-data"
    ci.docker_run("network", "create", *ci.label(), net)
    ci.docker_run("volume", "create", *ci.label(), vol)
    media = shared_dir("media")
    size = kit.extract_frames(clips_dir / "cup.mp4", media / "cup", N)
    (media / "cup").chmod(0o755)
    for p in (media / "cup").iterdir():
        p.chmod(0o644)
    yield {"network": net, "volume": vol, "media": str(media), "size": size}
    ci.docker_run("volume", "rm", "-f", vol, check=False)
    ci.docker_run("network", "rm", net, check=False)


@pytest.fixture(scope="module")
def first(ci, env):
    """The first start on an empty volume (the OpenVINO compiled-model cache is written then)."""
    c = Container(ci, f"{ci.run_id}-rt1", ci.image, env["volume"], env["media"], env["network"])
    seconds = c.start()
    ci.figure("runtime_first_start_s", seconds)
    yield c
    c.remove()


def test_health_and_versions_answer(first):
    body = health_up(first.url)
    assert body["model"] == "sam2.1_hiera_tiny" and body["random_weights"] is True
    versions = requests.get(first.url + "/versions", auth=AUTH, timeout=5)
    assert versions.status_code == 200 and versions.json()["model_version"].endswith("-random")
    assert requests.get(first.url + "/versions", timeout=5).status_code == 401, "basic auth is not enforced"


def test_setup_answers_the_model_version(first):
    body = {"project": "1.1700000000", "schema": kit.FRAMES_CONFIG, "hostname": "", "access_token": "",
            "extra_params": {}}
    resp = requests.post(first.url + "/setup", json=body, auth=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"] == requests.get(first.url + "/versions", auth=AUTH, timeout=5).json()["model_version"]


def test_interactive_predict_on_a_clip(ci, first, env):
    """A box on frame 0 of cup.mp4 (frames read from the read-only media mount): every frame gets a mask."""
    task = kit.frames_task(7, "cup", N)
    body = {"tasks": [task], "label_config": kit.FRAMES_CONFIG, "project": "1.1700000000",
            "params": {"login": None, "password": None,
                       "context": {"result": [kit.rect("ci-box", 0, 30, 30, 40, 40, env["size"])]}}}
    t0 = time.monotonic()
    resp = requests.post(first.url + "/predict", json=body, auth=AUTH, timeout=120)
    ci.figure("runtime_predict_8_frames_s", time.monotonic() - t0)
    assert resp.status_code == 200, resp.text
    (prediction,) = resp.json()["results"]
    masks = kit.masks_of(prediction["result"])
    assert sorted(i for _, i in masks) == list(range(N))
    assert all(m.shape == (env["size"][1], env["size"][0]) for m in masks.values())
    assert any(m.any() for m in masks.values())


def test_runs_as_uid_10001_without_torch(first):
    assert first.exec("id", "-u") == "10001"
    status = first.exec("cat", "/proc/1/status")
    assert re.search(r"^Uid:\s+10001\s+10001", status, re.M), status  # PID 1 (gunicorn) too
    probe = "import importlib.util as u; print([m for m in ('torch', 'sam2', 'torchvision') if u.find_spec(m)])"
    assert first.exec("python", "-c", probe) == "[]"


def test_read_only_root_with_a_writable_data_volume(ci, first):
    assert ci.inspect(first.name)["HostConfig"]["ReadonlyRootfs"] is True
    denied = ci.docker_run("exec", first.name, "touch", "/app/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    cache = first.exec("sh", "-c", "ls /data/ov-cache | wc -l")
    assert int(cache) > 0, "the compiled-model cache was not written to the /data volume"
    assert "Traceback" not in first.logs()


def test_healthcheck_reaches_healthy(ci, first):
    """The image's own HEALTHCHECK (interval 30 s), unchanged: docker reports the container healthy."""
    hc = ci.inspect(first.name)["Config"]["Healthcheck"]
    assert hc["Test"][:3] == ["CMD", "python", "-c"] and "/health" in hc["Test"][3]
    state = wait_for(lambda: ci.inspect(first.name)["State"]["Health"]["Status"] == "healthy" and "healthy",
                     120, "docker health status healthy", every_s=1.0, on_timeout=first.logs)
    assert state == "healthy"
    log = ci.inspect(first.name)["State"]["Health"]["Log"]
    assert log and log[-1]["ExitCode"] == 0


def test_docker_stop_is_clean_and_a_restart_on_the_volume_serves_at_once(ci, first, env):
    cache_before = first.exec("sh", "-c", "cd /data/ov-cache && ls -l --time-style=+%s | grep -v '^total' | sort")
    t0 = time.monotonic()
    ci.docker_run("stop", "-t", str(STOP_GRACE_S), first.name)
    stop_s = time.monotonic() - t0
    ci.figure("runtime_stop_s", stop_s)
    state = ci.inspect(first.name)["State"]
    assert stop_s < STOP_GRACE_S - 1 and state["ExitCode"] == 0 and not state["OOMKilled"], (stop_s, state)
    log = first.logs()
    assert "Shutting down: Master" in log and "Traceback" not in log, log[-3000:]

    # a new container on the same volume: the compiled model comes from the cache written by the first one
    second = Container(ci, f"{ci.run_id}-rt2", ci.image, env["volume"], env["media"], env["network"])
    try:
        restart_s = second.start()
        ci.figure("runtime_restart_same_volume_s", restart_s)
        compile_s = [float(s) for s in re.findall(r"compiled \d+ graphs .* in ([\d.]+) s", first.logs() + second.logs())]
        assert len(compile_s) == 2, compile_s
        ci.figure("runtime_compile_first_s", compile_s[0])
        ci.figure("runtime_compile_cached_s", compile_s[1])
        cache_after = second.exec("sh", "-c", "cd /data/ov-cache && ls -l --time-style=+%s | grep -v '^total' | sort")
        # the blobs (names, sizes, mtimes) must be the ones the first container wrote; `ls`'s "total" line counts
        # disk blocks, which the filesystem may settle after the first container closed its files
        assert cache_after == cache_before, "the restart recompiled instead of reading the cache"
        resp = requests.post(second.url + "/predict", auth=AUTH, timeout=120, json={
            "tasks": [kit.frames_task(8, "cup", 2)], "label_config": kit.FRAMES_CONFIG, "project": "1.1700000000",
            "params": {"context": {"result": [kit.rect("r", 0, 30, 30, 40, 40, env["size"])]}}})
        assert resp.status_code == 200 and len(kit.brushes(resp.json()["results"][0]["result"])) == 2, resp.text
    finally:
        second.remove()


def test_random_init_image_from_the_export_stage(ci, env):
    """MODEL_SOURCE=random-init: the model was exported inside the build (torch stage); the served image has no
    torch."""
    if ci.random_image is None:
        pytest.skip("scripts/docker_ci.sh did not build the random-init image (it printed why)")
    c = Container(ci, f"{ci.run_id}-rnd", ci.random_image, f"{ci.run_id}-rnd-data", env["media"], env["network"])
    try:
        ci.figure("runtime_random_init_first_start_s", c.start())
        body = health_up(c.url)
        assert body["random_weights"] is True and "-128-" in body["model_version"], body
        manifest = c.exec("python", "-c", "import json, os; m = json.load(open(os.environ['MODEL_DIR'] + "
                                          "'/manifest.json')); print(m['image_size'], m['precision'], m['random_weights'])")
        assert manifest == "128 f32 True", manifest  # the build args reached the export stage
        assert c.exec("python", "-c", "import importlib.util as u; print(u.find_spec('torch'))") == "None"
    finally:
        c.remove()
        ci.docker_run("volume", "rm", "-f", f"{ci.run_id}-rnd-data", check=False)
