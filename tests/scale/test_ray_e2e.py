"""Scale-out against the real thing: Label Studio 1.23.2 -> the front (TRACKING_BACKEND=ray) -> Ray Serve's proxy ->
2 TaskTracker replicas on a local Ray cluster, each writing its predictions into LS itself.

Affinity and its limits: two tasks prompted at once run on two replicas; every later request for a task reaches
its replica (replica id in GET /jobs/<task> and in metrics); a newer prompt cancels the task's running job on its
replica; a killed replica's tasks are rebuilt on another one from LS with nothing saved lost; evictions (2 sessions
per replica) do not stop other tasks.
"""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
import requests

from tests import appkit as kit
from tests.e2e.frames_setup import create_frames_project, frame_urls

N = 60  # frames per task: long enough (0.09 CPU s/frame at 128 px) for a job to be caught running


@pytest.fixture(scope="module")
def project(label_studio, front, clips_dir):
    p = create_frames_project(label_studio.api, label_studio.media_root, clips_dir / "box.mp4", front.url, count=N,
                              folder="box-ray", title="ray e2e", task_data=[{"frames": frame_urls("box-ray", N)}] * 7)
    return p.project, p.ml, p.tasks, p.size


def _box(size, frame=0, rid="ray-box"):
    return kit.rect(rid, frame, 25, 25, 50, 50, size)


def _job(front, task: int) -> dict:
    r = front.get(f"/jobs/{task}")
    assert r.status_code == 200, r.text
    return r.json()


def _wait(cond, timeout: float, what: str, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _prediction(api, task: int) -> list[dict]:
    return [p for p in api.predictions(task) if p.get("model_version", "").endswith("-random")]


def _full_prediction(api, task: int) -> dict:
    """Our one prediction of the task once it covers every frame (a job says done just before its final write)."""
    def full():
        preds = _prediction(api, task)
        assert len(preds) <= 1, f"task {task} has {len(preds)} predictions of this model version"
        return preds and len(kit.masks_by_frame(preds[0]["result"])) == N and preds[0]
    return _wait(full, 30, f"task {task}'s complete prediction in LS")


@pytest.fixture(scope="module")
def placed(label_studio, project, front):
    """Tasks 0 and 1 prompted at the same moment through LS's interactive endpoint."""
    api = label_studio.api
    _, ml, tasks, size = project
    answers: dict[int, dict] = {}

    def prompt(t):
        answers[t] = api.interactive(ml, t, [_box(size)])
    threads = [threading.Thread(target=prompt, args=(t,)) for t in tasks[:2]]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    return answers, {t: _job(front, t)["replica"] for t in tasks[:2]}


def test_two_tasks_prompted_at_once_run_on_two_replicas(label_studio, project, placed, ray_cluster, front):
    answers, replica_of = placed
    _, _, tasks, _ = project
    live = {a["replica"] for a in ray_cluster.replica_actors()}
    assert set(replica_of.values()) == live and len(live) == 2, (replica_of, live)
    for t in tasks[:2]:
        assert kit.masks_by_frame(answers[t]["data"]["result"])  # what was tracked within the time budget ...
        done = _wait(lambda: (s := _job(front, t))["state"] == "done" and s, 180, "the job to finish")
        assert done["replica"] == replica_of[t]  # ... the rest by the job on the same replica, written into LS
        _full_prediction(label_studio.api, t)


def test_later_requests_for_a_task_reach_its_replica(label_studio, project, placed, front):
    api = label_studio.api
    _, ml, tasks, size = project
    _, replica_of = placed
    for _ in range(3):
        for t in tasks[:2]:
            assert _job(front, t)["replica"] == replica_of[t]
    for t in tasks[:2]:  # a new prompt (batch of both too) is served where the session lives: no rebuild
        api.interactive(ml, t, [_box(size), kit.point("ray-neg", 3, 50, 50, size, positive=False)])
        status = _job(front, t)
        assert status["replica"] == replica_of[t] and status["state"] in ("queued", "running", "done")
    metrics = front.get("/metrics").text
    for replica in set(replica_of.values()):
        m = re.search(rf'sam2_replica_sessions{{replica="{replica}"}} (\S+)', metrics)
        assert m and float(m.group(1)) >= 1, metrics[-3000:]
        assert f'sam2_forwarded_requests_total{{replica="{replica}",route="jobs"}}' in metrics


def test_newer_prompt_cancels_the_running_job_on_its_replica(label_studio, project, placed, front):
    api = label_studio.api
    _, _, tasks, size = project
    t = tasks[0]
    replica = placed[1][t]

    def running_on_replica() -> float:
        _job(front, t)  # its answer refreshes the front's snapshot of the replica's stats
        text = front.get("/metrics").text
        return float(re.search(rf'sam2_replica_running_jobs{{replica="{replica}"}} (\S+)', text).group(1))
    _wait(lambda: running_on_replica() == 0, 120, "the replica's earlier jobs to finish")
    ann = api.create_annotation(t, [_box(size, frame=0, rid="ray-a")])  # webhook: a background job
    first = _wait(lambda: (s := _job(front, t))["state"] == "running" and s["frames_done"] >= 2 and s, 30,
                  "the annotation's job to run")
    assert first["replica"] == replica and first["frames_done"] < first["frames_total"]
    api.update_annotation(ann["id"], [_box(size, frame=0, rid="ray-a"), _box(size, frame=N // 2, rid="ray-b")])
    second = _wait(lambda: (s := _job(front, t))["started"] > first["started"] and s, 30, "the newer job")
    assert second["replica"] == replica
    assert running_on_replica() <= 1, "the older job must have been cancelled, not left running beside the newer one"
    cancel = front_post(front, f"/jobs/{t}/cancel")
    assert cancel["replica"] == replica and cancel["state"] in ("cancelled", "done")


def front_post(front, path: str) -> dict:
    r = requests.post(front.url + path, auth=("ls-user", "ls-secret"), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_killed_replica_rebuilds_its_tasks_elsewhere_from_label_studio(label_studio, project, placed, front,
                                                                     ray_cluster):
    api = label_studio.api
    _, ml, tasks, size = project
    _, replica_of = placed
    victim, survivor = tasks[1], tasks[0]
    dead = replica_of[victim]
    # reference: the same prompt on a fresh task, tracked to the end (no kill)
    api.interactive(ml, tasks[2], [_box(size)])
    _wait(lambda: _job(front, tasks[2])["state"] == "done", 180, "the reference job")
    reference = kit.masks_by_frame(_full_prediction(api, tasks[2])["result"])
    ann = api.create_annotation(victim, [_box(size, rid="kill-box")])  # background job on the victim's replica
    _wait(lambda: (s := _job(front, victim))["state"] == "running" and s["written_frames"] > 0, 60,
          "a partial prediction written into LS")
    (before,) = _prediction(api, victim)
    ray_cluster.kill_replica(dead)
    assert _job(front, survivor)["replica"] == replica_of[survivor]  # the other replica's task did not move
    seen = []

    def answered():
        r = front.get(f"/jobs/{victim}")
        seen.append((r.status_code, r.text[:200]))
        return r.status_code in (200, 404) and (r,)
    (status,) = _wait(answered, 60, "the front to answer after the kill")
    assert status.status_code == 404 or status.json()["replica"] != dead, seen  # a replica without the session
    api.update_annotation(ann["id"], [_box(size, rid="kill-box")])  # the next request for the task
    def rebuilt():  # 404 until LS's webhook for the update has reached the front
        r = front.get(f"/jobs/{victim}")
        seen.append((r.status_code, r.text[:200]))
        return r.status_code == 200 and r.json()["state"] == "done" and r.json()
    try:
        done = _wait(rebuilt, 120, "the rebuilt task's job")
    except AssertionError:
        raise AssertionError(f"{seen[-5:]}\n{front.log()[-3000:]}") from None
    assert done["replica"] != dead
    after = _full_prediction(api, victim)
    assert after["id"] == before["id"], "the prediction written before the kill is updated, not lost or duplicated"
    masks = kit.masks_by_frame(after["result"])
    assert all(np.array_equal(masks[i], reference[i]) for i in range(N)), "the rebuild tracks as the original did"
    anns = api.get_task(victim)["annotations"]
    assert [a["id"] for a in anns] == [ann["id"]] and anns[0]["result"][0]["id"] == "kill-box"


def test_evictions_keep_two_sessions_per_replica_and_rebuild_on_demand(label_studio, project, front, ray_cluster):
    api = label_studio.api
    _, ml, tasks, size = project
    for t in tasks[3:7]:  # 7 tasks in all onto 2 replicas x MAX_SESSIONS=2
        assert kit.masks_by_frame(api.interactive(ml, t, [_box(size)])["data"]["result"])
    live = {a["replica"] for a in ray_cluster.replica_actors()}

    def scrape():  # a replica that replaced a killed one reports its gauges a moment after it starts
        text = front.get("/metrics").text
        found = {m.group(1): float(m.group(2))
                 for m in re.finditer(r'sam2_replica_sessions{replica="([^"]+)"} (\S+)', text)}
        return (text, found) if live <= set(found) else None
    metrics, sessions = _wait(scrape, 60, "every live replica's session gauge", step=1)
    assert all(sessions[r] <= 2 for r in live), sessions
    evictions = sum(float(m.group(1)) for m in re.finditer(r'sam2_replica_evictions{replica="[^"]+"} (\S+)', metrics))
    assert evictions >= 1
    again = api.interactive(ml, tasks[3], [_box(size)])  # held or evicted, its prompt is answered
    assert kit.masks_by_frame(again["data"]["result"])


def test_ray_and_serve_metrics_are_reachable(ray_cluster, front):
    def scrape():
        text = requests.get(f"http://127.0.0.1:{ray_cluster.metrics_port}/metrics", timeout=10).text
        return "ray_sam2_replica_sessions{" in text and text
    text = _wait(scrape, 60, "the replicas' gauges in Ray's metrics", step=2)
    replicas = set(re.findall(r'ray_sam2_replica_sessions{[^}]*replica="([^"]+)"', text))
    assert replicas & {a["replica"] for a in ray_cluster.replica_actors()}
    assert "ray_serve_multiplexed_models_load_counter" in text or "ray_serve_num_multiplexed_models" in text
    assert "ray_serve_deployment_request_counter" in text or "ray_serve_replica_processing_queries" in text
