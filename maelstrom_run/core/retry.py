"""The one retry policy: which failures are worth another try, and how long to wait before it.

Worth retrying: a connection refused, reset or timed out, and an answer that says "later" (HTTP 429,
502, 503, 504), after the server's ``Retry-After`` when it gives one. Never retried: a name that does
not resolve (DNS), and every other refusal, which says the request itself is wrong.
"""

from __future__ import annotations

import email.utils
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: HTTP statuses that mean "try again later" rather than "this request is wrong".
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class Transient(Exception):
    """Raised inside a retried call for a failure worth another try (an HTTP 503, a cut connection)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every try failed; ``last`` is the last failure and ``tries`` how many were made."""

    def __init__(self, last: BaseException, tries: int) -> None:
        super().__init__(f"{first_line(last)} (after {tries} tries)")
        self.last, self.tries = last, tries


def first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else type(value).__name__


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, a urllib3 ``reason``, exceptions among the args."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for inner in (e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())):
            if isinstance(inner, BaseException):
                todo.append(inner)


def is_dns_failure(exc: BaseException) -> bool:
    """A host name that does not resolve: retrying will not make it resolve."""
    for e in _causes(exc):
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return True
    return False


def _client_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of the HTTP clients in use (only those already imported: nothing is loaded)."""
    out: list[type[BaseException]] = []
    if (requests := sys.modules.get("requests")) is not None:
        out += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    if (httpx := sys.modules.get("httpx")) is not None:
        out.append(httpx.TransportError)
    if (http_client := sys.modules.get("http.client")) is not None:
        out += [http_client.RemoteDisconnected, http_client.IncompleteRead]
    return tuple(out)


def is_transient(exc: BaseException) -> bool:
    """Whether another try may succeed (see the module docstring)."""
    if is_dns_failure(exc):
        return False
    if isinstance(exc, Transient | ConnectionError | TimeoutError):
        return True
    if (urllib_error := sys.modules.get("urllib.error")) is not None:
        if isinstance(exc, urllib_error.HTTPError):
            return exc.code in RETRY_STATUSES
        if isinstance(exc, urllib_error.URLError):
            return True
    return isinstance(exc, _client_errors())


def retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more tries after the first, waiting ``delay`` seconds, then ``backoff`` times longer
    each time, at most ``max_delay`` (a server's ``Retry-After`` is honoured up to ``max_wait``)."""

    retries: int = 3
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 30.0
    max_wait: float = 300.0
    #: Seconds one try may wait for an answer (for the callers that set a timeout on a request).
    timeout_s: float = 30.0

    @classmethod
    def tries_of(cls, tries: int, **options: float) -> RetryPolicy:
        """The policy of a ``retries``/``--retries`` setting that counts tries in all (at least one)."""
        return cls(retries=max(1, int(tries)) - 1, **options)

    @property
    def tries(self) -> int:
        return max(0, self.retries) + 1

    def wait(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds before try ``attempt + 1`` (``attempt`` counts from 1)."""
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float):
            return min(float(asked), self.max_wait)
        return min(self.delay * self.backoff ** (attempt - 1), self.max_delay)

    def call(
        self,
        fn: Callable[[], T],
        *,
        transient: Callable[[BaseException], bool] = is_transient,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """``fn()``, tried again while it fails transiently; raises :class:`GaveUp` after the last try,
        and any other failure at once."""
        for attempt in range(1, self.tries + 1):
            try:
                return fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                if attempt == self.tries:
                    raise GaveUp(exc, attempt) from exc
                sleep(self.wait(attempt, exc))
        raise AssertionError("unreachable")
