"""make_tasks against a real Label Studio: frames land under its document root, tasks are imported, LS serves them."""
import json
import subprocess
import sys

from tests.e2e.ls_server import FRAMES_CONFIG, REPO


def _make_tasks(server, video, project):
    cmd = [sys.executable, "-m", "backend.ls.make_tasks", str(video),
           "--out-dir", str(server.media_root / "frames"), "--document-root", str(server.media_root),
           "--stride", "5", "--max-frames-per-task", "40",
           "--label-studio-url", server.url, "--api-key", server.token, "--project", str(project)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_box_frames_imported_and_served(label_studio, clips_dir):
    api = label_studio.api
    project = api.create_project("make_tasks box", FRAMES_CONFIG)

    summary = _make_tasks(label_studio, clips_dir / "box.mp4", project)
    assert (summary["source_frames"], summary["frames"], summary["tasks"], summary["imported"]) == (455, 91, 3, 3)

    tasks = api.tasks(project)
    assert len(tasks) == 3  # the storage was not synced: no stray one-JPEG tasks
    assert [t["data"]["frame_start"] for t in tasks] == [0, 200, 400]
    assert [len(t["data"]["frames"]) for t in tasks] == [40, 40, 11]
    assert all(t["data"]["frame_stride"] == 5 for t in tasks)
    assert tasks[2]["data"]["frames"][-1] == "/data/local-files/?d=frames/box/00450.jpg"

    first = tasks[0]["data"]["frames"][0]
    resp = api.request("GET", first)  # through LS, with the token
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.content[:3] == b"\xff\xd8\xff"
    assert resp.content == (label_studio.media_root / "frames" / "box" / "00000.jpg").read_bytes()

    storages = api.local_storages(project)
    assert [s["path"] for s in storages] == [str(label_studio.media_root / "frames" / "box")]

    # a second run reuses the covering storage and adds the tasks again
    again = _make_tasks(label_studio, clips_dir / "box.mp4", project)
    assert again["storage_id"] == storages[0]["id"]
    assert len(api.local_storages(project)) == 1
    assert len(api.tasks(project)) == 6


def test_frame_url_needs_a_covering_storage(label_studio):
    """Without a storage of some project covering the folder, LS answers 404 even though the file exists."""
    folder = label_studio.media_root / "uncovered"
    folder.mkdir()
    (folder / "00000.jpg").write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")
    resp = label_studio.api.session.get(f"{label_studio.url}/data/local-files/?d=uncovered/00000.jpg", timeout=30)
    assert resp.status_code == 404
