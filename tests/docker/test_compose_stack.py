"""docker/docker-compose.yml brought up as a user would, with the Label Studio STAND-IN image swapped in by
tests/docker/compose.label-studio-standin.yml (label-studio.image only), then the e2e flow of
tests/e2e/test_backend_e2e.py through the two containers: project, import, connect http://sam2-backend.internal:9090 over the
compose network, an interactive prompt, a correction, re-propagation. The token is the one compose hands both
services from the env file; the frames sit in the files volume (LS_FILES_DIR, a host folder here) that LS serves
and the backend reads read-only. This host talks only to the two ports compose publishes on 127.0.0.1."""
from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests import appkit as kit
from tests.docker.dockerkit import CI, REPO, health_up, readable_tree, wait_for
from tests.e2e.backend_server import AUTH
from tests.e2e.frames_setup import frame_urls
from tests.e2e.ls_server import FRAMES_CONFIG, LSApi, free_port

COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
STANDIN_FILE = REPO / "tests" / "docker" / "compose.label-studio-standin.yml"
N, K = 24, 12  # frames in the task, the corrected frame
BACKEND_URL = "http://sam2-backend.internal:9090"  # as LS reaches it: the backend's alias on the compose network
FILES_ROOT = "/label-studio/files"  # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT in docker-compose.yml


class Stack:
    def __init__(self, ci: CI, env_file: Path, files_dir: Path, ls_port: int, backend_port: int, token: str):
        self.ci, self.env_file, self.files_dir, self.token = ci, env_file, files_dir, token
        self.ls_url, self.backend_url = f"http://127.0.0.1:{ls_port}", f"http://127.0.0.1:{backend_port}"
        self.api = LSApi(self.ls_url, token)

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [self.ci.compose, "-p", self.ci.run_id, "-f", str(COMPOSE_FILE), "-f", str(STANDIN_FILE),
               "--env-file", str(self.env_file), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={"PATH": f"{Path(self.ci.docker).parent}:/usr/bin:/bin", "HOME": "/root"})
        if check and proc.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)} -> exit {proc.returncode}:\n{proc.stderr[-3000:]}\n"
                               f"{self.logs()}")
        return proc

    def logs(self, *services: str, tail: str = "60") -> str:
        proc = subprocess.run([self.ci.compose, "-p", self.ci.run_id, "-f", str(COMPOSE_FILE), "-f",
                               str(STANDIN_FILE), "--env-file", str(self.env_file), "logs", "--no-color",
                               "--tail", tail, *services], capture_output=True, text=True, timeout=60)
        return proc.stdout[-8000:]

    def backend(self, path: str) -> requests.Response:
        return requests.get(self.backend_url + path, auth=AUTH, timeout=10)


def make_backend_user(ls_url: str, admin: LSApi) -> tuple[str, str]:
    """The README's "A user for the backend", done over HTTP: sign up through the organization's invite link (the
    only way in: LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK) and read the new user's legacy token -> (email, token)."""
    invite = admin.call("GET", "/api/invite")["invite_url"]  # /user/signup/?token=<organization token>
    email = "sam2-backend@example.com"
    browser = requests.Session()
    browser.get(ls_url + invite, timeout=30).raise_for_status()  # sets the csrftoken cookie
    resp = browser.post(ls_url + invite, timeout=60, allow_redirects=False,
                        headers={"Referer": ls_url + invite, "X-CSRFToken": browser.cookies.get("csrftoken", "")},
                        data={"email": email, "password": secrets.token_hex(12),
                              "csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")})
    assert resp.status_code in (302, 303), f"sign-up through the invite link failed: {resp.status_code} {resp.text[:500]}"
    token = browser.get(ls_url + "/api/current-user/token", timeout=30).json()["token"]
    return email, token


@pytest.fixture(scope="module")
def stack(ci, shared_dir, clips_dir):
    """The stack as the README brings it up: an env file like scripts/docker_env.sh writes (random password and
    token), LS first (`compose up -d --wait label-studio`), a dedicated non-admin LS user for the backend whose token
    goes into SAM2_BACKEND_LS_TOKEN, then the backend (`compose up -d --wait`). The files volume is a host folder
    holding box.mp4's first frames; the backend's basic auth is set."""
    files = shared_dir("ls-files")
    size = kit.extract_frames(clips_dir / "box.mp4", files / "box", N)
    readable_tree(files)
    token = secrets.token_hex(20)
    ls_port, backend_port = free_port(), free_port()
    env_file = shared_dir("env") / ".env"
    env_file.write_text("\n".join([
        f"LABEL_STUDIO_PASSWORD={secrets.token_hex(16)}", f"LABEL_STUDIO_USER_TOKEN={token}",
        f"LABEL_STUDIO_HOST_PORT={ls_port}", f"SAM2_BACKEND_HOST_PORT={backend_port}", f"LS_FILES_DIR={files}",
        f"BASIC_AUTH_USER={AUTH[0]}", f"BASIC_AUTH_PASS={AUTH[1]}", "PREDICT_TIME_BUDGET_S=60",
        "INTERACTIVE_WAIT_S=60",
        "WRITE_INTERVAL_S=1", "MODEL_SOURCE=local", ""]))
    s = Stack(ci, env_file, files, ls_port, backend_port, token)
    t0 = time.monotonic()
    try:
        s.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "420", "label-studio", timeout=480)
        ci.figure("compose_label_studio_first_start_s", time.monotonic() - t0)
        s.backend_user, s.backend_token = make_backend_user(s.ls_url, s.api)
        with env_file.open("a") as fh:
            fh.write(f"SAM2_BACKEND_LS_TOKEN={s.backend_token}\n")
        t1 = time.monotonic()
        s.compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "300", timeout=360)
        ci.figure("compose_backend_up_wait_s", time.monotonic() - t1)
        yield s, size
    finally:
        down = s.compose("down", "-v", "--timeout", "40", check=False)
        if down.returncode != 0:
            print(down.stderr[-2000:])


def test_compose_file_keeps_the_official_image_and_the_standin_changes_only_that(ci, stack):
    s, _ = stack
    merged = json.loads(s.compose("config", "--format", "json").stdout)
    alone = json.loads(subprocess.run([ci.compose, "-f", str(COMPOSE_FILE), "--env-file", str(s.env_file), "config",
                                       "--format", "json"], capture_output=True, text=True, check=True).stdout)
    assert alone["services"]["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    assert merged["services"]["label-studio"]["image"] == ci.ls_image
    merged["services"]["label-studio"].pop("image")
    alone["services"]["label-studio"].pop("image")
    assert merged["services"] == alone["services"], "the stand-in override changed more than label-studio.image"


def test_both_services_healthy_and_wired_as_compose_says(ci, stack):
    s, _ = stack
    ps = [json.loads(line) for line in s.compose("ps", "--format", "json").stdout.splitlines() if line.strip()]
    if len(ps) == 1 and isinstance(ps[0], list):
        ps = ps[0]
    health = {p["Service"]: p.get("Health") for p in ps}
    assert health == {"label-studio": "healthy", "sam2-backend": "healthy"}, ps
    backend = next(p["Name"] for p in ps if p["Service"] == "sam2-backend")
    info = ci.inspect(backend)
    assert info["HostConfig"]["ReadonlyRootfs"] is True and info["HostConfig"]["CapDrop"] == ["ALL"]
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    # the backend holds its own user's token (a sign-up: an ordinary member, never a superuser), not the first user's
    assert env["LABEL_STUDIO_API_KEY"] == s.backend_token != s.token
    assert LSApi(s.ls_url, s.backend_token).call("GET", "/api/current-user/whoami")["email"] == s.backend_user
    assert health_up(s.backend_url)["model"] == "sam2.1_hiera_tiny"


def _wait_prediction(api: LSApi, task_id: int, ready, timeout: float = 180.0) -> dict:
    return wait_for(lambda: next((p for p in api.predictions(task_id) if ready(p)), None), timeout,
                    f"a matching prediction for task {task_id}", every_s=0.5)


@pytest.fixture(scope="module")
def project(stack):
    """Frames project on the shared files volume, connected to the backend by its compose service name."""
    s, size = stack
    api = s.api
    pid = api.create_project("compose e2e", FRAMES_CONFIG)
    api.add_local_storage(pid, f"{FILES_ROOT}/box", sync=False)
    frames = frame_urls("box", N)
    tasks = api.import_tasks(pid, [{"frames": frames}])
    ml = api.connect_ml(pid, BACKEND_URL, basic_auth=AUTH)
    return pid, ml, tasks, size


def test_label_studio_connected_the_backend_over_the_compose_network(stack, project):
    s, _ = stack
    pid, ml, _, _ = project
    assert s.api.call("GET", f"/api/ml/{ml}")["state"] == "CO"
    assert any(h["url"] == BACKEND_URL + "/webhook" for h in s.api.webhooks(pid))


def test_interactive_prompt_correction_and_repropagation(ci, stack, project):
    s, _ = stack
    api = s.api
    _, ml, tasks, size = project
    ctx = [kit.rect("c-box", 0, 25, 25, 50, 50, size), kit.point("c-neg", 5, 50, 50, size, positive=False)]
    t0 = time.monotonic()
    answer = api.interactive(ml, tasks[0], ctx)  # LS -> http://sam2-backend.internal:9090/predict -> masks
    ci.figure("compose_interactive_24_frames_s", time.monotonic() - t0)
    results = kit.brushes(answer["data"]["result"])
    assert sorted(r["item_index"] for r in results) == list(range(N))
    # the backend fetched every frame from LS (token) or the shared files volume: masks have the frames' size
    assert all((r["original_width"], r["original_height"]) == size for r in results)

    prediction = _wait_prediction(api, tasks[0], lambda p: len(kit.brushes(p["result"])) == N)
    assert prediction["model_version"] == s.backend("/versions").json()["model_version"]
    before = kit.masks_by_frame(prediction["result"])
    assert before.keys() == kit.masks_by_frame(answer["data"]["result"]).keys()

    corrected = before[K].copy()
    h, w = corrected.shape
    corrected[: h // 2, :] = False
    corrected[h // 2:, : w // 4] = True
    result = [r for r in prediction["result"] if r["item_index"] != K or r["type"] != "brushlabels"]
    result.append(kit.brush(f"sam2-1-{K}", K, corrected))
    for r in result:
        r.pop("score", None)
    api.create_annotation(tasks[0], result)  # LS posts ANNOTATION_CREATED to http://sam2-backend.internal:9090/webhook

    # the webhook starts a re-propagation job from frame K; wait for it to finish (partial writes come first)
    status = wait_for(lambda: (st := s.backend(f"/jobs/{tasks[0]}").json())["state"] in ("done", "failed")
                      and st["frames_total"] == N - K and st, 180, "the re-propagation job from the corrected frame",
                      every_s=0.5, on_timeout=lambda: s.logs("sam2-backend"))
    assert status["state"] == "done", status

    def repropagated(p):
        masks = kit.masks_by_frame(p["result"])
        return len(masks) == N and np.array_equal(masks[K], corrected)
    _wait_prediction(api, tasks[0], repropagated)

    def settled():  # the job's final write may land just after it reports done
        first = api.predictions(tasks[0])
        time.sleep(2 * 1.0)  # WRITE_INTERVAL_S=1 in the env file
        return first == api.predictions(tasks[0]) and first
    (final,) = wait_for(settled, 60, "the prediction to stop changing", every_s=0.1)
    after = kit.masks_by_frame(final["result"])
    assert repropagated(final)
    assert len(api.predictions(tasks[0])) == 1, "the prediction is updated, not duplicated"
    assert all(np.array_equal(after[i], before[i]) for i in range(K)), "frames before the correction changed"
    assert any(not np.array_equal(after[i], before[i]) for i in range(K + 1, N)), "nothing re-propagated"


def test_no_traceback_in_the_backend_log(stack, project):
    s, _ = stack
    logs = s.logs("sam2-backend", tail="all")
    assert "Traceback" not in logs and "Booting worker" in logs, logs
