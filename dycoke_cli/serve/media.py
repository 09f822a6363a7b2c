"""A request's `video_url` -> a local file the decoder may read, under the server's rules.

  file:///PATH    only inside an --allowed-media-dir, checked on the resolved path (every `..` and
                  symlink followed first, so neither can leave the folder); a path outside is refused
                  with the same message whether or not it exists. Off without --allowed-media-dir.
  data:video/...;base64,...  (or data:image/...: a client that only sends images, holding a video)
                  decoded into a private temporary folder (mode 0700), named by the content's
                  SHA-256 so a video sent again is the same file (and the same encoding); its size is
                  checked from the encoded length before anything is decoded.
  http(s)://...   off unless --allow-url-fetch; then fetched with a time limit and the same size cap,
                  redirects only to http(s).

A temporary file is held by every request that uses it and removed when the last one lets go.
Blocking (file system, base64, network): call from a worker thread, not the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dycoke_cli.serve.api_errors import ApiError

CHUNK = 1 << 20


@dataclass(frozen=True)
class MediaRules:
    allowed_dirs: tuple[Path, ...]  # resolved
    allow_urls: bool
    max_bytes: int  # a data: or fetched video
    fetch_timeout_s: float
    temp_dir: Path  # private (0700), the server's own


@dataclass
class Video:
    """A local video for one request. identity: what its content is known by (the resolved path and its
    stat for a file, the digest for sent bytes), part of the session key so a changed file is encoded
    again; label: how messages name it (a file by its resolved path, as the CLI does; sent bytes never
    by their temporary path)."""

    path: Path
    identity: tuple
    label: str
    _release: Callable[[], None] = field(default=lambda: None, repr=False)

    def release(self) -> None:
        """Let go of the file (a temporary one is removed when no request holds it); idempotent."""
        release, self._release = self._release, lambda: None
        release()


class Media:
    """Opens video URLs under `rules`; keeps the count of requests holding each temporary file."""

    def __init__(self, rules: MediaRules):
        self.rules = rules
        self._held: dict[Path, int] = {}
        self._lock = threading.Lock()

    def open(self, url: str) -> Video:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "file":
            return self._local(url)
        if scheme == "data":
            return self._held_bytes(_data_bytes(url, self.rules.max_bytes), "the data: URL video")
        if scheme in ("http", "https"):
            if not self.rules.allow_urls:
                raise ApiError(403, "fetching video URLs is off on this server (start it with --allow-url-fetch)",
                               "url_fetch_disabled")
            return self._held_bytes(_fetch(url, self.rules.max_bytes, self.rules.fetch_timeout_s), _clip(url))
        raise ApiError(400, "a video_url must be file://, data:video/...;base64,... or http(s)://",
                       "unsupported_url")

    def _local(self, url: str) -> Video:
        if not self.rules.allowed_dirs:
            raise ApiError(403, "local files are off on this server (start it with --allowed-media-dir DIR)",
                           "local_files_disabled")
        parts = urllib.parse.urlsplit(url)
        raw = urllib.parse.unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not raw.startswith("/") or "\0" in raw:
            raise ApiError(400, f"{_clip(url)}: a file URL needs an absolute path, file:///path/to/video",
                           "invalid_url")
        real = Path(os.path.realpath(raw))  # every symlink and `..` resolved
        if not any(real == d or d in real.parents for d in self.rules.allowed_dirs):
            # The same words whether the path exists or not: nothing outside is confirmed or denied.
            raise ApiError(403, f"{_clip(url)} is outside the folders this server may read (--allowed-media-dir)",
                           "path_not_allowed")
        try:
            st = real.stat()
        except FileNotFoundError:
            raise ApiError(404, f"video not found: {_clip(url)}", "video_not_found") from None
        except OSError as exc:
            raise ApiError(400, f"cannot open {_clip(url)}: {exc.strerror or exc}", "invalid_value") from None
        return Video(real, ("file", str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), str(real))

    def _held_bytes(self, data: bytes, label: str) -> Video:
        digest = hashlib.sha256(data).hexdigest()
        path = self.rules.temp_dir / f"{digest}.video"
        with self._lock:
            if self._held.get(path, 0) == 0:
                part = path.with_suffix(f".{threading.get_ident()}.part")
                part.write_bytes(data)
                os.replace(part, path)
            self._held[path] = self._held.get(path, 0) + 1
        return Video(path, ("bytes", digest), label, lambda: self._let_go(path))

    def _let_go(self, path: Path) -> None:
        with self._lock:
            self._held[path] -= 1
            if self._held[path] == 0:
                del self._held[path]
                path.unlink(missing_ok=True)

    @property
    def held(self) -> int:
        """Temporary videos held by requests now (0 when idle: none is left behind)."""
        with self._lock:
            return len(self._held)


def _data_bytes(url: str, max_bytes: int) -> bytes:
    """The bytes of `data:video/...;base64,...`, refused by size before decoding."""
    header, comma, payload = url.partition(",")
    kind = header[5:].split(";")
    media = kind[0].lower()
    if not comma or not media.startswith(("video/", "image/")) or "base64" not in (k.lower() for k in kind[1:]):
        raise ApiError(400, "a data URL must be data:video/TYPE;base64,DATA", "invalid_url")
    size = len(payload) * 3 // 4 - payload[-2:].count("=")
    if size > max_bytes:
        raise ApiError(413, f"the data: URL video is {_mib(size)}, above this server's {_mib(max_bytes)} "
                            "(--max-video-mib)", "video_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the data: URL is not valid base64", "invalid_url") from None


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.URLError(f"a redirect to {_clip(newurl)} is not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """The body at `url`, at most `max_bytes` (by Content-Length first, then by counting)."""
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "dycoke"}), timeout=timeout_s) as reply:
            length = reply.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ApiError(413, f"{_clip(url)} is {_mib(int(length))}, above this server's {_mib(max_bytes)} "
                                    "(--max-video-mib)", "video_too_large")
            chunks, size = [], 0
            while chunk := reply.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, f"{_clip(url)} is over this server's {_mib(max_bytes)} (--max-video-mib)",
                                   "video_too_large")
                chunks.append(chunk)
            return b"".join(chunks)
    except ApiError:
        raise
    except urllib.error.HTTPError as exc:
        raise ApiError(400, f"cannot fetch {_clip(url)}: HTTP {exc.code} {exc.reason}", "fetch_failed") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ApiError(400, f"cannot fetch {_clip(url)}: {reason}", "fetch_failed") from None


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def _clip(url: str, most: int = 120) -> str:
    """A URL as messages quote it: never a whole data: payload."""
    return url if len(url) <= most else url[: most - 3] + "..."
