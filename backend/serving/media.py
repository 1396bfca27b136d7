"""Fetch a task's media (video file or frame images) to a local file, with host allowlist, size limit and an LRU cache.

URL forms (LS 1.23.2 sends task data unresolved):
- `/data/upload/<pid>/<file>` (also `upload/...`, `data/...`): GET `{LABEL_STUDIO_URL}/data/upload/...` with LS auth.
  (`/storage-data/uploaded/?filepath=` is not tried: it answers 400 on LS's default local storage.)
- `/data/local-files/?d=<path>`: read from disk under `local_files_root` when set (the `..` component is rejected with
  400, a symlink leading outside the root with 403), else GET from LS with LS auth.
- `s3://`, `gs://`, `azure-blob://`: GET `{LS}/tasks/<task_id>/presign/?fileuri=<base64url(uri)>` with LS auth. LS
  either proxies the bytes (200) or answers 303 to a presigned cloud URL.
- `http(s)://host/...`: allowed only for the LS host and `allowed_hosts`; LS auth is sent to the LS host only.

Redirects are followed by hand (at most 5): each target must again be the LS host or in `allowed_hosts`, so a
presigned redirect to `bucket.s3.amazonaws.com` needs ALLOWED_MEDIA_HOSTS to list it (e.g. `*.amazonaws.com`). The LS
Authorization header goes only to the LS origin (same host and port), never to a redirect target elsewhere.

Cache (backend/serving/mediacache.py): key = normalized URL (lower-case scheme/host; default port, fragment and user:password
dropped; relative LS paths joined to LABEL_STUDIO_URL; cloud URIs as written, not the expiring presigned URL). LRU by
last use under `max_cache_bytes`; files pinned by a running `fetch`/`fetch_many` or a `pinned()` block are not evicted.
"""
from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import requests

from backend.serving.errors import MediaError
from backend.serving.mediacache import MediaCache, entry_name, write_atomic
from backend.serving.tokens import TokenProvider

logger = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
_LS_MEDIA_PREFIXES = ("/data/", "/storage-data/", "/tasks/", "/projects/")  # relative paths we send LS auth to
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 5
_CHUNK = _MB = 1 << 20


@dataclass(frozen=True)
class MediaSettings:
    """Media download settings. Sizes are bytes, `timeout_s` is seconds per connect and per read (not per file).

    `allowed_hosts` entries: `host`, `host:port`, `*.domain` (any subdomain) or `*` (any host); the LS host is always
    allowed and needs no entry.
    """

    ls_url: str | None
    api_key: str | None
    cache_dir: Path
    max_cache_bytes: int = 2048 * _MB
    max_file_bytes: int = 1024 * _MB
    allowed_hosts: tuple[str, ...] = ()
    local_files_root: Path | None = None
    timeout_s: float = 30.0

    def __post_init__(self):
        if self.max_cache_bytes <= 0 or self.max_file_bytes <= 0 or self.timeout_s <= 0:
            raise ValueError("MediaSettings sizes and timeout must be positive; check MEDIA_CACHE_MAX_MB, "
                             "MEDIA_MAX_FILE_MB and MEDIA_TIMEOUT_S.")
        object.__setattr__(self, "ls_url", self.ls_url.rstrip("/") if self.ls_url else None)
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "allowed_hosts", tuple(h.strip().lower() for h in self.allowed_hosts if h.strip()))
        if self.local_files_root is not None:
            object.__setattr__(self, "local_files_root", Path(self.local_files_root))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MediaSettings:
        """Read LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, MEDIA_CACHE_DIR, MEDIA_CACHE_MAX_MB, MEDIA_MAX_FILE_MB,
        ALLOWED_MEDIA_HOSTS (comma or space separated), LOCAL_FILES_DOCUMENT_ROOT and MEDIA_TIMEOUT_S."""
        return cls(
            ls_url=env.get("LABEL_STUDIO_URL") or None,
            api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            cache_dir=Path(env.get("MEDIA_CACHE_DIR") or Path(tempfile.gettempdir()) / "sam2-ls-media"),
            max_cache_bytes=int(float(env.get("MEDIA_CACHE_MAX_MB", 2048)) * _MB),
            max_file_bytes=int(float(env.get("MEDIA_MAX_FILE_MB", 1024)) * _MB),
            allowed_hosts=tuple(re.split(r"[,\s]+", env.get("ALLOWED_MEDIA_HOSTS", "").strip())),
            local_files_root=env.get("LOCAL_FILES_DOCUMENT_ROOT") or None,
            timeout_s=float(env.get("MEDIA_TIMEOUT_S", 30)),
        )


@dataclass(frozen=True)
class _Target:
    key: str  # cache key (normalized URL); then either `url` (first URL to GET) or `disk_path` (read in place)
    url: str | None = None
    disk_path: Path | None = None


def _origin(url: str) -> tuple[str, int | None]:
    """(lower-case host, port with the scheme default filled in) of an absolute http(s) URL."""
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError as exc:
        raise MediaError(f"Media URL {url!r} has an invalid port; fix the URL in the task data.", status=400) from exc
    return (parts.hostname or "").lower(), port


def _normalize(url: str) -> str:
    """Cache key of an absolute http(s) URL: lower-case scheme/host, no default port, credentials or fragment."""
    parts = urlsplit(url)
    host, port = _origin(url)
    netloc = host if port == _DEFAULT_PORTS[parts.scheme] else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def _local_rel(raw: str) -> str:
    """The `d` path of `/data/local-files/?d=<path>` (last value, leading '/' stripped as LS does); 400 on '..'."""
    rel = (parse_qs(urlsplit(raw).query, keep_blank_values=True).get("d") or [""])[-1].lstrip("/")
    if not rel or ".." in PurePosixPath(rel).parts:
        raise MediaError(f"Local-files URL {raw!r} must name a file below the root, without '..'.", status=400)
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
        self.cache = MediaCache(settings.cache_dir, settings.max_cache_bytes)
        self._ls_origin = _origin(settings.ls_url) if settings.ls_url else None
        self._local = threading.local()

    def fetch(self, url: str, *, task_id: int | None) -> Path:
        """Return a local path with the media at `url` (cached; it stays until evicted, see `pinned`)."""
        path, pin = self._acquire(url, task_id)
        if pin is not None:
            self.cache.release(pin)
        return path

    def fetch_many(self, urls: Sequence[str], *, task_id: int | None, workers: int = 4) -> list[Path]:
        """Fetch `urls` with `workers` threads; paths in input order, all pinned until this returns. On a failure the
        not-started fetches are cancelled, running ones finish, and the error of the first failed URL is raised."""
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="media") as pool:
            futures = [pool.submit(self._acquire, u, task_id) for u in urls]
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

    def _acquire(self, url: str, task_id: int | None) -> tuple[Path, str | None]:
        """Return (path, pinned cache entry name, or None for files read in place); release the name when done."""
        target = self._resolve(url, task_id)
        if target.disk_path is not None:
            return target.disk_path, None
        parts = urlsplit(target.key)  # file name from ?d= / ?filepath= (LS file URLs) or else the path, for its suffix
        query = parse_qs(parts.query)
        name = entry_name(target.key, PurePosixPath((query.get("d") or query.get("filepath") or [parts.path])[-1]).name)
        fill = lambda dest: self._download(target.url, dest, target.key)  # noqa: E731
        return self.cache.acquire(name, fill, label=target.key), name

    def _resolve(self, url: str, task_id: int | None) -> _Target:
        raw = (url or "").strip()
        scheme = urlsplit(raw).scheme.lower()
        if scheme in CLOUD_SCHEMES:
            if task_id is None:
                raise MediaError(f"Cloud URI {raw!r} can only be presigned with a task id; pass task_id.", status=400)
            fileuri = base64.urlsafe_b64encode(raw.encode()).decode()
            presign = f"{self._ls_base(raw)}/tasks/{int(task_id)}/presign/?{urlencode({'fileuri': fileuri})}"
            return _Target(key=raw, url=presign)
        if scheme in ("http", "https"):
            if not urlsplit(raw).hostname:
                raise MediaError(f"Media URL {raw!r} has no host; fix the URL in the task data.", status=400)
            return _Target(key=_normalize(raw), url=raw)
        if scheme or raw.startswith("//") or not raw:
            raise MediaError(f"Media URL {raw!r} is not supported; use http(s), an LS path such as /data/upload/..., "
                             "or s3://, gs://, azure-blob://.", status=400)
        path = "/" + raw.lstrip("/")
        if path.startswith("/upload/"):
            path = "/data" + path
        if not path.startswith(_LS_MEDIA_PREFIXES):
            raise MediaError(f"Relative media URL {raw!r} is not a Label Studio media path; expected /data/upload/..., "
                             "/data/local-files/?d=... or a full http(s) URL.", status=400)
        if path.startswith("/data/local-files"):
            rel = _local_rel(raw)  # refuses traversal even when the file would be fetched from LS
            if self.settings.local_files_root is not None:
                return _Target(key="local:" + rel, disk_path=self._local_file(rel))  # read in place, no LS needed
        full = self._ls_base(raw) + path
        return _Target(key=_normalize(full), url=full)

    def _ls_base(self, raw: str) -> str:
        if not self.settings.ls_url:
            raise MediaError(f"Media URL {raw!r} points into Label Studio but LABEL_STUDIO_URL is not set; set it to "
                             "the Label Studio address.", status=400)
        return self.settings.ls_url

    def _local_file(self, rel: str) -> Path:
        """The file `rel` (from `_local_rel`) under `local_files_root`, refusing symlinks that lead outside it."""
        root = self.settings.local_files_root.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise MediaError(f"Local-files path {rel!r} leads outside LOCAL_FILES_DOCUMENT_ROOT (through a symlink); "
                             "move the file inside the root.", status=403)
        if not path.is_file():
            raise MediaError(f"Local-files path {rel!r} does not exist under LOCAL_FILES_DOCUMENT_ROOT {root}; check "
                             "that the backend mounts the same root as Label Studio.", status=404)
        if path.stat().st_size > self.settings.max_file_bytes:
            raise self._too_big(rel)
        return path

    def _is_ls(self, url: str) -> bool:
        return self._ls_origin is not None and _origin(url) == self._ls_origin

    def _check_host(self, url: str) -> None:
        if self._is_ls(url):
            return
        host, port = _origin(url)
        for entry in self.settings.allowed_hosts:
            if entry in ("*", host, f"{host}:{port}") or (entry.startswith("*.") and host.endswith(entry[1:])):
                return
        raise MediaError(f"Media host {host!r} is not allowed; add it to ALLOWED_MEDIA_HOSTS (comma-separated, "
                         "'*.domain' for subdomains) if the backend may download from it.", status=403)

    def _too_big(self, what: str) -> MediaError:
        return MediaError(f"Media file {what!r} is larger than the {self.settings.max_file_bytes / _MB:g} MB per-file "
                          "limit; raise MEDIA_MAX_FILE_MB or use a smaller file.", status=413)

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _get(self, url: str) -> requests.Response:
        """GET with manual redirects (allowlist checked per hop, LS auth only to the LS origin, one retry on 401)."""
        retried = False
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_host(url)
            headers = self.tokens.headers() if self._is_ls(url) else {}
            try:
                resp = self._session().get(url, headers=headers, stream=True, allow_redirects=False,
                                           timeout=self.settings.timeout_s)
            except requests.RequestException as exc:
                raise MediaError(f"Could not download media from {_origin(url)[0]} ({type(exc).__name__}); check that "
                                 "this host (LABEL_STUDIO_URL for LS files) is reachable.", status=502) from exc
            if resp.status_code == 401 and headers and not retried and self.tokens.refreshable:
                resp.close()
                self.tokens.invalidate(headers)
                retried = True
                continue
            if not resp.is_redirect:
                return resp
            resp.close()
            url = urljoin(url, resp.headers["Location"])
        raise MediaError(f"Media URL redirected more than {_MAX_REDIRECTS} times; check the storage setup.", status=502)

    def _download(self, url: str, path: Path, label: str) -> None:
        """Stream `url` into `path` through a temp file in the cache dir; no partial file is left on failure."""
        with self._get(url) as resp:
            where = "Label Studio" if self._is_ls(resp.url) else _origin(resp.url)[0]
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
                raise self._too_big(label)
            try:
                written = write_atomic(path, resp.iter_content(_CHUNK), self.settings.max_file_bytes,
                                       lambda: self._too_big(label))
            except requests.RequestException as exc:
                raise MediaError(f"The media download from {where} broke off ({type(exc).__name__}); retry or check "
                                 "the host.", status=502) from exc
        logger.info("downloaded %s (%d bytes) into the media cache", label, written)
