"""A loopback HTTP server for the data tests: files with Range requests, S3-style bucket listings.

Run it as a process (so a test can kill it in the middle of a download)::

    python tests/data_server.py ROOT PORT_FILE LOG [--delay S] [--chunk N] [--page N] [--port P]

It serves the files under ROOT (``/BUCKET/KEY`` is ``ROOT/BUCKET/KEY``), answers
``GET /BUCKET/?list-type=2&prefix=P`` with a ListObjectsV2 XML page of at most ``--page`` keys,
sends bodies in ``--chunk``-byte pieces ``--delay`` seconds apart, writes its port into PORT_FILE
once listening and appends one JSON line per request to LOG (method, path, Range header, status,
body bytes sent). :class:`DataServer` starts and stops it from a test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _begin(self) -> None:
        """Mark the request as begun; :meth:`DataServer.requests` waits for its record."""
        self._id = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        with open(self.server.log, "a") as fh:
            fh.write(json.dumps({"begin": self._id}) + "\n")

    def _record(self, status: int, sent: int) -> None:
        entry = {
            "id": getattr(self, "_id", None),
            "method": self.command,
            "path": self.path,
            "range": self.headers.get("Range"),
            "status": status,
            "sent": sent,
        }
        with open(self.server.log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def do_HEAD(self) -> None:
        self.do_GET(body=False)

    def do_GET(self, body: bool = True) -> None:
        self._begin()
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = urllib.parse.unquote(url.path)
        if query.get("list-type") == ["2"]:
            self._list(path.strip("/"), query)
            return
        target = (self.server.root / path.lstrip("/")).resolve()
        if not target.is_file() or self.server.root not in target.parents:
            self.send_error(404)
            self._record(404, 0)
            return
        size = target.stat().st_size
        start, end, status = 0, size - 1, 200
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            first, _, last = ranged[len("bytes=") :].partition("-")
            start = int(first)
            end = int(last) if last else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(416, 0)
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        sent = 0
        if body:
            with open(target, "rb") as fh:
                fh.seek(start)
                remaining = end - start + 1
                try:
                    while remaining > 0:
                        chunk = fh.read(min(self.server.chunk, remaining))
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        sent += len(chunk)
                        remaining -= len(chunk)
                        if self.server.delay:
                            time.sleep(self.server.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass
        self._record(status, sent)

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        root = self.server.root / bucket
        prefix = query.get("prefix", [""])[0]
        after = query.get("continuation-token", [""])[0]
        keys = sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        keys = [k for k in keys if k.startswith(prefix) and k > after]
        page, more = keys[: self.server.page], len(keys) > self.server.page
        items = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{(root / k).stat().st_size}</Size></Contents>"
            for k in page
        )
        token = f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>" if more else ""
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{S3_NS}">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{token}{items}</ListBucketResult>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._record(200, len(body))  # before the answer: a client may look at the log once it has it
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, root: Path, log: Path, delay: float, chunk: int, page: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.root, self.log, self.delay, self.chunk, self.page = root.resolve(), log, delay, chunk, page


class DataServer:
    """The server as a child process: ``start()``, ``kill()``, ``url``, ``requests()``."""

    def __init__(
        self,
        root: Path,
        log: Path,
        *,
        delay: float = 0.0,
        chunk: int = 1 << 16,
        page: int = 1000,
        port: int = 0,
    ) -> None:
        self.root, self.log = Path(root), Path(log)
        self.delay, self.chunk, self.page, self.port = delay, chunk, page, port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DataServer:
        port_file = self.log.with_suffix(f".port{time.monotonic_ns()}")
        command = [sys.executable, __file__, str(self.root), str(port_file), str(self.log)]
        command += ["--delay", str(self.delay), "--chunk", str(self.chunk), "--page", str(self.page)]
        command += ["--port", str(self.port)]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the data server did not start (exit code {self.process.poll()})")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def requests(self) -> list[dict]:
        """Every request answered so far, once the server has recorded those it has begun (it records
        after the last byte, which a client may read first); a server killed mid-answer records none."""
        deadline = time.monotonic() + 10
        while True:
            lines = (
                [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
                if (self.log.exists())
                else []
            )
            begun = {line["begin"] for line in lines if "begin" in line}
            done = {line.get("id") for line in lines if "begin" not in line}
            alive = self.process is not None and self.process.poll() is None
            if begun <= done or not alive or time.monotonic() > deadline:
                return [line for line in lines if "begin" not in line]
            time.sleep(0.02)

    def __enter__(self) -> DataServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("port_file", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--chunk", type=int, default=1 << 16)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = Server(args.port, args.root, args.log, args.delay, args.chunk, args.page)
    tmp = args.port_file.with_name(args.port_file.name + ".tmp")
    tmp.write_text(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
