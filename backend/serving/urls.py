"""One URL parser for checking and for sending: a media URL is parsed once into `HttpURL`, checked, and the request
is sent from exactly that object (`HttpURL.url`), so the host that was checked is the host that is contacted.

Why a module of its own: `urllib.parse.urlsplit`, urllib3's `parse_url` (which builds the request line) and requests'
connection-pool lookup (`urlparse`) disagree on hostile strings (`http://a:1\\@b:2/`: urlsplit says host `b`, urllib3
connects to `a:1`). So `parse_http` refuses everything on which they could disagree (backslashes, userinfo, control
characters, non-canonical hosts and paths) and then asserts that all three parsers see the same scheme, host and port,
and that requests' preparation leaves the canonical string unchanged.

Canonical form: lower-case scheme and host, explicit port kept only when not the scheme default, path segments
percent-decoded once, checked (no `.`/`..`, no empty segment but a trailing one, no encoded `/` or `\\`, no double
encoding `%25XX`, nothing that NFKC-normalises to `.`, `..` or a slash) and re-encoded the way urllib3 encodes, query with its
escapes in urllib3's form, fragment dropped. Every error is a `MediaError` with status 400 whose message quotes the
URL with any query redacted (`redact`), so presigned signatures never reach a log or a client.
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote_to_bytes, urlsplit

from requests.models import PreparedRequest
from urllib3.util import parse_url

from backend.serving.errors import MediaError

MAX_URL_CHARS = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}
_PCHAR_SAFE = "!$&'()*+,;=:@"  # RFC 3986 pchar minus unreserved (quote keeps those) and '%'
_QUERY_SAFE = _PCHAR_SAFE + "/?%"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
# query parameters that may carry secrets: redacted from messages and logs
_SECRET_KEYS = re.compile(r"(^|[&?])(x-amz-[^=&]*|x-goog-[^=&]*|signature|sig|googleaccessid|awsaccesskeyid|expires|"
                          r"se|sp|sv|sr|st|spr|srt|ss|skoid|sktid|skt|ske|sks|skv|token|access_token|api_key|key|"
                          r"password|secret)=", re.I)
# a presigned URL (S3, GCS, Azure SAS) carries one of these; then its signing parameters are not part of the object
_SIGNATURE = re.compile(r"(^|[&?])(x-amz-signature|x-goog-signature|signature|sig)=", re.I)
_SIGNING = re.compile(r"(x-amz-[^=&]*|x-goog-[^=&]*|signature|sig|googleaccessid|awsaccesskeyid|expires|se|sp|sv|sr|"
                      r"st|spr|srt|ss|skoid|sktid|skt|ske|sks|skv)", re.I)


def bad_url(raw: object, why: str, status: int = 400) -> MediaError:
    """The one error shape of this module: '<redacted url> <why>; fix the URL in the task data.'"""
    return MediaError(f"Media URL {redact(raw)!r} {why}; fix the URL in the task data.", status=status)


def redact(raw: object, limit: int = 200) -> str:
    """`raw` safe to log or show: a query holding signing/credential parameters becomes `?<redacted>`, control
    characters are escaped and the result is cut to `limit` chars."""
    text = raw if isinstance(raw, str) else repr(raw)
    base, sep, query = text.partition("?")
    if sep and _SECRET_KEYS.search("?" + query):
        text = base + "?<redacted>"
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def check_chars(raw: object, what: str = "Media URL") -> str:
    """`raw` if it is a string without control characters (tab, CR, LF, NUL, DEL...) or backslashes, else 400.

    urlsplit silently deletes tab/CR/LF and browsers read `\\` as `/`, so such strings mean different URLs to
    different parsers; no real media URL needs them.
    """
    if not isinstance(raw, str) or not raw:
        raise bad_url(raw, "is empty or not a string")
    if len(raw) > MAX_URL_CHARS:
        raise bad_url(raw, f"is longer than {MAX_URL_CHARS} characters")
    for ch in raw:
        if ch == "\\":
            raise bad_url(raw, "contains a backslash")
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise bad_url(raw, "contains a control or invisible character")
    return raw


def _decode_unreserved(text: str) -> str:
    """Unescape `%XX` of unreserved characters and upper-case the other escapes (what requests + urllib3 do)."""
    def sub(m: re.Match) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()
    return _ESCAPE.sub(sub, text)


def canonical_segment(seg: str, raw: str) -> str:
    """One path segment decoded once, checked, and re-encoded as urllib3 would send it."""
    if _BAD_ESCAPE.search(seg):
        raise bad_url(raw, "has a '%' that is not a %XX escape")
    try:
        decoded = unquote_to_bytes(seg).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_url(raw, "has a path that is not UTF-8 after percent-decoding") from None
    folded = unicodedata.normalize("NFKC", decoded)
    if decoded in (".", "..") or folded in (".", ".."):
        raise bad_url(raw, "has a '.' or '..' path segment (also percent-encoded or as look-alike characters)")
    if any(c in s for s in (decoded, folded) for c in "/\\") or _ESCAPE.search(decoded):
        raise bad_url(raw, "has an encoded '/', '\\' or '%' in its path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise bad_url(raw, "has an encoded control character in its path")
    return quote(decoded, safe=_PCHAR_SAFE)


def canonical_path(path: str, raw: str) -> str:
    """`path` (starting with '/') in canonical form; 400 on `//`, dot segments and encoded separators."""
    if not path:
        return "/"
    if not path.startswith("/"):
        raise bad_url(raw, "has a path that does not start with '/'")
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        if seg == "" and i != len(segments) - 1:
            raise bad_url(raw, "has an empty path segment ('//')")
    return "/" + "/".join(canonical_segment(s, raw) if s else "" for s in segments)


def canonical_query(query: str, raw: str) -> str:
    if _BAD_ESCAPE.search(query):
        raise bad_url(raw, "has a '%' that is not a %XX escape")
    return _decode_unreserved(quote(query, safe=_QUERY_SAFE))


def _host(authority: str, raw: str) -> tuple[str, int | None]:
    """(canonical host as it goes in a URL, explicit port or None) of an authority without userinfo."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise bad_url(raw, "has an unterminated IPv6 literal")
        try:
            addr = ipaddress.IPv6Address(authority[1:end])
        except ValueError:
            raise bad_url(raw, "has an invalid IPv6 literal") from None
        host, rest = f"[{addr.compressed}]", authority[end + 1:]
    else:
        host, sep, port = authority.partition(":")
        rest = sep + port
        host = host.lower()
        if not _HOSTNAME.fullmatch(host) or len(host) > 253:
            raise bad_url(raw, "has an invalid host name (only letters, digits, '-', '_' and single dots)")
        if all(_NUMERIC_LABEL.fullmatch(label) for label in host.split(".")):
            try:
                canonical = str(ipaddress.IPv4Address(host))
            except ValueError:
                canonical = None
            if canonical != host:
                raise bad_url(raw, "has a numeric host that is not a plain dotted IPv4 address")
    if not rest:
        return host, None
    if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii() or not 0 < int(rest[1:]) < 65536:
        raise bad_url(raw, "has an invalid port")
    return host, int(rest[1:])


@dataclass(frozen=True)
class HttpURL:
    """A checked absolute http(s) URL in canonical form; `url` is exactly what is sent.

    `host` is lower-case (IPv6 in brackets), `port` always filled (scheme default when absent), `path` and `query`
    percent-encoded (query without '?', '' when none).
    """

    scheme: str
    host: str
    port: int
    path: str
    query: str = ""

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def netloc(self) -> str:
        return self.host if self.port == DEFAULT_PORTS[self.scheme] else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}" + (f"?{self.query}" if self.query else "")

    def with_query(self, query: str) -> HttpURL:
        return replace(self, query=query)

    def __str__(self) -> str:
        return redact(self.url)


def parse_http(raw: str) -> HttpURL:
    """Parse and check an absolute http(s) URL; MediaError 400 for anything not canonical or ambiguous (see module)."""
    check_chars(raw)
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", raw)
    scheme = m.group(1).lower() if m else ""
    if scheme not in DEFAULT_PORTS:
        raise bad_url(raw, "is not an http(s) URL")
    rest = raw[m.end():]
    if not rest.startswith("//"):
        raise bad_url(raw, "has no '//host' part")
    rest = rest[2:].split("#", 1)[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:end], rest[end:]
    if "@" in authority:
        raise bad_url(raw, "has a user name or password ('@' before the host); put credentials in settings instead")
    if not authority or "%" in authority or not authority.isascii():
        raise bad_url(raw, "has no host or a percent-encoded or non-ASCII host")
    host, port = _host(authority, raw)
    path, _, query = rest.partition("?")
    url = HttpURL(scheme, host, port or DEFAULT_PORTS[scheme], canonical_path(path, raw), canonical_query(query, raw))
    _same_for_every_parser(url, raw)
    return url


def join_relative(base: HttpURL, relative: str) -> HttpURL:
    """`base` (an origin plus optional path prefix) joined with a relative LS path such as `/data/upload/1/a.jpg` or
    `upload/1/a.jpg`, parsed and checked like any absolute URL (so `..` is refused, not resolved)."""
    check_chars(relative)
    if relative.startswith("//"):
        raise bad_url(relative, "is protocol-relative ('//host'); give an http(s) URL or a Label Studio path")
    prefix = base.path.rstrip("/")
    return parse_http(f"{base.scheme}://{base.netloc}{prefix}/{relative.lstrip('/')}")


def _same_for_every_parser(url: HttpURL, raw: str) -> None:
    """The canonical string must survive requests' preparation unchanged and mean the same origin to urllib3 (request
    line, Host header) and urllib.parse (requests' connection-pool key); else refuse it."""
    text = url.url
    prepared = PreparedRequest()
    prepared.prepare_url(text, None)
    u3 = parse_url(text)
    std = urlsplit(text)
    bare = url.host.strip("[]")
    if (prepared.url != text or u3.scheme != url.scheme or (u3.host or "").strip("[]") != bare
            or (u3.port or DEFAULT_PORTS[url.scheme]) != url.port or std.hostname != bare
            or (std.port or DEFAULT_PORTS[url.scheme]) != url.port or u3.auth or std.username is not None):
        raise bad_url(raw, "is read differently by the HTTP libraries; write it in plain canonical form")


def cache_key(url: HttpURL) -> str:
    """Cache key of a non-LS URL: for a presigned URL (it has a signature parameter) the canonical URL without the
    signing parameters (signature, expiry, credential, SAS fields), so a re-signed URL of the same object is one
    entry; any other URL as it is (`?key=a` and `?key=b` may be different objects)."""
    if not url.query or not _SIGNATURE.search("?" + url.query):
        return url.url
    kept = [p for p in url.query.split("&") if p and not _SIGNING.fullmatch(p.split("=", 1)[0])]
    return url.with_query("&".join(sorted(kept))).url
