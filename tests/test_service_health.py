"""Issue 9, High 3 and the fault cases: /health answers while every request thread is busy, and a missing or
corrupt model folder or an unwritable spill folder is a clear 503 on /health, not a crash loop or a hang."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from backend.app import create_app
from backend.settings import Settings
from tests import appkit as kit

ROOT = Path(__file__).resolve().parents[1]


def _health(app) -> tuple[int, dict]:
    resp = app.test_client().get("/health")
    return resp.status_code, resp.get_json()


def _failed_app(tmp_path, **env):
    app = create_app(Settings.from_env({"PRECISION": "f32", "DATA_DIR": str(tmp_path / "d"),
                                        "MEDIA_CACHE_DIR": str(tmp_path / "c"), **env}))
    deadline = time.monotonic() + 60
    while _health(app)[1]["state"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.1)
    return app


@pytest.mark.parametrize("kind", ["missing", "no manifest", "corrupt manifest", "manifest not an object"])
def test_a_bad_model_folder_is_a_503_on_health_not_a_crash(tmp_path, kind):
    model = tmp_path / "model"
    if kind != "missing":
        model.mkdir()
    if kind == "corrupt manifest":
        (model / "manifest.json").write_text('{"model": "sam2.1_hiera_t')
    if kind == "manifest not an object":
        (model / "manifest.json").write_text("[1, 2]")
    app = _failed_app(tmp_path, MODEL_DIR=str(model))
    status, body = _health(app)
    assert status == 503 and body["state"] == "failed" and "MODEL_DIR" in body["error"], body
    resp = kit.predict(app.test_client(), kit.frames_task(1, "cup", 2), kit.FRAMES_CONFIG, [])
    assert resp.status_code in (400, 500, 503) and "Traceback" not in resp.get_data(as_text=True)
    app.config["SERVICE"].shutdown()


def test_the_wsgi_module_starts_with_a_missing_model_folder(tmp_path):
    """gunicorn imports _wsgi: with MODEL_DIR wrong it must come up (and say so on /health), not exit and loop."""
    env = dict(os.environ, MODEL_DIR=str(tmp_path / "nope"), DATA_DIR=str(tmp_path / "d"),
               MEDIA_CACHE_DIR=str(tmp_path / "c"), HEALTH_PORT="0")
    code = ("import _wsgi, time; c = _wsgi.app.test_client(); time.sleep(0.5); r = c.get('/health'); "
            "print(r.status_code, r.get_json()['error'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("503 ") and "MODEL_DIR" in out.stdout


def test_an_unwritable_spill_folder_is_a_503_naming_data_dir(tmp_path, model_128_f32):
    blocker = tmp_path / "data-is-a-file"
    blocker.write_text("not a folder")
    app = create_app(Settings.from_env({"MODEL_DIR": str(model_128_f32), "PRECISION": "f32",
                                        "DATA_DIR": str(blocker), "MEDIA_CACHE_DIR": str(tmp_path / "c")}))
    deadline = time.monotonic() + 60
    while _health(app)[1]["state"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.1)
    status, body = _health(app)
    assert status == 503 and "DATA_DIR" in body["error"] and "not writable" in body["error"], body
    app.config["SERVICE"].shutdown()


# ---- gunicorn as the container runs it: nine slow requests hold every thread; /health must still answer ----
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> tuple[int | None, float]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, time.monotonic() - t0
    except (TimeoutError, urllib.error.URLError, OSError):
        return None, time.monotonic() - t0


@pytest.fixture()
def gunicorn(tmp_path, model_128_f32):
    port, health_port = _free_port(), _free_port()
    env = dict(os.environ, MODEL_DIR=str(model_128_f32), PRECISION="f32", PORT=str(port),
               HEALTH_PORT=str(health_port), THREADS="8", BODY_TIMEOUT_S="4", HEADER_TIMEOUT_S="3",
               DATA_DIR=str(tmp_path / "d"),
               MEDIA_CACHE_DIR=str(tmp_path / "c"), BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="secret",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(["sh", str(ROOT / "docker" / "entrypoint.sh")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gunicorn.log", "wb"))
    try:
        deadline = time.monotonic() + 120
        while _get(f"http://127.0.0.1:{health_port}/health", 1)[0] != 200:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not get ready"
            time.sleep(0.3)
        yield port, health_port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_health_answers_while_nine_slow_requests_hold_every_thread(gunicorn):
    """9 uploads that announce 1 MB and send a few bytes hold all 8 request threads: the main port's /health
    queues behind them, the dedicated HEALTH_PORT answers at once; BODY_TIMEOUT_S then frees the threads (408)
    although the slow clients are still connected."""
    port, health_port, _ = gunicorn
    slow = []
    t_start = time.monotonic()
    for _ in range(9):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Basic bHM6c2VjcmV0\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"tasks\":")
        slow.append(s)
    time.sleep(0.5)
    try:
        dedicated = [_get(f"http://127.0.0.1:{health_port}/health", 5) for _ in range(20)]
        main = _get(f"http://127.0.0.1:{port}/health", 2)
        ms = sorted(round(t * 1000, 1) for _, t in dedicated)
        print(f"\n9 slow uploads, THREADS=8: dedicated /health median {ms[10]} ms, max {ms[-1]} ms; main-port /health "
              f"-> {main[0]} after {main[1]:.1f} s (2-core machine shared with other agents)")
        assert all(code == 200 for code, _ in dedicated)
        assert ms[-2] < 500
        recovered = _get(f"http://127.0.0.1:{port}/health", 20)
        print(f"main-port /health answered {recovered[0]} {time.monotonic() - t_start:.1f} s after the slow uploads "
              "began (BODY_TIMEOUT_S=4), the slow clients still connected")
        assert recovered[0] == 200 and time.monotonic() - t_start < 15
        answers = []
        for s in slow:
            s.settimeout(5)
            try:
                answers.append(s.recv(200).split(b"\r\n")[0])
            except OSError:
                answers.append(b"")
        assert sum(b" 408 " in a for a in answers) >= 8, answers
    finally:
        for s in slow:
            s.close()


def test_clients_dripping_their_headers_are_cut_off_and_free_their_threads(gunicorn):
    """Slowloris: 9 clients send a request line, then one header byte a second, never a whole header, against
    THREADS=8. gunicorn's gthread worker alone lets them hold every thread for as long as they drip (the main
    port's /health never answers); HeaderDeadlineWorker answers 408 after HEADER_TIMEOUT_S=3 and frees them."""
    port, _, _ = gunicorn
    slow, stop = [], threading.Event()
    for _ in range(9):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Drip: ")
        slow.append(s)

    def drip():
        while not stop.wait(1.0):
            for s in slow:
                try:
                    s.send(b"x")
                except OSError:
                    pass
    threading.Thread(target=drip, daemon=True).start()
    t0 = time.monotonic()
    try:
        time.sleep(0.5)
        status, _ = _get(f"http://127.0.0.1:{port}/health", 20)
        elapsed = time.monotonic() - t0
        print(f"\n9 clients dripping headers, THREADS=8, HEADER_TIMEOUT_S=3: main-port /health -> {status} after "
              f"{elapsed:.1f} s")
        assert status == 200 and elapsed < 10, (status, elapsed)
        answers = []
        for s in slow:
            s.settimeout(5)
            try:
                answers.append(s.recv(200).split(b"\r\n")[0])
            except OSError:
                answers.append(b"")
        assert sum(b" 408 " in a for a in answers) >= 8, answers
    finally:
        stop.set()
        for s in slow:
            s.close()


def test_the_health_process_keeps_its_priority_and_session_while_the_worker_goes_below(gunicorn):
    """Under load the health process must not wait for a core behind the engine's threads (tests/load measured a
    HEALTH_PORT p99 of 122 ms on 2 busy cores): it runs in a session of its own (the kernel's per-session CPU
    groups) at the normal priority, every thread of the gunicorn worker at WORKER_NICE (10), and its answers say how
    long it took itself (Server-Timing)."""
    import psutil
    _, health_port, proc = gunicorn
    children = psutil.Process(proc.pid).children(recursive=True)
    healthd = next(p for p in children if "backend.serving.healthd" in " ".join(p.cmdline()))
    worker = next(p for p in children if p.pid != healthd.pid and "gunicorn" in " ".join(p.cmdline()))
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert healthd.nice() == base and os.getsid(healthd.pid) != os.getsid(worker.pid)
    niced = {t.id: os.getpriority(os.PRIO_PROCESS, t.id) for t in worker.threads()}
    assert all(v == max(base, 10) for v in niced.values()), niced
    assert psutil.Process(proc.pid).nice() == base  # the gunicorn master, which only supervises
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health", timeout=5) as resp:
        timing = resp.headers["Server-Timing"]
    assert timing.startswith("health;dur=") and float(timing.split("=")[1]) < 1000, timing


def test_leftover_spill_folders_are_removed_at_start_unless_another_backend_holds_them(tmp_path, model_128_f32):
    spill = tmp_path / "d" / "spill"
    (spill / "sess-crashed").mkdir(parents=True)
    (spill / "sess-crashed" / "1_3.npz").write_bytes(b"x" * 4096)
    env = {"MODEL_DIR": str(model_128_f32), "PRECISION": "f32", "DATA_DIR": str(tmp_path / "d"),
           "MEDIA_CACHE_DIR": str(tmp_path / "c")}
    first = create_app(Settings.from_env(env))
    kit.wait_ready(first.test_client())
    assert not (spill / "sess-crashed").exists()
    (spill / "sess-live").mkdir()  # stands for a session of the running backend
    second = create_app(Settings.from_env(env))
    kit.wait_ready(second.test_client())
    assert (spill / "sess-live").exists(), "a second backend on the same DATA_DIR deleted the first one's spill"
    for app in (first, second):
        app.config["SERVICE"].shutdown()


def test_the_health_process_answers_from_the_heartbeat_and_says_when_it_is_stale(tmp_path):
    """The dedicated /health runs in its own process (no GIL shared with request threads): fresh heartbeat -> the
    backend's answer; a heartbeat older than --stale-s -> 503 STALLED; no heartbeat yet -> 503."""
    port, state = _free_port(), tmp_path / "health.json"
    proc = subprocess.Popen([sys.executable, "-m", "backend.serving.healthd", "--port", str(port), "--state",
                             str(state), "--parent", str(os.getpid()), "--stale-s", "2"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/health"
    try:
        deadline = time.monotonic() + 20
        while _get(url, 1)[0] is None:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        assert _get(url, 2)[0] == 503  # nothing reported yet
        state.write_text(json.dumps({"status": "UP", "state": "ready", "http_status": 200, "heartbeat": time.time()}))
        assert _get(url, 2)[0] == 200
        state.write_text(json.dumps({"status": "UP", "state": "ready", "http_status": 200,
                                     "heartbeat": time.time() - 5}))
        with _open(url) as body:
            assert body["status"] == "STALLED" and "not reported" in body["error"]
    finally:
        proc.terminate()
        proc.wait(10)


def _open(url: str):
    import contextlib
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError as e:
        assert e.code == 503
        return contextlib.nullcontext(json.loads(e.read()))
    raise AssertionError("a stale heartbeat answered 200")


def test_the_health_file_says_ready_as_soon_as_the_model_is(tmp_path):
    """The health process answers from the heartbeat file: it must not say LOADING (503) for up to a heartbeat
    interval after the model is ready and the main port says UP (tests/load saw two such probes at a run's start)."""
    from backend.serving.health import HealthServer

    class Model:
        name, version, manifest, error = "m", "v", {}, None

        def __init__(self):
            self.ready = threading.Event()

        @property
        def state(self):
            return "ready" if self.ready.is_set() else "loading"

        def wait_loaded(self, timeout):
            return self.ready.wait(timeout)

    model = Model()
    server = HealthServer(model, 1, tmp_path, interval_s=5.0)  # no process started: only the heartbeat loop
    server._beat()
    threading.Thread(target=server._loop, daemon=True).start()
    assert json.loads(server.state_file.read_text())["state"] == "loading"
    time.sleep(0.2)
    model.ready.set()
    t0 = time.monotonic()
    while json.loads(server.state_file.read_text())["state"] != "ready":
        assert time.monotonic() - t0 < 1.0, "the heartbeat file still says loading a second after the model is ready"
        time.sleep(0.01)
    server.close()
