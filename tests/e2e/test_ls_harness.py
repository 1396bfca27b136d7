"""The harness itself: LS starts, the fixed legacy token authenticates, a frames project takes imported tasks."""
import requests

from tests.e2e.ls_server import FRAMES_CONFIG, LS_USER


def test_server_up_token_and_frames_project(label_studio):
    whoami = label_studio.api.call("GET", "/api/current-user/whoami")
    assert whoami["email"] == LS_USER

    # the token is what authenticates: without it the same call is refused
    anonymous = requests.get(f"{label_studio.url}/api/current-user/whoami", timeout=10)
    assert anonymous.status_code == 401

    project = label_studio.api.create_project("harness", FRAMES_CONFIG)
    data = [{"frames": [f"/data/local-files/?d=x/{i:05d}.jpg" for i in range(k, k + 3)], "frame_start": k}
            for k in (0, 3)]
    ids = label_studio.api.import_tasks(project, data)
    assert len(ids) == 2

    tasks = label_studio.api.tasks(project)
    assert [t["id"] for t in tasks] == sorted(ids)
    assert [t["data"]["frame_start"] for t in tasks] == [0, 3]
    assert label_studio.api.get_task(ids[1])["data"]["frames"][0] == "/data/local-files/?d=x/00003.jpg"
