"""Where dataset files come from: HTTPS (resumable with Range requests), S3-compatible public buckets
(plain HTTPS, path-style or virtual-host URLs, ListObjectsV2 for listings) and local files.

:func:`download` writes one URL into a ``.part`` file and resumes it where it stopped: a server that
answers ``206 Partial Content`` continues the file, one that answers ``200`` starts it again. Errors
that may pass (connection refused or reset, timeouts, 5xx) are retried with exponential backoff;
the others (404, 403, a full disk) raise :class:`DataError` at once with one line naming the URL.
"""

from __future__ import annotations

import errno
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.errors import DataError
from ..core.retry import GaveUp, RetryPolicy, Transient, is_dns_failure, retry_after
from ..core.transfer import DISK_FULL, copy_file, size_of, write_from

#: Bytes per read and write.
CHUNK = 1 << 20
USER_AGENT = "maelstrom-run"
#: Downloads and listings: 5 tries, waiting 1 s, then doubling up to 30 s.
DOWNLOADS = RetryPolicy(retries=4, delay=1.0, max_delay=30.0, timeout_s=30.0)


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def s3_to_https(url: str, endpoint: str = "https://s3.amazonaws.com") -> str:
    """``s3://bucket/key`` as a path-style HTTPS URL of ``endpoint``; other URLs unchanged."""
    if not url.startswith("s3://"):
        return url
    bucket_key = url[len("s3://") :]
    return f"{endpoint.rstrip('/')}/{bucket_key}"


def join(base: str, name: str) -> str:
    """``name`` relative to the directory URL or path ``base``."""
    if "://" in name or os.path.isabs(name):
        return name
    return f"{base.rstrip('/')}/{name.lstrip('/')}"


def local_path(location: str) -> Path:
    if location.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
    return Path(location).expanduser()


def _disk_full(exc: OSError, target: Path) -> DataError:
    return DataError(
        f"{target}: no space left while writing it ({os.strerror(exc.errno or errno.ENOSPC)}); "
        f"free some space, lower the cache size or move the cache with MAELSTROM_CACHE=DIR"
    )


def _open(url: str, headers: dict[str, str], timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - https/http only
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            raise
        if exc.code >= 500 or exc.code in (408, 429):
            wait = retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise Transient(f"{url}: HTTP {exc.code} {exc.reason}", retry_after=wait) from exc
        if exc.code == 404:
            raise DataError(f"{url}: not found (HTTP 404); check the dataset's remote url and tier") from exc
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if is_dns_failure(exc):  # never worth another try
            host = urllib.parse.urlsplit(url).hostname
            raise DataError(
                f"{url}: the host name {host!r} does not resolve; check the URL and the network"
            ) from None
        raise Transient(f"{url}: {reason}") from exc


def _http_once(url: str, part: Path, timeout: float, progress: Callable[[int], None]) -> int | None:
    """Continue ``part`` from its current size; return the total size when known."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(url, headers, timeout)
    except urllib.error.HTTPError as exc:  # 416: nothing left to send, or the file got shorter
        total = _content_range_total(exc.headers.get("Content-Range"))
        if total is not None and total == have:
            return total
        part.unlink(missing_ok=True)
        raise Transient(f"{url}: the server refused to resume at byte {have}; starting again") from exc
    with response:
        if response.status == 206:
            total = _content_range_total(response.headers.get("Content-Range"))
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise Transient(f"{url}: the server resumed at byte {start}, not {have}; starting again")
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            if have:
                progress(-have)
            start = 0

        def blocks() -> Iterator[bytes]:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise Transient(f"{url}: connection lost ({exc or type(exc).__name__})") from exc
                if not chunk:
                    return
                yield chunk

        _writing(part, lambda: write_from(part, blocks(), offset=start, progress=progress))
    size = part.stat().st_size
    if total is not None and size < total:
        raise Transient(f"{url}: connection closed after {size} of {total} bytes")
    return total if total is not None else size


def _content_range_total(value: str | None) -> int | None:
    # "bytes 100-199/1000" or "bytes */1000"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _content_range_start(value: str | None) -> int:
    if not value:
        return 0
    span = value.split()[-1].split("/")[0]
    return int(span.split("-")[0]) if span[:1].isdigit() else 0


def _copy_local(source: Path, part: Path, progress: Callable[[int], None]) -> int:
    if not source.is_file():
        raise DataError(f"{source}: no such file")
    have, total = size_of(part), source.stat().st_size
    _writing(part, lambda: copy_file(source, part, offset=have if have <= total else 0, progress=progress))
    return total


def _writing(part: Path, write: Callable[[], int]) -> None:
    """``write()`` into ``part``; a full disk removes the partial file and is named (no retry helps)."""
    try:
        write()
    except OSError as exc:
        if exc.errno in DISK_FULL:
            part.unlink(missing_ok=True)
            raise _disk_full(exc, part) from exc
        raise


def download(
    url: str,
    part: Path,
    *,
    retry: RetryPolicy | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fetch ``url`` (https, http, file:// or a path) into ``part``, resuming what is there.

    ``progress(n)`` is called with the bytes added (negative when a download starts over).
    Returns the size of the complete file.
    """
    retry = retry or DOWNLOADS
    progress = progress or (lambda n: None)
    part.parent.mkdir(parents=True, exist_ok=True)
    if not is_url(url):
        return _copy_local(local_path(url), part, progress)

    def once() -> int:
        size = _http_once(url, part, retry.timeout_s, progress)
        return size if size is not None else part.stat().st_size

    try:
        return retry.call(once)
    except GaveUp as exc:
        raise DataError(
            f"{exc.last}; gave up after {exc.tries} attempt(s), run the command again to resume"
        ) from None


_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def list_objects(
    bucket_url: str, prefix: str = "", *, retry: RetryPolicy | None = None
) -> list[tuple[str, int]]:
    """``(key, size)`` of every object under ``prefix`` of a public S3-compatible bucket.

    ``bucket_url`` is the bucket's HTTPS URL, path-style (``https://host/bucket``) or virtual-host
    style (``https://bucket.host``); ``s3://`` URLs go through :func:`s3_to_https` first.
    """
    retry = retry or DOWNLOADS
    if not is_url(bucket_url):
        root = local_path(bucket_url)
        base = root / prefix if prefix else root
        if not base.exists():
            raise DataError(f"{base}: no such directory")
        files = sorted(p for p in (base.rglob("*") if base.is_dir() else [base]) if p.is_file())
        return [(str(p.relative_to(root)), p.stat().st_size) for p in files]
    objects: list[tuple[str, int]] = []
    token: str | None = None
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        url = f"{bucket_url.rstrip('/')}/?{urllib.parse.urlencode(query)}"
        body = _get_with_retry(url, retry)
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise DataError(f"{url}: not an S3 bucket listing ({exc})") from exc
        ns = _S3 if root.tag.startswith(_S3) else ""
        for item in root.iter(f"{ns}Contents"):
            key = item.findtext(f"{ns}Key") or ""
            size = int(item.findtext(f"{ns}Size") or 0)
            if key and not key.endswith("/"):
                objects.append((key, size))
        if (root.findtext(f"{ns}IsTruncated") or "false").lower() != "true":
            return objects
        token = root.findtext(f"{ns}NextContinuationToken")
        if not token:
            return objects


def _get_with_retry(url: str, retry: RetryPolicy) -> bytes:
    def once() -> bytes:
        try:
            with _open(url, {}, retry.timeout_s) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from exc

    try:
        return retry.call(once)
    except GaveUp as exc:
        raise DataError(f"{exc.last}; gave up after {exc.tries} attempt(s)") from None
