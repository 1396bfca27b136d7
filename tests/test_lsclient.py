"""LS REST client and token provider against a local fake Label Studio (werkzeug server in a thread), fully offline."""
import json
import threading
import time

import pytest
from werkzeug.wrappers import Response

from backend.ls.errors import BackendError
from backend.ls.lsclient import LabelStudioClient, TokenProvider, is_jwt
from tests.fakehttp import LEGACY, FakeHost, closed_port_url, json_response, make_jwt

PAT = make_jwt({"token_type": "refresh", "exp": int(time.time()) + 86400, "jti": "pat"})


class PatAuth:
    """Imitates LS JWT auth: /api/token/refresh/ mints access tokens; `expire()` makes every issued token invalid."""

    def __init__(self, ls: FakeHost, exp_in_s: float = 300, delay_s: float = 0.0):
        self.valid: set[str] = set()
        self.n = 0
        self.exp_in_s, self.delay_s = exp_in_s, delay_s
        ls.routes["/api/token/refresh/"] = self.refresh

    def refresh(self, request):
        time.sleep(self.delay_s)
        if json.loads(request.get_data()) != {"refresh": PAT}:
            return json_response({"detail": "Token is invalid"}, 401)
        self.n += 1
        access = make_jwt({"token_type": "access", "exp": int(time.time() + self.exp_in_s), "n": self.n})
        self.valid.add(access)
        return json_response({"access": access})

    def ok(self, request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.valid

    def expire(self):
        self.valid.clear()


@pytest.fixture
def ls():
    server = FakeHost()
    yield server
    server.close()


def test_jwt_detection():
    assert is_jwt(PAT) and is_jwt(make_jwt({"token_type": "access"}))
    assert not is_jwt(LEGACY) and not is_jwt("a.b.c") and not is_jwt("")


def test_legacy_token_sent_as_token_header_without_refresh(ls):
    ls.routes["/api/tasks/5/"] = lambda r: json_response({"id": 5, "data": {"video": "/data/upload/1/a.mp4"}})
    client = LabelStudioClient(ls.url, TokenProvider(ls.url, LEGACY), timeout_s=5)
    assert client.get_task(5)["id"] == 5
    assert ls.hits("/api/tasks/5/")[0]["auth"] == f"Token {LEGACY}"
    assert ls.hits("/api/token/refresh/") == []


def test_no_api_key_sends_no_authorization(ls):
    ls.routes["/api/tasks/5/"] = lambda r: json_response({"id": 5})
    LabelStudioClient(ls.url, TokenProvider(ls.url, None), timeout_s=5).get_task(5)
    assert ls.hits("/api/tasks/5/")[0]["auth"] is None


def test_access_jwt_is_used_as_bearer_without_exchange(ls):
    access = make_jwt({"token_type": "access", "exp": int(time.time()) + 300})
    assert TokenProvider(ls.url, access).headers() == {"Authorization": f"Bearer {access}"}
    assert ls.seen == []


def test_pat_is_exchanged_once_and_cached(ls):
    auth = PatAuth(ls)
    ls.routes["/api/tasks/5/"] = lambda r: json_response({"id": 5}) if auth.ok(r) else json_response({}, 401)
    client = LabelStudioClient(ls.url, TokenProvider(ls.url, PAT), timeout_s=5)
    client.get_task(5)
    client.get_task(5)
    refreshes = ls.hits("/api/token/refresh/")
    assert len(refreshes) == 1 and json.loads(refreshes[0]["body"]) == {"refresh": PAT}
    assert all(h["auth"].startswith("Bearer ") and h["auth"] != f"Bearer {PAT}" for h in ls.hits("/api/tasks/5/"))


def test_access_token_close_to_expiry_is_refreshed_before_use(ls):
    PatAuth(ls, exp_in_s=10)  # inside the 30 s safety margin
    tp = TokenProvider(ls.url, PAT)
    assert tp.headers() != tp.headers()
    assert len(ls.hits("/api/token/refresh/")) == 2


def test_401_on_expired_access_refreshes_and_retries_once(ls):
    auth = PatAuth(ls)
    ls.routes["/api/tasks/5/"] = lambda r: json_response({"id": 5}) if auth.ok(r) else json_response({}, 401)
    client = LabelStudioClient(ls.url, TokenProvider(ls.url, PAT), timeout_s=5)
    client.get_task(5)
    auth.expire()
    assert client.get_task(5) == {"id": 5}
    assert len(ls.hits("/api/token/refresh/")) == 2
    assert len(ls.hits("/api/tasks/5/")) == 3  # ok, 401, retried ok


def test_persistent_401_is_502_after_exactly_one_retry(ls):
    PatAuth(ls)
    ls.routes["/api/tasks/5/"] = lambda r: json_response({"detail": "nope"}, 401)
    client = LabelStudioClient(ls.url, TokenProvider(ls.url, PAT), timeout_s=5)
    with pytest.raises(BackendError) as err:
        client.get_task(5)
    assert err.value.status == 502 and "LABEL_STUDIO_API_KEY" in str(err.value)
    assert len(ls.hits("/api/tasks/5/")) == 2


def test_legacy_401_is_not_retried(ls):
    ls.routes["/api/tasks/5/"] = lambda r: json_response({"detail": "nope"}, 401)
    with pytest.raises(BackendError) as err:
        LabelStudioClient(ls.url, TokenProvider(ls.url, LEGACY), timeout_s=5).get_task(5)
    assert err.value.status == 502 and len(ls.hits("/api/tasks/5/")) == 1


def test_rejected_pat_gives_502_naming_the_env_var(ls):
    PatAuth(ls)
    bad = make_jwt({"token_type": "refresh", "jti": "revoked"})
    with pytest.raises(BackendError) as err:
        TokenProvider(ls.url, bad).headers()
    assert err.value.status == 502 and "LABEL_STUDIO_API_KEY" in str(err.value)


def test_concurrent_callers_share_one_refresh_and_stale_invalidate_is_ignored(ls):
    PatAuth(ls, delay_s=0.3)
    tp = TokenProvider(ls.url, PAT)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(tp.headers())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and len({o["Authorization"] for o in out}) == 1
    assert len(ls.hits("/api/token/refresh/")) == 1
    stale = out[0]
    tp.invalidate(stale)
    fresh = tp.headers()
    tp.invalidate(stale)  # a second thread reporting the same stale token must not force another refresh
    assert tp.headers() == fresh != stale
    assert len(ls.hits("/api/token/refresh/")) == 2


@pytest.mark.parametrize("call, method, path, args, body", [
    (lambda c: c.list_predictions(3), "GET", "/api/predictions/", {"task": "3"}, None),
    (lambda c: c.create_prediction(3, [{"id": "a"}], score=0.5, model_version="v1"), "POST", "/api/predictions/", {},
     {"task": 3, "result": [{"id": "a"}], "score": 0.5, "model_version": "v1"}),
    (lambda c: c.update_prediction(9, [], score=None, model_version="v2"), "PATCH", "/api/predictions/9/", {},
     {"result": [], "score": None, "model_version": "v2"}),
    (lambda c: c.delete_prediction(9), "DELETE", "/api/predictions/9/", {}, None),
    (lambda c: c.create_task(2, {"video": "/data/upload/2/v.mp4"}), "POST", "/api/tasks/", {},
     {"project": 2, "data": {"video": "/data/upload/2/v.mp4"}}),
    (lambda c: c.import_tasks(2, [{"data": {"frames": ["a.jpg"]}}]), "POST", "/api/projects/2/import", {},
     [{"data": {"frames": ["a.jpg"]}}]),
    (lambda c: c.create_local_storage(2, "/media/frames", "frames"), "POST", "/api/storages/localfiles/", {},
     {"project": 2, "path": "/media/frames", "title": "frames", "use_blob_urls": True}),
    (lambda c: c.sync_local_storage(4), "POST", "/api/storages/localfiles/4/sync", {}, None),
])
def test_endpoint_paths_and_payloads(ls, call, method, path, args, body):
    ls.routes[path] = lambda r: Response(status=204) if method == "DELETE" else json_response([{"id": 1}])
    call(LabelStudioClient(ls.url, TokenProvider(ls.url, LEGACY), timeout_s=5))
    (req,) = ls.hits(path)
    assert req["method"] == method and req["args"] == args and req["auth"] == f"Token {LEGACY}"
    assert (json.loads(req["body"]) if req["body"] else None) == body


def test_list_predictions_returns_the_list(ls):
    ls.routes["/api/predictions/"] = lambda r: json_response([{"id": 1, "task": 3}, {"id": 2, "task": 3}])
    preds = LabelStudioClient(ls.url, TokenProvider(ls.url, LEGACY)).list_predictions(3)
    assert [p["id"] for p in preds] == [1, 2]


def test_unreachable_ls_is_502_with_a_sentence():
    url = closed_port_url()
    with pytest.raises(BackendError) as err:
        LabelStudioClient(url, TokenProvider(url, LEGACY), timeout_s=2).get_task(1)
    assert err.value.status == 502 and "LABEL_STUDIO_URL" in str(err.value) and str(err.value).endswith(".")


def test_ls_404_is_404_and_ls_500_is_502_with_body(ls):
    ls.routes["/api/predictions/"] = lambda r: Response("database is locked", status=500)
    client = LabelStudioClient(ls.url, TokenProvider(ls.url, LEGACY), timeout_s=5)
    with pytest.raises(BackendError) as err:
        client.get_task(77)
    assert err.value.status == 404
    with pytest.raises(BackendError) as err:
        client.create_prediction(1, [], score=None, model_version="v")
    assert err.value.status == 502 and "database is locked" in str(err.value)


def test_client_without_ls_url_explains_what_to_set():
    with pytest.raises(BackendError, match="LABEL_STUDIO_URL"):
        LabelStudioClient(None, TokenProvider(None, LEGACY))
