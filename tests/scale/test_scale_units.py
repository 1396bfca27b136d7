"""The scale-out pieces without Ray: a replica's SessionHost (eviction off the request path, generation guard) and
the front's RayTrackingClient against a fake Serve proxy (one call per task with its multiplexed id, retries when
no replica answered, whose-fault errors kept, per-replica metrics)."""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from werkzeug.wrappers import Response

from backend.app import build_service
from backend.metrics import Metrics
from backend.scale.front import HEADER, RayTrackingClient
from backend.scale.host import SessionHost
from backend.serving.errors import BackendError
from backend.settings import Settings
from tests.fakehttp import FakeHost, json_response


# ---- SessionHost ----------------------------------------------------------------------------------------------
class _SlowJob:
    def __init__(self, cancel_s: float):
        self.cancel_s = cancel_s

    def wait(self, timeout):
        time.sleep(min(self.cancel_s, timeout))
        return True


class _SlowJobs:
    """A job manager like backend.serving.jobs: cancel never waits, the job takes `cancel_s` to leave the engine."""

    def __init__(self, cancel_s: float):
        self.cancel_s, self.cancelled = cancel_s, []

    def cancel(self, tid):
        self.cancelled.append(tid)
        return _SlowJob(self.cancel_s)

    def get(self, tid):
        return None


class _FakeService:
    def __init__(self, cancel_s: float):
        self.jobs = _SlowJobs(cancel_s)
        self.dropped: list[int] = []
        self.frames_propagated = 0
        self.model = SimpleNamespace(state="loading", name="m", version="v", error=None, manifest={})
        self.media = SimpleNamespace(cache=SimpleNamespace(nbytes=0))

    def drop(self, tid):  # like TrackingService.drop: cancels the task's job; here slow, to hold the evictor
        self.jobs.cancel(tid).wait(30)
        self.dropped.append(tid)

    def active_sessions(self):
        return 0

    def job_status(self, tid):
        return {"task": tid, "state": "done"}

    def shutdown(self):
        pass


def _host(cancel_s: float) -> SessionHost:
    settings = Settings(model_dir="unused")
    return SessionHost(settings, "r1", service_factory=lambda s: _FakeService(cancel_s))


def test_evicting_a_task_returns_at_once_and_other_tasks_are_served_meanwhile():
    host = _host(cancel_s=1.5)
    handle = host.open(7)
    t0 = time.monotonic()
    handle.__del__()  # what Serve's LRU calls when task 7 is evicted
    assert time.monotonic() - t0 < 0.2, "eviction must not wait for the task's job to stop"
    assert host.stats()["evicting"] == 1 and 7 not in host.stats()["tasks"]
    t0 = time.monotonic()
    assert host.job_status(8) == {"task": 8, "state": "done", "replica": "r1"}  # another task, not blocked
    assert host.call(lambda: "other task's work") == "other task's work"
    assert time.monotonic() - t0 < 0.2
    deadline = time.monotonic() + 5
    while host.service.dropped != [7] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.service.dropped == [7] and host.service.jobs.cancelled == [7]
    assert host.stats()["evicting"] == 0 and host.stats()["evictions"] == 1
    host.shutdown()


def test_a_task_reopened_before_its_eviction_ran_keeps_its_session():
    host = _host(cancel_s=0.5)
    gate = threading.Event()
    host._evictor.submit(gate.wait, 5)  # the evictor is still busy with an earlier task
    old = host.open(7)
    old.__del__()
    new = host.open(7)  # the next request for task 7 came back to this replica before the evictor reached it
    gate.set()
    time.sleep(1.0)
    assert host.service.dropped == [] and 7 in host.stats()["tasks"]
    del new
    host.shutdown()


# ---- RayTrackingClient ---------------------------------------------------------------------------------------
@pytest.fixture
def serve_proxy():
    host = FakeHost("127.0.0.1")
    yield host
    host.close()


def _client(serve_proxy, model_128_f32) -> RayTrackingClient:
    env = {"MODEL_DIR": str(model_128_f32), "TRACKING_BACKEND": "ray", "RAY_SERVE_URL": serve_proxy.url + "/sam2"}
    return build_service(Settings.from_env(env))  # the wiring: the front routes LS requests by task


def _stats(replica: str, sessions: int) -> dict:
    return {"replica": replica, "sessions": sessions, "running_jobs": 1, "queued_jobs": 0, "requests_in_flight": 0,
            "evictions": 0, "frames_propagated": 5, "feature_cache_bytes": 10, "media_cache_bytes": 3}


def test_batch_goes_out_as_one_call_per_task_with_its_multiplexed_id(serve_proxy, model_128_f32):
    def predict(request):
        body = json.loads(request.get_data())
        (task,) = body["tasks"]
        assert request.headers[HEADER] == str(task["id"]) and body["label_config"] == "<View/>"
        if task["id"] == 3:
            return json_response({"error": "task 3 has no data['frames']", "replica": "b"}, 400)
        return json_response({"result": {"result": [task["id"]], "model_version": "v"}, "replica": "a",
                              "stats": _stats("a", 2)})
    serve_proxy.routes["/sam2/predict"] = predict
    client = _client(serve_proxy, model_128_f32)
    tasks = [{"id": 1, "data": {}}, {"id": 2, "data": {}}, {"id": 3, "data": {}}, {"id": "x"}]
    out = client.predict({"tasks": tasks, "label_config": "<View/>"})
    assert [r["result"] for r in out["results"]] == [[1], [2], [], []]  # a bad task gets an empty result
    assert sorted(h["path"] for h in serve_proxy.seen if h["path"].endswith("predict")) == ["/sam2/predict"] * 3
    client.shutdown()


def test_calls_that_reach_no_replica_are_retried_and_replica_errors_are_not(serve_proxy, model_128_f32):
    answers = [Response("no healthy replicas", status=503),
               json_response({"job": {"task": 5, "state": "running", "replica": "b"}, "replica": "b",
                              "stats": _stats("b", 1)})]
    serve_proxy.routes["/sam2/jobs/5"] = lambda request: answers.pop(0)
    client = _client(serve_proxy, model_128_f32)
    assert client.job_status(5) == {"task": 5, "state": "running", "replica": "b"}
    assert [h["path"] for h in serve_proxy.hits("/sam2/jobs/5")] == ["/sam2/jobs/5"] * 2
    serve_proxy.routes["/sam2/jobs/6"] = lambda request: json_response(
        {"error": "task 6 is busy", "replica": "b"}, 409)
    with pytest.raises(BackendError) as e:
        client.job_status(6)
    assert e.value.status == 409 and len(serve_proxy.hits("/sam2/jobs/6")) == 1
    metrics = Metrics()
    client.register_metrics(metrics)
    text = generate_latest(metrics.registry).decode()
    assert 'sam2_replica_sessions{replica="b"} 1.0' in text and 'sam2_replica_running_jobs{replica="b"} 1.0' in text
    assert 'sam2_forwarded_requests_total{replica="b",route="jobs"} 2.0' in text
    client.shutdown()


def test_no_serve_at_all_is_a_503_that_says_what_to_check(model_128_f32):
    env = {"MODEL_DIR": str(model_128_f32), "TRACKING_BACKEND": "ray", "RAY_SERVE_URL": "http://127.0.0.1:9/sam2"}
    client = build_service(Settings.from_env(env))
    with pytest.raises(BackendError) as e:
        client.job_status(1)
    assert e.value.status == 503 and "serve status" in str(e.value)
    client.shutdown()


# ---- settings and the embedded default -------------------------------------------------------------------------
def test_ray_settings_fail_fast_naming_the_variable(model_128_f32):
    from backend.settings import SettingsError

    base = {"MODEL_DIR": str(model_128_f32)}
    assert Settings.from_env(base).ray.enabled is False  # the default stays in-process
    with pytest.raises(SettingsError, match="TRACKING_BACKEND"):
        Settings.from_env({**base, "TRACKING_BACKEND": "kubernetes"})
    with pytest.raises(SettingsError, match="RAY_SERVE_URL"):
        Settings.from_env({**base, "TRACKING_BACKEND": "ray", "RAY_SERVE_URL": "ray-head:8000"})
    with pytest.raises(SettingsError, match="RAY_REPLICAS"):
        Settings.from_env({**base, "RAY_REPLICAS": "0"})


def test_the_in_process_app_and_the_front_never_import_ray(model_128_f32):
    import subprocess
    import sys

    code = ("import sys; from backend.app import create_app; from backend.settings import Settings; "
            "import backend.scale.front, backend.scale.host; "
            f"app = create_app(Settings.from_env({{'MODEL_DIR': {str(model_128_f32)!r}}})); "
            "app.config['SERVICE'].shutdown(); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cancel_route_in_process(client):
    from tests import appkit as kit

    r = client.post("/jobs/424242/cancel", headers=kit.AUTH)
    assert r.status_code == 404 and "424242" in r.get_json()["error"]
    assert client.post("/jobs/424242/cancel").status_code == 401  # behind basic auth like every route but /health
    task = kit.frames_task(4243, "cup", kit.N)
    assert kit.predict(client, task, kit.FRAMES_CONFIG, [kit.rect("c", 0, 20, 20, 40, 40, (640, 480))],
                       headers=kit.AUTH).status_code == 200
    kit.wait_job(client, 4243, headers=kit.AUTH)
    r = client.post("/jobs/4243/cancel", headers=kit.AUTH)  # nothing left to stop: answers the job's status
    assert r.status_code == 200 and r.get_json()["task"] == 4243 and r.get_json()["state"] == "done"


def test_scale_and_serving_reach_no_adapter():
    """Dependencies point down: scale/ wraps serving/ and gets the LS specifics injected by the wiring
    (backend.app, backend.serve_app), so importing it loads neither the LS nor the CVAT adapter."""
    import subprocess
    import sys

    code = ("import sys; import backend.scale.front, backend.scale.host, backend.scale.deployment, "
            "backend.serving.tracking; "
            "bad = sorted(m for m in sys.modules if m.startswith(('backend.ls', 'backend.cvat'))); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
