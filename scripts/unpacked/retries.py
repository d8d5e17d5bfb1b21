"""The one retry policy of every registry request (`retry_policy`, `RegistryRetry`, `resume_backoff`).

- retried: connection errors, read timeouts, HTTP 429, 500, 502, 503 and 504, for GET and HEAD;
- never retried: any other 4xx (401 is answered once with credentials by the transport, not retried);
- waits: exponential backoff with jitter (0 s, then 1, 2, 4, ... s plus up to 0.5 s), or the
  `Retry-After` the registry sends (seconds or an HTTP date); every single wait is capped at
  `MAX_WAIT` seconds, and a `Retry-After` longer than that ends the retries at once (the error says
  when to come back). So one request waits at most `retries` x `MAX_WAIT` seconds in total (150 s
  with the default 5 retries), plus `timeout` per attempt.
- never retried either: a host name that does not resolve, and a TLS handshake that fails (a plain
  HTTP registry behind an `https://` entry, an untrusted certificate): they fail the same way again
  at once, so they fail at once, saying so.
- A body cut in the middle (blob downloads) is resumed by the caller at most `RESUME_ATTEMPTS` times,
  waiting `resume_backoff(n)` between attempts.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from urllib3.exceptions import MaxRetryError, NameResolutionError, ProtocolError, ResponseError, SSLError
from urllib3.util.retry import Retry

from .deadlines import current_exchange

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

log = logging.getLogger(__name__)

# The longest single wait between two attempts (backoff or Retry-After), in seconds.
MAX_WAIT = 30
# How often a blob download cut in the middle is resumed (with Range) before it is given up.
RESUME_ATTEMPTS = 5
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRIED_METHODS = frozenset({"GET", "HEAD"})


class BodyFailed(ProtocolError):
    """A body that failed after urllib3 handed its answer over, counted against the same retries."""


class RegistryRetry(Retry):
    """urllib3's Retry with this project's rules: bounded waits, no 4xx but 429, logged attempts."""

    # urllib3 would also retry 413 with a Retry-After: a 4xx other than 429 is never retried here.
    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})
    registry = ""

    def new(self, **kw: Any) -> RegistryRetry:
        retry = super().new(**kw)
        retry.registry = self.registry
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        """Seconds from `Retry-After` (seconds or HTTP date); an unreadable value means "no advice"."""
        return parse_retry_after(retry_after)

    def sleep_for_retry(self, response: BaseHTTPResponse) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is None or retry_after < 0:
            return False  # no (usable) advice: exponential backoff
        wait = min(retry_after, MAX_WAIT)
        log.warning("registry %s: waiting %.1f s as its Retry-After asks", self.registry, wait)
        time.sleep(wait)
        return True

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> RegistryRetry:
        if response is not None and response.status == 429:
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > MAX_WAIT:
                log.warning(
                    "registry %s: rate limited; it asks to wait %.0f s, more than %d s: giving up for now",
                    self.registry,
                    retry_after,
                    MAX_WAIT,
                )
                advice = f"rate limited (HTTP 429); it asks to retry after {retry_after:.0f} s, try again then"
                raise MaxRetryError(_pool, url or "", ResponseError(advice))  # type: ignore[arg-type]
        exchange = current_exchange()
        expired = exchange is not None and exchange.expired
        if error is not None and not expired and not worth_retrying(error):
            raise MaxRetryError(_pool, url or "", error) from error  # type: ignore[arg-type]
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if response is not None:
            what = f"HTTP {response.status}"
        elif exchange is not None and expired:
            what = exchange.describe()
        else:
            what = str(error) if isinstance(error, BodyFailed) else type(error).__name__
        log.warning("registry %s: %s %s: %s; retrying", self.registry, method, short_path(url), what)
        return retry


def parse_retry_after(value: str) -> float:
    """Seconds a `Retry-After` asks for (a number of seconds or an HTTP date); -1.0 if unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return -1.0
    return max(float(email.utils.mktime_tz(parsed)) - time.time(), 0.0)


def worth_retrying(error: BaseException) -> bool:
    """False for a host name that does not resolve or a failed TLS handshake: they fail again at once."""
    return not isinstance(error, NameResolutionError | SSLError)


def retry_policy(retries: int, registry: str = "") -> RegistryRetry:
    """Retries of temporary failures only; see the module documentation for the bounds."""
    retry = RegistryRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.5,
        backoff_jitter=0.5,
        backoff_max=MAX_WAIT,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=RETRIED_METHODS,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    retry.registry = registry
    return retry


def resume_backoff(attempt: int) -> float:
    """Seconds to wait before resuming a cut download for the `attempt`-th time (0 for the first)."""
    if attempt <= 0:
        return 0.0
    return min(0.5 * 2.0**attempt + random.random() * 0.5, MAX_WAIT)


def retries_note(retries: int, retried: bool = True) -> str:
    """How often a failed request was tried again, for its message."""
    if not retried:
        return "not retried"
    return f"retried up to {retries} time{'' if retries == 1 else 's'}"


def short_path(url: str | None) -> str:
    """The URL without its query (a token realm's query is harmless, but keep logs short)."""
    return (url or "").split("?", 1)[0]
