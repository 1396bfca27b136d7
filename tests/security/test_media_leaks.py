"""Media errors and logs leak neither presigned signatures nor server paths, and NUL/control bytes in a local-files
path are a 400, not a 500 (issue 9, Medium). Loopback only."""
from __future__ import annotations

import logging

import pytest
from werkzeug.wrappers import Response

from backend.serving.errors import MediaError
from backend.serving.urls import redact
from tests.fakehttp import FakeHost

SIG = "S3CR3TSIGNATURE"


@pytest.fixture
def bucket():
    server = FakeHost("localhost")
    yield server
    server.close()


def _all_text(caplog, errors) -> str:
    ours = [r for r in caplog.records if not r.name.startswith("werkzeug")]  # not the fake hosts' own access logs
    return "\n".join([r.getMessage() for r in ours] + [str(e) for e in errors])


def test_presigned_query_strings_are_never_logged_or_shown(make, ls, bucket, caplog):
    # before: "downloaded http://.../v.mp4?X-Amz-Signature=... into the media cache" was logged at INFO
    caplog.set_level(logging.DEBUG)
    bucket.serve("/b/v.mp4", b"V")
    ls.routes["/tasks/7/presign/"] = lambda r: Response(status=303, headers={
        "Location": f"{bucket.url}/b/w.mp4?X-Amz-Credential=AKIA&X-Amz-Signature={SIG}"})
    resolver = make(allowed_hosts=("localhost",))
    errors = []
    resolver.fetch(f"{bucket.url}/b/v.mp4?X-Amz-Signature={SIG}&X-Amz-Expires=60", task_id=1)
    for url, task in ((f"{bucket.url}/b/missing.mp4?X-Amz-Signature={SIG}", 1), ("s3://b/w.mp4", 7),
                      (f"{bucket.url}\\@127.0.0.4/b/v.mp4?sig={SIG}", 1), (f"http://127.0.0.3:1/v.mp4?sig={SIG}", 1)):
        with pytest.raises(MediaError) as err:
            resolver.fetch(url, task_id=task)
        errors.append(err.value)
    text = _all_text(caplog, errors)
    assert SIG not in text and "AKIA" not in text
    assert "<redacted>" in text  # the URL is still recognisable without its secrets


def test_redact_keeps_plain_queries_and_hides_signing_ones():
    assert redact("/data/local-files/?d=a/b.jpg") == "/data/local-files/?d=a/b.jpg"
    assert redact(f"https://b.s3.amazonaws.com/k.mp4?X-Amz-Signature={SIG}") == \
        "https://b.s3.amazonaws.com/k.mp4?<redacted>"
    assert redact(f"https://acct.blob.core.windows.net/c/v.mp4?sv=2022&sig={SIG}").endswith("?<redacted>")
    assert redact(f"https://storage.googleapis.com/b/v.mp4?X-Goog-Signature={SIG}").endswith("?<redacted>")
    assert redact("a\nb\x00") == "a\\nb\\x00"


@pytest.mark.parametrize("d", ["%00", "a%00.jpg", "a%0A.jpg", "a%1Fb.jpg", "a%7F.jpg"])
def test_control_bytes_in_a_local_files_path_are_400(make, ls, tmp_path, d):
    # before: d=%00 reached Path.resolve() and raised ValueError("embedded null byte"): a 500
    (tmp_path / "root").mkdir()
    with pytest.raises(MediaError) as err:
        make(local_files_root=tmp_path / "root").fetch(f"/data/local-files/?d={d}", task_id=1)
    assert err.value.status == 400 and ls.seen == []


def test_local_files_errors_do_not_reveal_the_server_root(make, tmp_path):
    # before: "... does not exist under LOCAL_FILES_DOCUMENT_ROOT /srv/secret/root; ..."
    root = tmp_path / "secret-root-name"
    root.mkdir()
    with pytest.raises(MediaError) as err:
        make(local_files_root=root).fetch("/data/local-files/?d=frames/missing.jpg", task_id=1)
    assert err.value.status == 404 and "secret-root-name" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_cache_dir_errors_do_not_reveal_the_cache_path(make, ls, tmp_path):
    ls.serve("/data/upload/1/a.jpg", b"A")
    blocker = tmp_path / "secret-cache-name"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(MediaError) as err:
        make(cache_dir=blocker).fetch("/data/upload/1/a.jpg", task_id=1)
    assert err.value.status == 500 and "MEDIA_CACHE_DIR" in str(err.value) and "secret-cache-name" not in str(err.value)
