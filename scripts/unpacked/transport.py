"""HTTP transport for one registry: retries, deadlines, size caps, politeness and authentication.

The parts, each in its module: the retry policy (`retries.py`), Bearer/Basic authentication with its
token cache and the realms a run knows (`auth.py`), why a request failed (`diagnosis.py`), reading
bodies within their caps (`bodies.py`), and the connection cap (`connection_cap.py`). This module
sends each request through them.

Deadlines (`deadlines.py`): `timeout` bounds each read, `deadline` bounds one attempt in all, headers
and body, so a registry that trickles bytes cannot hold a run. A blob's attempt may take one second
more per `min_rate` bytes received. An attempt stopped at its deadline is retried like a dropped one,
within the same `retries` (a body read here counts against what urllib3 has used on its headers);
a blob download stopped at its deadline resumes at most `retries` times.

Politeness: at most `max_connections` connections to one registry are in use at once from this
process (a blob download holds its connection until its body is read or its response closed).
`ratelimit-limit` / `ratelimit-remaining` headers are logged at INFO (the first time, and whenever
the remainder is low). Once a registry cannot be connected to at all (after the retries), later
requests to it fail at once instead of waiting through the same retries again.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from requests.auth import AuthBase
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from .auth import Authenticator, RealmCache
from .bodies import ANSWER_CAP, Cap, read_body
from .connection_cap import POOLS, ConnectionCap, PoolCap
from .credentials import Credentials
from .deadlines import DeadlineAdapter, Exchange
from .diagnosis import describe_failure
from .errors import AnswerCutError, AuthError, RegistryError
from .retries import BodyFailed, retries_note, retry_policy, short_path

log = logging.getLogger(__name__)

# Concurrent connections to one registry from one process, unless its settings say otherwise.
DEFAULT_MAX_CONNECTIONS = 8
# Seconds one attempt at an answer may take in all, headers and body, unless the registry's settings
# say otherwise (`deadline`): real answers other than blobs take well under a second, and even a
# tag list of MAX_ANSWER_BYTES arrives in time at 1 MB/s.
DEFAULT_DEADLINE = 120
# Bytes per second a blob download must average beyond the deadline (`min_rate`): 64 KiB/s lets a
# 1 GiB layer take 4.5 hours per attempt on a poor link, while a trickle is stopped within minutes.
DEFAULT_MIN_RATE = 65536
_FIRST_NUMBER = re.compile(r"^\s*(\d+)")


@dataclass(frozen=True)
class _Call:
    """One request as the caller asked for it."""

    method: str
    url: str
    what: str  # names the registry and what is read, for messages
    stream: bool = False
    blob: bool = False  # a blob's attempt may take longer, by its size (`min_rate`)
    cap: Cap = ANSWER_CAP  # for a body read whole
    to_registry: bool = True  # holds a connection slot and counts for `_unreachable` (not a token server)


class RegistryTransport:
    """A requests session for one registry host, with its authentication and connection cap.

    `realms` is the run's cache of token realms, shared by its transports (a new empty one if not
    given); `cap` is the connection cap's design (bench/connection_cap.py compares them).
    """

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        timeout: float = 60,
        retries: int = 5,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        deadline: float = DEFAULT_DEADLINE,
        min_rate: float = DEFAULT_MIN_RATE,
        realms: RealmCache | None = None,
        cap: ConnectionCap | None = None,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.deadline = deadline
        self.min_rate = min_rate
        self.session = requests.Session()
        self._policy = retry_policy(retries, registry)
        self._cap = cap if cap is not None else PoolCap()
        adapter = DeadlineAdapter(
            pool_connections=POOLS,
            pool_maxsize=max(max_connections, 1),
            pool_block=self._cap.pool_block,
            max_retries=self._policy,
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "unpacked/0.1"
        # Streamed answers handed to the caller: their exchange and what they are.
        self._streams: weakref.WeakKeyDictionary[requests.Response, tuple[Exchange, str]] = weakref.WeakKeyDictionary()
        self.auth = Authenticator(registry, credentials, realms if realms is not None else RealmCache(), self._token)
        self._lock = threading.Lock()
        self._unreachable: str | None = None
        self._learning = threading.Lock()
        self._learned = threading.Event()
        if self.auth.realm_known:
            self._learned.set()
        self._ratelimit_logged = False

    def request(
        self,
        method: str,
        url: str,
        scope: str,
        *,
        what: str | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        blob: bool = False,
        cap: Cap = ANSWER_CAP,
    ) -> requests.Response:
        """Send a request, answering one authentication challenge if the registry sends one.

        The answer's body is read here, at most `cap.size` bytes (`TooLargeError` beyond). With
        `stream=True` a successful answer's body is left to the caller, who reads it with `chunks()`
        and must close the response (it holds a connection and its deadline's watchdog).
        `what` names the registry and what is read, for messages. `blob=True`: the attempt may take
        longer by the bytes received (`min_rate`).
        The first request to a registry goes alone: it learns how the registry authenticates, so the
        concurrent requests behind it fetch their token first instead of each collecting a 401.
        """
        call = _Call(method, url, what or f"registry {self.registry}: {method} {short_path(url)}", stream, blob, cap)
        if not self._learned.is_set():
            with self._learning:
                if not self._learned.is_set():
                    try:
                        return self._request(call, scope, headers)
                    finally:
                        self._learned.set()
        return self._request(call, scope, headers)

    def chunks(self, response: requests.Response, cap: Cap | None = None) -> Iterator[bytes]:
        """The body of a streamed answer; at most `cap.size` bytes (`TooLargeError` at one more).

        Raises `AnswerCutError` when the body stops early (dropped, stalled, or at its deadline).
        """
        exchange, what = self._streams[response]
        return read_body(response, exchange, cap, what, self.timeout)

    def _request(self, call: _Call, scope: str, given: dict[str, str] | None) -> requests.Response:
        headers = dict(given or {})
        auth = self.auth.for_scope(scope)
        response = self._send(call, headers, auth)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        response.close()
        auth.answer(challenge)
        response = self._send(call, headers, auth)
        if response.status_code == 401:
            response.close()
            who = f"as {self.credentials.username!r}" if self.credentials else "anonymously"
            msg = (
                f"registry {self.registry}: access denied {who} to {scope}; check the "
                "credentials (~/.docker/config.json or the registry's *_env settings)"
            )
            raise AuthError(msg)
        return response

    def _token(self, url: str, what: str, query: dict[str, str], basic: tuple[str, str] | None) -> requests.Response:
        """A token server's answer, read whole (for `Authenticator`): not to the registry, no slot."""
        return self._send(_Call("GET", url, what, to_registry=False), {}, basic, params=query)

    def _send(
        self,
        call: _Call,
        headers: dict[str, str],
        auth: AuthBase | tuple[str, str] | None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        """One request, each attempt within its deadline, failed attempts retried as the policy says.

        urllib3 retries what fails before the headers are in; a body read whole that fails after
        them is retried here, from the same budget.
        """
        if call.to_registry and self._unreachable:
            raise RegistryError(f"{call.what}: not sent: {self._unreachable}")
        exchange = Exchange(self.deadline, self.min_rate if call.blob else None)
        handed_over = False
        try:
            while True:
                response = self._open(call, headers, auth, params, exchange)
                if call.stream and response.ok:
                    self._hand_over(call, response, exchange)
                    handed_over = True
                    return response
                try:
                    self._read_whole(call, response, exchange)
                    return response
                except AnswerCutError as cut:
                    exchange.retry = self._retry_after_cut(call, response, cut)
        finally:
            if not handed_over:
                exchange.finish()

    def _read_whole(self, call: _Call, response: requests.Response, exchange: Exchange) -> None:
        """Read the body (at most `call.cap`), then close the answer and free its slot, whatever happens."""
        try:
            body = b"".join(read_body(response, exchange, call.cap, call.what, self.timeout))
        finally:
            response.close()
            if call.to_registry:
                self._cap.release()
        # requests serves .content, .json() and .text from what was read here.
        response._content = body
        response._content_consumed = True  # type: ignore[attr-defined]

    def _open(
        self,
        call: _Call,
        headers: dict[str, str],
        auth: AuthBase | tuple[str, str] | None,
        params: dict[str, str] | None,
        exchange: Exchange,
    ) -> requests.Response:
        """Send the request and wait for the headers (urllib3 retries failures up to then)."""
        if call.to_registry:
            self._cap.acquire()
        try:
            with exchange.sending():
                response = self.session.request(
                    call.method,
                    call.url,
                    headers=headers,
                    params=params,
                    auth=auth,
                    stream=True,
                    timeout=self.timeout,
                )
        except BaseException as err:
            if call.to_registry:
                self._cap.release()
            if isinstance(err, requests.RequestException):
                raise self._failed(call, err, exchange) from err
            raise
        self._note_rate_limit(response)
        return response

    def _failed(self, call: _Call, err: requests.RequestException, exchange: Exchange) -> RegistryError:
        failure = describe_failure(err, self.timeout, self.registry, exchange)
        if failure.unreachable and call.to_registry:
            self._unreachable = f"unreachable earlier in this run ({failure.reason})"
        return RegistryError(f"{call.what}: {failure.reason} ({retries_note(self.retries, failure.retried)})")

    def _retry_after_cut(self, call: _Call, response: requests.Response, cut: AnswerCutError) -> Retry:
        """The retries left after a body failed (or RegistryError if none), once the backoff is waited."""
        retry = getattr(response.raw, "retries", None)
        if not isinstance(retry, Retry):
            retry = self._policy
        try:
            retry = retry.increment(call.method, call.url, error=BodyFailed(cut.reason))
        except (MaxRetryError, BodyFailed) as err:
            raise RegistryError(f"{call.what}: {cut.reason} ({retries_note(self.retries)})") from err
        retry.sleep()
        return retry

    def _hand_over(self, call: _Call, response: requests.Response, exchange: Exchange) -> None:
        """The caller reads the body; closing the response (once) ends the exchange and frees the slot.

        requests' own close gives the connection back to the pool; the exchange (and, with the
        semaphore design, the slot) is ours to end, and requests has no hook on close: so close is
        wrapped.
        """
        self._streams[response] = (exchange, call.what)
        close = response.close
        closed = threading.Event()

        def close_and_release() -> None:
            try:
                close()
            finally:
                if not closed.is_set():
                    closed.set()
                    exchange.finish()
                    if call.to_registry:
                        self._cap.release()

        response.close = close_and_release  # type: ignore[method-assign]

    def _note_rate_limit(self, response: requests.Response) -> None:
        """Log `ratelimit-*` headers: at INFO the first time and when little is left, else at DEBUG."""
        remaining_text = response.headers.get("ratelimit-remaining")
        if remaining_text is None:
            return
        limit_text = response.headers.get("ratelimit-limit", "?")
        remaining = _FIRST_NUMBER.match(remaining_text)
        limit = _FIRST_NUMBER.match(limit_text)
        low = bool(remaining and limit and int(remaining.group(1)) <= max(int(limit.group(1)) // 10, 1))
        with self._lock:
            first, self._ratelimit_logged = not self._ratelimit_logged, True
        level = logging.INFO if first or low else logging.DEBUG
        log.log(
            level,
            "registry %s: ratelimit-remaining %s of ratelimit-limit %s%s",
            self.registry,
            remaining_text.strip(),
            limit_text.strip(),
            " (running low)" if low else "",
        )
