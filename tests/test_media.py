"""Media URL resolution against a fake Label Studio and a fake media host (werkzeug servers in threads), offline.

The fake LS listens on 127.0.0.1:<p1>; the "other host" is addressed as localhost:<p2>, so it is a different host name.
Cache, size-limit and single-flight behaviour is tested in test_mediacache.py.
"""
import base64
import json
from pathlib import Path

import pytest
from werkzeug.wrappers import Response

from backend.ls.errors import MediaError
from backend.ls.lsclient import TokenProvider
from backend.serving.media import MediaResolver, MediaSettings
from tests.fakehttp import LEGACY, FakeHost, closed_port_url, make_jwt


@pytest.fixture
def other():
    server = FakeHost("localhost")
    yield server
    server.close()


# -- URL forms ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/data/upload/1/clip.mp4", "upload/1/clip.mp4", "data/upload/1/clip.mp4"])
def test_upload_path_is_fetched_from_ls_with_token(make, ls, url):
    ls.serve("/data/upload/1/clip.mp4", b"VIDEO")
    path = make().fetch(url, task_id=1)
    assert path.read_bytes() == b"VIDEO" and path.name.endswith("clip.mp4")
    (req,) = ls.seen
    assert req["path"] == "/data/upload/1/clip.mp4" and req["auth"] == f"Token {LEGACY}"


def test_local_files_without_root_go_through_ls(make, ls):
    ls.serve("/data/local-files/", b"JPEG")
    path = make().fetch("/data/local-files/?d=frames/0001.jpg", task_id=1)
    assert path.read_bytes() == b"JPEG" and path.suffix == ".jpg"
    (req,) = ls.seen
    assert req["args"] == {"d": "frames/0001.jpg"} and req["auth"] == f"Token {LEGACY}"


def test_local_files_with_root_are_read_in_place(make, ls, tmp_path):
    root = tmp_path / "root"
    (root / "frames").mkdir(parents=True)
    (root / "frames" / "0001.jpg").write_bytes(b"JPEG")
    resolver = make(local_files_root=root)
    for url in ("/data/local-files/?d=frames/0001.jpg", "/data/local-files/?d=/frames%2F0001.jpg"):
        assert resolver.fetch(url, task_id=1) == (root / "frames" / "0001.jpg").resolve()
        assert make(local_files_root=root, ls_url=None).fetch(url, task_id=1).read_bytes() == b"JPEG"
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/local-files/?d=frames/missing.jpg", task_id=1)
    assert err.value.status == 404 and "LOCAL_FILES_DOCUMENT_ROOT" in str(err.value)
    assert ls.seen == []


@pytest.mark.parametrize("with_root", [True, False])
@pytest.mark.parametrize("d", ["../secret.txt", "frames/../../secret.txt", "..%2Fsecret.txt", "/../secret.txt"])
def test_local_files_traversal_is_rejected(make, ls, tmp_path, d, with_root):
    root = tmp_path / "root"
    (root / "frames").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    with pytest.raises(MediaError) as err:
        make(local_files_root=root if with_root else None).fetch(f"/data/local-files/?d={d}", task_id=1)
    assert err.value.status == 400 and ls.seen == []  # not even forwarded to LS


def test_local_files_symlink_out_of_root_is_rejected(make, ls, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "dirlink").symlink_to(tmp_path)
    for d in ("link.txt", "dirlink/secret.txt"):
        with pytest.raises(MediaError) as err:
            make(local_files_root=root).fetch(f"/data/local-files/?d={d}", task_id=1)
        assert err.value.status == 403
    assert ls.seen == []


@pytest.mark.parametrize("uri", ["s3://bucket/a b/v.mp4", "gs://bucket/v.mp4", "azure-blob://container/dir/v.mp4"])
def test_cloud_uri_goes_to_presign_and_follows_redirect_to_allowed_host_without_ls_auth(make, ls, other, uri):
    ls.routes["/tasks/7/presign/"] = lambda r: Response(status=303, headers={
        "Location": f"{other.url}/bucket/v.mp4?X-Amz-Signature=abc"})
    other.serve("/bucket/v.mp4", b"CLOUD")
    path = make(allowed_hosts=("localhost",)).fetch(uri, task_id=7)
    assert path.read_bytes() == b"CLOUD" and path.name.endswith("_v.mp4")
    (presign,) = ls.seen
    assert base64.urlsafe_b64decode(presign["args"]["fileuri"]).decode() == uri
    assert presign["auth"] == f"Token {LEGACY}"
    (fetched,) = other.seen
    assert fetched["args"] == {"X-Amz-Signature": "abc"} and fetched["auth"] is None


def test_cloud_uri_proxied_by_ls(make, ls):
    ls.serve("/tasks/3/presign/", b"PROXIED")
    assert make().fetch("gs://b/v.mp4", task_id=3).read_bytes() == b"PROXIED"


def test_redirect_to_host_not_allowed_is_403_and_never_contacted(make, ls, other):
    ls.routes["/tasks/7/presign/"] = lambda r: Response(status=303, headers={"Location": f"{other.url}/bucket/v.mp4"})
    with pytest.raises(MediaError) as err:
        make().fetch("s3://bucket/v.mp4", task_id=7)
    assert err.value.status == 403 and "ALLOWED_MEDIA_HOSTS" in str(err.value)
    assert other.seen == []


def test_absolute_url_allowlist(make, ls, other):
    other.serve("/v.mp4", b"EXT")
    with pytest.raises(MediaError) as err:
        make().fetch(f"{other.url}/v.mp4", task_id=None)
    assert err.value.status == 403 and other.seen == []
    port = other.url.rsplit(":", 1)[1]
    with pytest.raises(MediaError):
        make(allowed_hosts=("localhost:1", "*.localhost")).fetch(f"{other.url}/v.mp4", task_id=None)
    assert make(allowed_hosts=(f"localhost:{port}",)).fetch(f"{other.url}/v.mp4", task_id=None).read_bytes() == b"EXT"
    assert other.seen[0]["auth"] is None


def test_ls_auth_goes_to_ls_origin_only_not_same_host_other_port(make, ls, other):
    ls.serve("/data/upload/1/a.jpg", b"A")
    other.serve("/a.jpg", b"B")
    resolver = make(allowed_hosts=("127.0.0.1",))
    resolver.fetch(f"{ls.url}/data/upload/1/a.jpg", task_id=None)
    resolver.fetch(other.url.replace("localhost", "127.0.0.1") + "/a.jpg", task_id=None)
    assert ls.seen[0]["auth"] == f"Token {LEGACY}" and other.seen[0]["auth"] is None


def test_redirect_loop_is_502(make, ls, other):
    other.routes["/loop"] = lambda r: Response(status=302, headers={"Location": "/loop"})
    with pytest.raises(MediaError) as err:
        make(allowed_hosts=("localhost",)).fetch(f"{other.url}/loop", task_id=None)
    assert err.value.status == 502 and len(other.seen) == 6


@pytest.mark.parametrize("url, task_id, words", [
    ("s3://bucket/v.mp4", None, "task"),
    ("ftp://host/v.mp4", 1, "not supported"),
    ("file:///etc/passwd", 1, "not supported"),
    ("/api/projects/", 1, "not a Label Studio media path"),
    ("http:///nohost", 1, "no host"),
    ("", 1, "empty"),
])
def test_bad_urls_are_400(make, ls, url, task_id, words):
    with pytest.raises(MediaError) as err:
        make().fetch(url, task_id=task_id)
    assert err.value.status == 400 and words in str(err.value)
    assert ls.seen == []


@pytest.mark.parametrize("url", ["/data/upload/1/a.mp4", "s3://b/a.mp4"])
def test_relative_or_cloud_url_without_ls_url_is_400_naming_the_env_var(make, url):
    with pytest.raises(MediaError) as err:
        make(ls_url=None).fetch(url, task_id=1)
    assert err.value.status == 400 and "LABEL_STUDIO_URL" in str(err.value)


# -- auth ---------------------------------------------------------------------------------------------------------

def test_pat_exchange_and_refresh_on_401(make, ls):
    pat = make_jwt({"token_type": "refresh", "jti": "p"})
    valid: set = set()

    def refresh(request):
        assert json.loads(request.get_data()) == {"refresh": pat}
        access = make_jwt({"token_type": "access", "n": len(ls.hits("/api/token/refresh/"))})
        valid.add(access)
        return Response(json.dumps({"access": access}), content_type="application/json")

    def upload(request):
        ok = request.headers.get("Authorization", "")[7:] in valid
        return Response(b"DATA") if ok else Response("expired", status=401)

    ls.routes["/api/token/refresh/"] = refresh
    ls.routes["/data/upload/1/a.jpg"] = ls.routes["/data/upload/1/b.jpg"] = upload
    resolver = make(api_key=pat)
    resolver.fetch("/data/upload/1/a.jpg", task_id=1)
    valid.clear()  # the access token expired
    assert resolver.fetch("/data/upload/1/b.jpg", task_id=1).read_bytes() == b"DATA"
    assert len(ls.hits("/api/token/refresh/")) == 2
    assert [r["path"] for r in ls.seen if r["path"].startswith("/data")] == ["/data/upload/1/a.jpg"] + [
        "/data/upload/1/b.jpg"] * 2
    assert all(r["auth"].startswith("Bearer ") for r in ls.seen if r["path"].startswith("/data"))


def test_rejected_credentials_are_502_naming_the_api_key(make, ls):
    ls.routes["/data/upload/1/a.jpg"] = lambda r: Response("no", status=401)
    with pytest.raises(MediaError) as err:
        make().fetch("/data/upload/1/a.jpg", task_id=1)
    assert err.value.status == 502 and "LABEL_STUDIO_API_KEY" in str(err.value)
    assert len(ls.seen) == 1  # a legacy token cannot be refreshed, so no retry


# -- upstream failures ----------------------------------------------------------------------------------------------

def test_ls_404_is_404_and_500_is_502(make, ls):
    ls.routes["/data/upload/1/bad.mp4"] = lambda r: Response("boom", status=500)
    resolver = make()
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/upload/1/missing.mp4", task_id=1)
    assert err.value.status == 404
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/upload/1/bad.mp4", task_id=1)
    assert err.value.status == 502 and not any(p.name != ".owner.lock" for p in resolver.settings.cache_dir.glob("*"))


def test_ls_1_23_2_missing_upload_answer_is_404(make, ls):
    # measured on LS 1.23.2: GET /data/upload/<pid>/<unknown file> -> 500 with this detail (FileUpload lookup is None)
    detail = {"status_code": 500, "detail": "'NoneType' object has no attribute 'has_permission'"}
    ls.routes["/data/upload/1/deleted.mp4"] = lambda r: Response(json.dumps(detail), status=500,
                                                                 content_type="application/json")
    with pytest.raises(MediaError) as err:
        make().fetch("/data/upload/1/deleted.mp4", task_id=1)
    assert err.value.status == 404


def test_unreachable_ls_is_502_with_a_sentence(make):
    url = closed_port_url()
    with pytest.raises(MediaError) as err:
        make(ls_url=url, timeout_s=2).fetch("/data/upload/1/a.mp4", task_id=1)
    msg = str(err.value)
    assert err.value.status == 502 and "LABEL_STUDIO_URL" in msg and msg.endswith(".") and "127.0.0.1" in msg


def test_settings_from_env(tmp_path):
    s = MediaSettings.from_env({"LABEL_STUDIO_URL": "http://ls:8080/", "LABEL_STUDIO_API_KEY": "k",
                                "MEDIA_CACHE_DIR": str(tmp_path), "MEDIA_CACHE_MAX_MB": "10", "MEDIA_MAX_FILE_MB": "2",
                                "ALLOWED_MEDIA_HOSTS": "A.example.com, *.s3.amazonaws.com",
                                "LOCAL_FILES_DOCUMENT_ROOT": "/srv/media", "MEDIA_TIMEOUT_S": "7"})
    assert s.ls_url == "http://ls:8080" and s.cache_dir == tmp_path and s.local_files_root == Path("/srv/media")
    assert s.max_cache_bytes == 10 << 20 and s.max_file_bytes == 2 << 20 and s.timeout_s == 7
    assert s.allowed_hosts == ("a.example.com", "*.s3.amazonaws.com")
    d = MediaSettings.from_env({})
    assert d.ls_url is None and d.allowed_hosts == () and d.local_files_root is None
    assert d.total_timeout_s == 600 and d.max_frame_pixels == 7680 * 4320 and d.max_video_frames == 100_000
    s = MediaSettings.from_env({"MEDIA_TOTAL_TIMEOUT_S": "90", "MEDIA_MAX_FRAME_PIXELS": "1000000",
                                "MEDIA_MAX_VIDEO_FRAMES": "500"})
    assert (s.total_timeout_s, s.max_frame_pixels, s.max_video_frames) == (90, 1_000_000, 500)


@pytest.mark.parametrize("env, name", [
    ({"MEDIA_TOTAL_TIMEOUT_S": "soon"}, "MEDIA_TOTAL_TIMEOUT_S"),
    ({"MEDIA_CACHE_MAX_MB": "0"}, "MEDIA_CACHE_MAX_MB"),
    ({"MEDIA_MAX_FRAME_PIXELS": "1.5"}, "MEDIA_MAX_FRAME_PIXELS"),
    ({"MEDIA_MAX_VIDEO_FRAMES": "-1"}, "MEDIA_MAX_VIDEO_FRAMES"),
    ({"LABEL_STUDIO_URL": "http://evil\\@ls:8080"}, "LABEL_STUDIO_URL"),
    ({"LABEL_STUDIO_URL": "ls:8080"}, "LABEL_STUDIO_URL"),
])
def test_bad_media_settings_fail_fast_naming_the_variable(env, name):
    from backend.settings import SettingsError
    with pytest.raises(SettingsError, match=name):
        MediaSettings.from_env(env)


def test_resolver_accepts_an_explicit_token_provider(tmp_path, ls):
    ls.serve("/data/upload/1/a.jpg", b"A")
    tp = TokenProvider(ls.url, "other-legacy-key")
    MediaResolver(MediaSettings(ls_url=ls.url, api_key=None, cache_dir=tmp_path), tp).fetch("/data/upload/1/a.jpg",
                                                                                           task_id=1)
    assert ls.seen[0]["auth"] == "Token other-legacy-key"


def test_the_decoders_pixel_guard_has_an_unambiguous_name_and_the_old_one_still_works(caplog):
    """MEDIA_DECODE_MAX_PIXELS (decompression bombs) was MEDIA_MAX_FRAME_PIXELS, which read like MAX_FRAME_PIXELS (the
    work cap): the new name is read, the old one still works with a warning naming the new one, the new one wins."""
    assert MediaSettings.from_env({"MEDIA_DECODE_MAX_PIXELS": "1000"}).max_frame_pixels == 1000
    with caplog.at_level("WARNING", logger="backend.settings"):
        assert MediaSettings.from_env({"MEDIA_MAX_FRAME_PIXELS": "2000"}).max_frame_pixels == 2000
    assert any("MEDIA_DECODE_MAX_PIXELS" in r.getMessage() and "deprecated" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="backend.settings"):
        both = MediaSettings.from_env({"MEDIA_MAX_FRAME_PIXELS": "2000", "MEDIA_DECODE_MAX_PIXELS": "3000"})
    assert both.max_frame_pixels == 3000 and not caplog.records
    with pytest.raises(ValueError, match="MEDIA_DECODE_MAX_PIXELS"):
        MediaSettings.from_env({"MEDIA_DECODE_MAX_PIXELS": "1.5"})
