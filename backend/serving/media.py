"""Fetch a task's media (video file or frame images) to a local file: checked URLs, the LS token only where it belongs,
a total deadline per download and a disk cache whose byte cap always holds.

URL forms (LS 1.23.2 sends task data unresolved); every URL is parsed and checked once by `backend.serving.urls` and
the request sends exactly the checked URL:
- `/data/upload/<pid>/<file>` (also `upload/...`, `data/...`): GET `{LABEL_STUDIO_URL}/data/upload/...` with LS auth
  (any query is dropped: LS ignores it, and `?n=1`, `?n=2`... must not be separate cache entries).
- `/data/local-files/?d=<path>`: read from disk under `local_files_root` when set (`..`, `.`, control characters
  -> 400, a symlink leading outside the root -> 403), else GET `/data/local-files/?d=<path>` from LS with LS auth.
- `s3://`, `gs://`, `azure-blob://`: GET `{LS}/tasks/<task_id>/presign/?fileuri=<base64url(uri)>` with LS auth. LS
  either proxies the bytes (200) or answers 303 to a presigned cloud URL.
- `http(s)://host/...`: on the LS origin only LS media paths are fetched (with LS auth); other hosts only when listed
  in `allowed_hosts`, never with LS auth.

The LS token goes only to the exact LS origin (scheme, host and port of LABEL_STUDIO_URL) and only for LS media paths
(`/data/upload/`, `/data/local-files/`, `/storage-data/`, `/tasks/<id>/presign/`, `/projects/<id>/presign/` below
LABEL_STUDIO_URL's path) after the path was checked. Redirects are followed by hand (at most 5); each target is checked
like a task URL, a target elsewhere than LS must be in `allowed_hosts`, and once a chain has left the LS origin no hop
gets the token again.

Cache key: the checked canonical URL (LS uploads without query, local files by `d` only, cloud URIs as written, other
URLs without presigning parameters). See backend/serving/mediacache.py for the cap, pins and single flight.
"""
from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, urlencode, urljoin

import requests

from backend.serving import download
from backend.serving.errors import MediaError
from backend.serving.mediacache import CacheGroup, Fill, MediaCache, entry_name, write_atomic
from backend.serving.tokens import TokenProvider
from backend.serving.urls import HttpURL, bad_url, cache_key, check_chars, join_relative, parse_http, redact

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
_LS_MEDIA = (  # LS paths (below LABEL_STUDIO_URL's own path) that may be fetched with the LS token
    ("upload", re.compile(r"/data/upload/[^?]+")),
    ("local", re.compile(r"/data/local-files/?")),
    ("storage", re.compile(r"/storage-data/[^?]+")),
    ("presign", re.compile(r"/(?:tasks|projects)/[0-9]+/presign/?")),
)
_NO_LS = HttpURL("http", "label-studio.invalid", 80, "/")  # base for checking LS paths when LABEL_STUDIO_URL is unset
_MAX_REDIRECTS = 5
_CHUNK = _MB = 1 << 20


@dataclass(frozen=True)
class MediaSettings:
    """Media download settings (read from the environment by `backend.settings.media_from_env`).

    Sizes are bytes; `timeout_s` is seconds per connect and per read, `total_timeout_s` the seconds one download
    (redirects included) may take in all and how long a request waits for another's download of the same file.
    `max_frame_pixels` (MEDIA_DECODE_MAX_PIXELS) caps width x height of a frame the decoder opens (decompression
    bombs; the work cap on tracked frames is `Limits.max_frame_pixels`); `max_video_frames` caps the frames of a video.
    `allowed_hosts` entries: `host`, `host:port`, `*.domain` (any subdomain) or `*` (any host); the LS origin is
    always allowed (for its media paths) and needs no entry.
    """

    ls_url: str | None
    api_key: str | None
    cache_dir: Path
    max_cache_bytes: int = 2048 * _MB
    max_file_bytes: int = 1024 * _MB
    allowed_hosts: tuple[str, ...] = ()
    local_files_root: Path | None = None
    timeout_s: float = 30.0
    total_timeout_s: float = 600.0
    max_frame_pixels: int = 7680 * 4320
    max_video_frames: int = 100_000

    def __post_init__(self):
        for name, value, var in (("max_cache_bytes", self.max_cache_bytes, "MEDIA_CACHE_MAX_MB"),
                                 ("max_file_bytes", self.max_file_bytes, "MEDIA_MAX_FILE_MB"),
                                 ("timeout_s", self.timeout_s, "MEDIA_TIMEOUT_S"),
                                 ("total_timeout_s", self.total_timeout_s, "MEDIA_TOTAL_TIMEOUT_S"),
                                 ("max_frame_pixels", self.max_frame_pixels, "MEDIA_DECODE_MAX_PIXELS"),
                                 ("max_video_frames", self.max_video_frames, "MEDIA_MAX_VIDEO_FRAMES")):
            if not value > 0:
                raise ValueError(f"{var} must be positive (MediaSettings.{name}={value!r}); set it or unset it.")
        if self.ls_url:
            try:
                ls = parse_http(self.ls_url.strip().rstrip("/"))
            except MediaError:
                raise ValueError(f"LABEL_STUDIO_URL={redact(self.ls_url)!r} is not a plain http(s) URL; set it to "
                                 "e.g. http://label-studio:8080") from None
            if ls.query:
                raise ValueError("LABEL_STUDIO_URL must not have a query string; set it to e.g. http://label-studio:8080")
        object.__setattr__(self, "ls_url", self.ls_url.strip().rstrip("/") if self.ls_url else None)
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "allowed_hosts", tuple(h.strip().lower() for h in self.allowed_hosts if h.strip()))
        if self.local_files_root is not None:
            object.__setattr__(self, "local_files_root", Path(self.local_files_root))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MediaSettings:
        """Same as `backend.settings.media_from_env(env)`."""
        from backend.settings import media_from_env
        return media_from_env(env)


@dataclass(frozen=True)
class _Target:
    key: str  # cache key; then either `url` (first URL to GET) or `disk_path` (read in place)
    label: str  # for messages and logs: redacted
    url: HttpURL | None = None
    disk_path: Path | None = None
    basename: str = "media"


def _check_rel(rel: str, raw: str) -> str:
    """The `d` path of a local-files URL, without the leading '/' (as LS strips it); 400 unless a plain relative path."""
    rel = rel.lstrip("/")
    parts = rel.split("/")
    folded = unicodedata.normalize("NFKC", rel)
    if (not rel or any(p in ("", ".", "..") for p in parts) or ".." in folded.split("/")
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel) or "\\" in rel):
        raise bad_url(raw, "must name a file below the local-files root: no '..', '.', '//', backslash or control "
                           "character in d=")
    return rel


def _is_missing_upload(resp: requests.Response) -> bool:
    """LS 1.23.2 answers 500 "'NoneType' object has no attribute 'has_permission'" for a /data/upload/ file it lacks."""
    if resp.status_code != 500 or "/data/upload/" not in resp.url:
        return False
    return b"has_permission" in resp.raw.read(4096, decode_content=True)


class MediaResolver:
    """Resolve LS media URLs to local files. Thread-safe; one instance per process is intended."""

    def __init__(self, settings: MediaSettings, token_provider: TokenProvider | None = None):
        self.settings = settings
        self.tokens = token_provider or TokenProvider(settings.ls_url, settings.api_key, timeout_s=settings.timeout_s)
        self.cache = MediaCache(settings.cache_dir, settings.max_cache_bytes, wait_s=settings.total_timeout_s + 5)
        self._ls = parse_http(settings.ls_url) if settings.ls_url else None
        self._local = threading.local()

    # ---- public --------------------------------------------------------------------------------------------------
    def fetch(self, url: str, *, task_id: int | None) -> Path:
        """Return a local path with the media at `url` (cached; it stays until evicted, see `pinned`)."""
        path, pin = self._acquire(url, task_id, CacheGroup())
        if pin is not None:
            self.cache.release(pin)
        return path

    def fetch_many(self, urls: Sequence[str], *, task_id: int | None, workers: int = 4) -> list[Path]:
        """Fetch `urls` with `workers` threads; paths in input order, all pinned until this returns. On a failure the
        not-started fetches are cancelled, running ones finish, and the error of the first failed URL is raised.
        Their bytes together must fit in the cache (else 413 naming MEDIA_CACHE_MAX_MB)."""
        group = CacheGroup()
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="media") as pool:
            futures = [pool.submit(self._acquire, u, task_id, group) for u in urls]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                for f in futures:
                    f.cancel()
        pins = [f.result()[1] for f in futures if not f.cancelled() and f.exception() is None and f.result()[1]]
        try:
            if failed is not None:
                raise failed.exception()
            return [f.result()[0] for f in futures]
        finally:
            for pin in pins:
                self.cache.release(pin)

    def pinned(self, paths: Sequence[Path]) -> contextlib.AbstractContextManager[None]:
        """Context manager keeping cached `paths` from eviction inside the block (for reads after `fetch`)."""
        return self.cache.pinned(paths)

    # ---- resolution ----------------------------------------------------------------------------------------------
    def _acquire(self, url: str, task_id: int | None, group: CacheGroup) -> tuple[Path, str | None]:
        """Return (path, pinned cache entry name, or None for files read in place); release the name when done."""
        target = self._resolve(url, task_id)
        if target.disk_path is not None:
            return target.disk_path, None
        name = entry_name(target.key, target.basename)
        fill = lambda dest, slot: self._download(target, dest, slot)  # noqa: E731
        return self.cache.acquire(name, fill, label=target.label, group=group), name

    def _resolve(self, url: str, task_id: int | None) -> _Target:
        raw = check_chars(url.strip() if isinstance(url, str) else url)
        m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", raw)
        scheme = m.group(1).lower() if m else ""
        if scheme in CLOUD_SCHEMES:
            if task_id is None or isinstance(task_id, bool) or not isinstance(task_id, int):
                raise bad_url(raw, "is a cloud URI, which can only be presigned with a task id")
            fileuri = base64.urlsafe_b64encode(raw.encode()).decode()
            presign = join_relative(self._ls_base(raw), f"/tasks/{task_id}/presign/")
            presign = presign.with_query(urlencode({"fileuri": fileuri}))
            return _Target(key="cloud:" + raw, label=redact(raw), url=presign,
                           basename=PurePosixPath(raw.split("?", 1)[0]).name)
        if scheme in ("http", "https"):
            checked = parse_http(raw)
            kind = self._ls_kind(checked)
            if kind is None and self._ls is not None and checked.origin == self._ls.origin:
                raise bad_url(raw, "points at Label Studio outside its media paths (/data/upload/, "
                                   "/data/local-files/, /storage-data/, presign)", status=403)
            if kind is None:
                self._check_host(checked)
                return _Target(key=cache_key(checked), label=str(checked), url=checked,
                               basename=PurePosixPath(checked.path).name)
            return self._ls_target(checked, kind, raw)
        if scheme or raw.startswith("//"):
            raise bad_url(raw, "is not supported; use http(s), an LS path such as /data/upload/..., or s3://, gs://, "
                               "azure-blob://")
        rel = raw.lstrip("/")
        if rel.startswith("upload/"):
            rel = "data/" + rel
        checked = join_relative(self._ls or _NO_LS, rel)  # checked even when only read from disk
        kind = self._ls_kind(checked, self._ls or _NO_LS)
        if kind is None:
            raise bad_url(raw, "is not a Label Studio media path; expected /data/upload/..., /data/local-files/?d=... "
                               "or a full http(s) URL")
        if self._ls is None and not (kind == "local" and self.settings.local_files_root is not None):
            self._ls_base(raw)  # raises: LABEL_STUDIO_URL is needed
        return self._ls_target(checked, kind, raw)

    def _ls_target(self, checked: HttpURL, kind: str, raw: str) -> _Target:
        """Canonical LS request + key: uploads without query, local files by `d` only, others as checked."""
        if kind == "upload":
            checked = checked.with_query("")
        elif kind == "local":
            rel = _check_rel((parse_qs(checked.query, keep_blank_values=True).get("d") or [""])[-1], raw)
            if self.settings.local_files_root is not None:
                return _Target(key="local:" + rel, label=redact(raw), disk_path=self._local_file(rel))
            checked = checked.with_query("d=" + quote(rel, safe="/"))
            return _Target(key=checked.url, label=str(checked), url=checked, basename=PurePosixPath(rel).name)
        elif kind == "storage":
            fp = (parse_qs(checked.query).get("filepath") or [checked.path])[-1]
            return _Target(key=checked.url, label=str(checked), url=checked, basename=PurePosixPath(fp).name)
        return _Target(key=checked.url, label=str(checked), url=checked, basename=PurePosixPath(checked.path).name)

    def _ls_kind(self, url: HttpURL, ls: HttpURL | None = None) -> str | None:
        """Which LS media path `url` is ("upload", "local", "storage", "presign"), None if not on the LS origin or
        not a media path. `url` is checked, so its path has no dot segments or encoded slashes."""
        ls = ls or self._ls
        if ls is None or url.origin != ls.origin:
            return None
        prefix = ls.path.rstrip("/")
        if prefix and not url.path.startswith(prefix + "/"):
            return None
        rest = url.path[len(prefix):]
        return next((kind for kind, rx in _LS_MEDIA if rx.fullmatch(rest)), None)

    def _ls_base(self, raw: str) -> HttpURL:
        if self._ls is None:
            raise bad_url(raw, "points into Label Studio but LABEL_STUDIO_URL is not set (set it to the Label Studio "
                               "address)")
        return self._ls

    def _local_file(self, rel: str) -> Path:
        """The file `rel` (from `_check_rel`) under `local_files_root`, refusing symlinks that lead outside it."""
        root = self.settings.local_files_root.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise MediaError(f"Local-files path {rel!r} leads outside LOCAL_FILES_DOCUMENT_ROOT (through a symlink); "
                             "move the file inside the root.", status=403)
        if not path.is_file():
            raise MediaError(f"Local-files path {rel!r} does not exist under LOCAL_FILES_DOCUMENT_ROOT; check that the "
                             "backend mounts the same root as Label Studio.", status=404)
        if path.stat().st_size > self.settings.max_file_bytes:
            raise self._too_big(rel)
        return path

    def _check_host(self, url: HttpURL) -> None:
        host = url.host
        for entry in self.settings.allowed_hosts:
            if entry in ("*", host, f"{host}:{url.port}") or (entry.startswith("*.") and host.endswith(entry[1:])):
                return
        raise MediaError(f"Media host {host!r} is not allowed; add it to ALLOWED_MEDIA_HOSTS (comma-separated, "
                         "'*.domain' for subdomains) if the backend may download from it.", status=403)

    def _too_big(self, what: str) -> MediaError:
        return MediaError(f"Media file {what!r} is larger than the {self.settings.max_file_bytes / _MB:g} MB per-file "
                          "limit; raise MEDIA_MAX_FILE_MB or use a smaller file.", status=413)

    # ---- download ------------------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = download.new_session()
        return self._local.session

    def _get(self, url: HttpURL, deadline: download.Deadline) -> tuple[requests.Response, bool]:
        """GET with manual redirects: every hop checked like a task URL, allowlist per hop, LS auth only while the
        chain stays on the LS origin and only for LS media paths, one retry on 401. Returns (response, is LS)."""
        retried = False
        on_ls = True  # the chain has not left the LS origin
        for _ in range(_MAX_REDIRECTS + 1):
            is_ls = on_ls and self._ls_kind(url) is not None
            on_ls = is_ls
            if not is_ls:
                self._check_host(url)
            headers = self.tokens.headers() if is_ls else {}
            try:
                resp = download.get(self._session(), url, headers, read_timeout_s=self.settings.timeout_s,
                                    deadline=deadline)
            except requests.RequestException as exc:
                raise self._broke(exc, deadline, f"Label Studio ({url.netloc})" if is_ls else url.netloc) from None
            if resp.status_code == 401 and headers and not retried and self.tokens.refreshable:
                resp.close()
                self.tokens.invalidate(headers)
                retried = True
                continue
            if not resp.is_redirect:
                return resp, is_ls
            location = resp.headers.get("Location", "")
            resp.close()
            try:
                url = parse_http(urljoin(url.url, check_chars(location)))
            except MediaError as exc:
                raise MediaError(f"{'Label Studio' if is_ls else url.host} redirected the media download to a URL "
                                 f"that is refused ({exc}).", status=403) from None
        raise MediaError(f"Media URL redirected more than {_MAX_REDIRECTS} times; check the storage setup.", status=502)

    def _broke(self, exc: Exception, deadline: download.Deadline, where: str) -> MediaError:
        if deadline.expired:
            return MediaError(f"The media download from {where} took longer than MEDIA_TOTAL_TIMEOUT_S "
                              f"({self.settings.total_timeout_s:g} s); retry, raise the setting or check the host.",
                              status=504)
        if isinstance(exc, (requests.Timeout)):
            return MediaError(f"The media download from {where} stalled for more than MEDIA_TIMEOUT_S "
                              f"({self.settings.timeout_s:g} s) ({type(exc).__name__}); retry or check the host.",
                              status=504)
        return MediaError(f"Could not download media from {where} ({type(exc).__name__}); check that this host "
                          "(LABEL_STUDIO_URL for LS files) is reachable.", status=502)

    def _download(self, target: _Target, path: Path, slot: Fill) -> None:
        """Stream `target.url` into `path` through a temp file in the cache dir, reserving cache bytes as it grows,
        within MEDIA_TOTAL_TIMEOUT_S; no partial file is left on failure."""
        with download.Deadline(self.settings.total_timeout_s) as deadline:
            resp, is_ls = self._get(target.url, deadline)
            with resp:
                where = "Label Studio" if is_ls else target.url.host
                if resp.status_code in (404, 410) or _is_missing_upload(resp):
                    raise MediaError(f"{where} says the media file is not there (HTTP {resp.status_code}); check the "
                                     "task data URL.", status=404)
                if resp.status_code in (401, 403):
                    raise MediaError(f"{where} refused the media download (HTTP {resp.status_code}); check "
                                     "LABEL_STUDIO_API_KEY and the storage permissions.", status=502)
                if not resp.ok:
                    raise MediaError(f"{where} failed the media download with HTTP {resp.status_code}.", status=502)
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > self.settings.max_file_bytes:
                    raise self._too_big(target.label)
                if length.isdigit():
                    slot.reserve(int(length))
                def chunks():
                    for chunk in resp.iter_content(_CHUNK):
                        if deadline.expired:
                            break
                        yield chunk
                    if deadline.expired:  # a socket shut down by the deadline can look like a clean end of body
                        raise requests.Timeout("total deadline passed")

                try:
                    written = write_atomic(path, chunks(), self.settings.max_file_bytes,
                                           lambda: self._too_big(target.label), reserve=slot.reserve)
                except requests.RequestException as exc:
                    raise self._broke(exc, deadline, where) from None
        logger.info("downloaded %s (%d bytes) into the media cache", target.label, written)
