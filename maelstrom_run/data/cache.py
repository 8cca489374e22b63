"""The download cache: ``$MAELSTROM_CACHE`` (default ``$MAELSTROM_HOME/cache``).

- ``index.db``  SQLite (WAL): one row per cached file: source URL, path, size, sha256, last access
- ``files/HOST/KEY/NAME``  the files, each moved in atomically once complete and verified
- ``locks/KEY.lock``  one ``fcntl`` lock per entry: a download, a check or an eviction holds it,
  so two processes never fetch the same file twice nor delete a file being fetched
- ``samples/``  generated sample data (see :mod:`maelstrom_run.data.samples`)

A file is served when its size and modification time are those recorded; otherwise (or with
``verify=True``) its sha256 is checked again and a mismatch is fetched anew, never served. A size
limit (``MAELSTROM_CACHE_LIMIT``, e.g. ``50GB``) evicts the least recently used entries that no
process is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..core import paths
from ..core.errors import DataError
from ..core.retry import RetryPolicy
from ..core.transfer import Meter, is_disk_full
from .sources import DOWNLOADS, download, is_url

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    source TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    dataset TEXT,
    created REAL NOT NULL,
    last_access REAL NOT NULL
)
"""

_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str) -> int:
    """``"50GB"``, ``"500M"``, ``"1.5T"`` or a number of bytes (GB = 1e9 bytes)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)I?B?\s*", text.upper())
    if not m:
        raise DataError(f"{text!r}: not a size; write e.g. 50GB, 500MB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def _key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Entry:
    source: str
    path: Path
    size: int
    checksum: str
    dataset: str | None
    created: float
    last_access: float


@dataclass(frozen=True)
class Request:
    """One file to fetch: its source URL (or path), expected checksum and size when known."""

    source: str
    checksum: str | None = None
    size: int | None = None
    dataset: str | None = None


def _to_wal(db: sqlite3.Connection, seconds: float = 60.0) -> None:
    """Switch a new index to WAL. The switch needs the only connection to the file and SQLite does not
    wait for it (no busy timeout), so threads and processes opening a new cache together try again."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Cache:
    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        limit: int | None = None,
        retry: RetryPolicy | None = None,
        jobs: int = 4,
    ) -> None:
        self.root = Path(root) if root is not None else paths.cache_dir()
        env_limit = os.environ.get("MAELSTROM_CACHE_LIMIT")
        self.limit = limit if limit is not None else (parse_size(env_limit) if env_limit else None)
        self.retry = retry or DOWNLOADS
        self.jobs = max(1, jobs)
        self.index = self.root / "index.db"

    # -- index ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.index, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                _to_wal(db)
            db.execute(_SCHEMA)
            yield db
        finally:
            db.close()

    def _row(self, db: sqlite3.Connection, source: str) -> tuple | None:
        return db.execute(
            "SELECT path, size, checksum, mtime_ns FROM entries WHERE source = ?", (source,)
        ).fetchone()

    def entries(self) -> list[Entry]:
        """Every cached file, least recently used first."""
        if not self.index.exists():
            return []
        with self._db() as db:
            rows = db.execute(
                "SELECT source, path, size, checksum, dataset, created, last_access FROM entries "
                "ORDER BY last_access"
            ).fetchall()
        return [Entry(r[0], Path(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def total_size(self) -> int:
        return sum(e.size for e in self.entries())

    # -- locks ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, source: str, blocking: bool = True) -> Iterator[bool]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{_key(source)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    # -- fetching ---------------------------------------------------------------------------------

    def path_for(self, source: str) -> Path:
        """Where the file of ``source`` lives in the cache."""
        if is_url(source):
            parsed = urllib.parse.urlparse(source)
            host = re.sub(r"[^A-Za-z0-9._-]", "_", parsed.netloc) or "remote"
            name = Path(urllib.parse.unquote(parsed.path)).name or "index"
        else:
            host, name = "local", Path(source).name
        return self.root / "files" / host / _key(source) / name

    def fetch(
        self,
        request: Request | str,
        *,
        verify: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Path:
        """The cached file of ``request``, downloaded (or resumed) and verified when needed."""
        if isinstance(request, str):
            request = Request(request)
        with self._lock(request.source):
            path = self._cached(request, verify)
            if path is None:
                path = self._download(request, progress)
        self.evict(keep={request.source})
        return path

    def _cached(self, request: Request, verify: bool) -> Path | None:
        """The entry's path when it is complete and intact (the entry lock is held)."""
        with self._db() as db:
            row = self._row(db, request.source)
            if row is None:
                return None
            path, size, checksum, mtime_ns = Path(row[0]), row[1], row[2], row[3]
            stale = request.checksum is not None and request.checksum != checksum
            try:
                st = path.stat()
            except FileNotFoundError:
                st = None
            intact = st is not None and not stale and st.st_size == size
            if intact and (verify or st.st_mtime_ns != mtime_ns):
                intact = sha256(path) == checksum
            if not intact:  # never serve it: drop the entry, fetch again
                path.unlink(missing_ok=True)
                db.execute("DELETE FROM entries WHERE source = ?", (request.source,))
                return None
            if st.st_mtime_ns != mtime_ns:
                db.execute(
                    "UPDATE entries SET mtime_ns = ? WHERE source = ?", (st.st_mtime_ns, request.source)
                )
            db.execute("UPDATE entries SET last_access = ? WHERE source = ?", (time.time(), request.source))
            return path

    def _download(self, request: Request, progress: Callable[[int], None] | None) -> Path:
        path = self.path_for(request.source)
        part = path.with_name(path.name + ".part")
        try:
            return self._fetch_into(request, path, part, progress)
        except (OSError, sqlite3.OperationalError, DataError) as exc:
            if not is_disk_full(exc):
                raise
            # a full disk: keep nothing half-written, neither the part nor a file without its entry
            part.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise DataError(
                f"{self.root}: No space left on device while fetching {request.source}; nothing of it "
                "was kept. Free space there, or set MAELSTROM_CACHE to a larger disk "
                "(MAELSTROM_CACHE_LIMIT keeps the cache under a size)"
            ) from None

    def _fetch_into(
        self, request: Request, path: Path, part: Path, progress: Callable[[int], None] | None
    ) -> Path:
        for attempt in range(2):
            download(request.source, part, retry=self.retry, progress=progress)
            checksum = sha256(part)
            if request.checksum is None or checksum == request.checksum:
                break
            if progress is not None:
                progress(-part.stat().st_size)
            part.unlink(missing_ok=True)  # a corrupt resume or a corrupt transfer: start over once
            if attempt:
                raise DataError(
                    f"{request.source}: checksum mismatch (expected {request.checksum}, got {checksum}); "
                    "the file was not kept"
                )
        size = part.stat().st_size
        os.replace(part, path)
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.source,
                    str(path),
                    size,
                    checksum,
                    path.stat().st_mtime_ns,
                    request.dataset,
                    now,
                    now,
                ),
            )
        return path

    def fetch_many(
        self,
        requests: Sequence[Request],
        *,
        verify: bool = False,
        meter: Meter | None = None,
        description: str = "downloading",
    ) -> list[Path]:
        """Fetch ``requests`` with at most ``jobs`` downloads at once, reporting to ``meter``."""
        known = [r.size for r in requests]
        total = sum(s for s in known if s) if all(known) else None
        if meter:
            meter.start(f"{description} {len(requests)} file(s)", total)

        def one(request: Request) -> Path:
            part = self.path_for(request.source)
            part = part.with_name(part.name + ".part")
            if meter and part.exists():  # a resumed download counts what is already there
                meter.advance(part.stat().st_size)
            return self.fetch(request, verify=verify, progress=meter.advance if meter else None)

        with ThreadPoolExecutor(max_workers=min(self.jobs, max(1, len(requests)))) as pool:
            futures = [pool.submit(one, r) for r in requests]
            results = [f.result() for f in futures]
        if meter:  # files that were already cached count as done
            meter.finish(sum(p.stat().st_size for p in results), total)
        self.evict(keep={r.source for r in requests})
        return results

    # -- eviction and clearing --------------------------------------------------------------------

    def evict(self, keep: set[str] | frozenset[str] = frozenset()) -> list[Entry]:
        """Drop least recently used entries (not in ``keep``, not in use) until under the limit."""
        if self.limit is None:
            return []
        entries = self.entries()
        total = sum(e.size for e in entries)
        evicted = []
        for entry in entries:
            if total <= self.limit:
                break
            if entry.source in keep:
                continue
            if self._remove(entry):
                total -= entry.size
                evicted.append(entry)
        return evicted

    def _remove(self, entry: Entry) -> bool:
        with self._lock(entry.source, blocking=False) as locked:
            if not locked:
                return False
            with self._db() as db:
                db.execute("DELETE FROM entries WHERE source = ?", (entry.source,))
            entry.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                entry.path.parent.rmdir()
            return True

    def clear(self, dataset: str | None = None) -> tuple[list[Entry], list[Entry]]:
        """Remove cached files (of ``dataset`` only, when given): ``(removed, busy)``."""
        removed, busy = [], []
        for entry in self.entries():
            if dataset is not None and entry.dataset != dataset:
                continue
            (removed if self._remove(entry) else busy).append(entry)
        if dataset is None:
            # leftovers of interrupted downloads that no process is resuming
            for part in (self.root / "files").glob("*/*/*.part"):
                source_dir = part.parent
                with contextlib.suppress(OSError):
                    part.unlink()
                    source_dir.rmdir()
        return removed, busy

    # -- generated samples ------------------------------------------------------------------------

    def sample_sets(self) -> list[tuple[str, Path, int]]:
        """``(kind, directory or file, bytes)`` of every generated sample set."""
        root = self.root / "samples"
        found = []
        for kind_dir in sorted(p for p in root.glob("*") if p.is_dir()):
            for item in sorted(kind_dir.iterdir()):
                if item.name.startswith("."):
                    continue
                files = [item] if item.is_file() else [p for p in item.rglob("*") if p.is_file()]
                found.append((kind_dir.name, item, sum(p.stat().st_size for p in files)))
        return found

    def clear_samples(self, kind: str | None = None) -> list[tuple[str, Path, int]]:
        removed = []
        for sample_kind, item, size in self.sample_sets():
            if kind is not None and sample_kind != kind:
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed.append((sample_kind, item, size))
        return removed
