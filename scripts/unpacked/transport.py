"""HTTP transport for one registry: retries, timeouts, politeness and Bearer/Basic authentication.

One retry policy, in one place (`retry_policy`, `RegistryRetry`, `resume_backoff`):
- retried: connection errors, read timeouts, HTTP 429, 500, 502, 503 and 504, for GET and HEAD;
- never retried: any other 4xx (401 is answered once with credentials by `request`, not retried);
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

Deadlines (`deadlines.py`): `timeout` bounds each read, `deadline` bounds one attempt in all, headers
and body, so a registry that trickles bytes cannot hold a run. A blob's attempt may take one second
more per `min_rate` bytes received. An attempt stopped at its deadline is retried like a dropped one,
within the same `retries` (a body read here counts against what urllib3 has used on its headers);
a blob download stopped at its deadline resumes at most `retries` times.

Sizes: an answer read whole is read at most `Cap.size` + 1 bytes far, then refused (`TooLargeError`):
manifests and configs with the caller's limit, anything else with `MAX_ANSWER_BYTES`.

Politeness: at most `max_connections` requests to one registry are in flight at once from this
process (a blob download holds its slot until its body is read). `ratelimit-limit` /
`ratelimit-remaining` headers are logged at INFO (the first time, and whenever the remainder is low).
Once a registry cannot be connected to at all (after the retries), later requests to it fail at once
instead of waiting through the same retries again.

Tokens are cached per scope until shortly before they expire, fetched once per scope even when
threads race, and fetched ahead of a request once the registry's token realm is known (no 401 round
trip per repository). Authorization is never sent to another host: requests drops it on a redirect
to a different host, and tokens are only requested from the realm the registry names. Nothing here
logs a credential or a token.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import re
import ssl
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import requests
import urllib3.exceptions
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.util.retry import Retry

from .credentials import Credentials
from .deadlines import DeadlineAdapter, Exchange, current_exchange
from .errors import AnswerCutError, AuthError, RegistryError, TooLargeError
from .fsutil import json_bytes
from .safefs import write_if_changed

log = logging.getLogger(__name__)

# Seconds before a token's stated expiry at which we stop using it (clock skew, slow requests).
TOKEN_EXPIRY_MARGIN = 10
# Registries that omit expires_in mean 60 s (distribution token spec).
DEFAULT_TOKEN_LIFETIME = 60
# The longest single wait between two attempts (backoff or Retry-After), in seconds.
MAX_WAIT = 30
# How often a blob download cut in the middle is resumed (with Range) before it is given up.
RESUME_ATTEMPTS = 5
# Concurrent requests to one registry from one process, unless its settings say otherwise.
DEFAULT_MAX_CONNECTIONS = 8
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Seconds one attempt at an answer may take in all, headers and body, unless the registry's settings
# say otherwise (`deadline`): real answers other than blobs take well under a second, and even a
# tag list of MAX_ANSWER_BYTES arrives in time at 1 MB/s.
DEFAULT_DEADLINE = 120
# Bytes per second a blob download must average beyond the deadline (`min_rate`): 64 KiB/s lets a
# 1 GiB layer take 4.5 hours per attempt on a poor link, while a trickle is stopped within minutes.
DEFAULT_MIN_RATE = 65536
# The most bytes of any other answer read whole (tag list pages, token answers, error bodies); a tag
# list of a few hundred thousand tags is a few MB.
MAX_ANSWER_BYTES = 64 << 20
# Bytes read at once from a body.
CHUNK = 1 << 20
# OpenSSL's complaints when the other end answers a TLS handshake in plain HTTP.
_PLAIN_HTTP_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"}
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_FIRST_NUMBER = re.compile(r"^\s*(\d+)")


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
        value = retry_after.strip()
        if value.isdigit():
            return float(value)
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return -1.0
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)

    def sleep_for_retry(self, response: Any) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is None or retry_after < 0:
            return False  # no (usable) advice: exponential backoff
        wait = min(retry_after, MAX_WAIT)
        log.warning("registry %s: waiting %.1f s as its Retry-After asks", self.registry, wait)
        time.sleep(wait)
        return True

    def increment(self, method: str | None = None, url: str | None = None, *args: Any, **kwargs: Any) -> Retry:
        response = kwargs.get("response") or (args[0] if args else None)
        error = kwargs.get("error") or (args[1] if len(args) > 1 else None)
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
                raise MaxRetryError(kwargs.get("_pool"), url or "", ResponseError(advice))
        exchange = current_exchange()
        expired = exchange is not None and exchange.expired
        if error is not None and not expired and _not_worth_retrying(error):
            raise MaxRetryError(kwargs.get("_pool"), url or "", error) from error
        retry = super().increment(method, url, *args, **kwargs)
        if response is not None:
            what = f"HTTP {response.status}"
        elif expired:
            what = exchange.describe()  # type: ignore[union-attr]
        else:
            what = str(error) if isinstance(error, BodyFailed) else type(error).__name__
        log.warning("registry %s: %s %s: %s; retrying", self.registry, method, _path(url), what)
        return retry


class BodyFailed(ProtocolError):
    """A body that failed after urllib3 handed its answer over, counted against the same retries."""


def _not_worth_retrying(error: BaseException) -> bool:
    """A host name that does not resolve, or a failed TLS handshake, fails the same way again at once."""
    return isinstance(error, NameResolutionError | SSLError)


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
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    retry.registry = registry
    return retry


def resume_backoff(attempt: int) -> float:
    """Seconds to wait before resuming a cut download for the `attempt`-th time (0 for the first)."""
    if attempt <= 0:
        return 0.0
    return min(0.5 * 2**attempt + random.random() * 0.5, MAX_WAIT)


def retries_note(retries: int, retried: bool = True) -> str:
    """How often a failed request was tried again, for its message."""
    if not retried:
        return "not retried"
    return f"retried up to {retries} time{'' if retries == 1 else 's'}"


def _path(url: str | None) -> str:
    """The URL without its query (a token realm's query is harmless, but keep logs short)."""
    return (url or "").split("?", 1)[0]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="..",service=".."` into ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class Failure(NamedTuple):
    """Why a request failed, whether the registry cannot be reached at all, and whether it was retried."""

    reason: str
    unreachable: bool
    retried: bool = True


def describe_failure(
    err: BaseException, timeout: float, registry: str = "", exchange: Exchange | None = None
) -> Failure:
    """A short reason for a failed request, naming the setting or the entry to change."""
    if exchange is not None and exchange.expired:
        return Failure(exchange.describe(), False)
    reason: BaseException | None = err
    for _depth in range(12):  # a chain of causes is short; never loop on a strange one
        if reason is None:
            break
        if isinstance(reason, MaxRetryError) and reason.reason is not None:
            reason = reason.reason
            continue
        if isinstance(reason, ResponseError) and str(reason).startswith("rate limited"):
            return Failure(str(reason), False)
        if isinstance(reason, NameResolutionError):
            host = getattr(getattr(reason, "conn", None), "host", None) or registry
            return Failure(f"cannot resolve host {host!r}; check the registry name in the entry", True, False)
        if isinstance(reason, SSLError | ssl.SSLError):
            return Failure(_tls_failure(reason, registry), True, False)
        if isinstance(reason, NewConnectionError):  # (a subclass of ConnectTimeoutError)
            return Failure("cannot connect (connection refused or host unreachable)", True)
        if isinstance(reason, ConnectTimeoutError | requests.ConnectTimeout):
            return Failure(f"cannot connect within {timeout:g} s (setting timeout)", True)
        if isinstance(reason, ReadTimeoutError | requests.ReadTimeout | TimeoutError):
            return Failure(f"no answer within {timeout:g} s (setting timeout)", False)
        if isinstance(reason, ProtocolError | ConnectionError):
            return Failure("connection dropped by the registry or the network", False)
        nested = reason.args[0] if reason.args and isinstance(reason.args[0], BaseException) else None
        reason = nested or reason.__cause__ or reason.__context__
    return Failure(type(err).__name__, False)


def _tls_failure(err: BaseException, registry: str) -> str:
    """What a failed TLS handshake means, from OpenSSL's reason code."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else cause.__cause__
    code = getattr(cause, "reason", None)
    detail = getattr(cause, "verify_message", None) or code or str(err)
    if code in _PLAIN_HTTP_TLS_REASONS:
        return (
            "the TLS handshake failed: the registry answers plain HTTP; write the entry as "
            f"http://{registry}/..., or set registries: {{{registry}: {{insecure: true}}}} in the config"
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"its TLS certificate is not trusted ({detail}); if a private CA signed it, point "
            "REQUESTS_CA_BUNDLE to that CA's certificate"
        )
    return f"the TLS handshake failed ({detail})"


# Token realms learned from registries' challenges, by registry, shared by every transport of this
# process and saved between runs (`save_realms`), so that even the first request of a run fetches its
# token first instead of collecting a 401.
_REALMS: dict[str, dict[str, str]] = {}


def load_realms(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        _REALMS.update(json.loads(path.read_text()))


def save_realms(path: Path) -> None:
    write_if_changed(path, json_bytes(_REALMS))


@dataclass(frozen=True)
class Cap:
    """The most body bytes accepted from one answer, and how to say it when it has more."""

    size: int
    reason: str  # e.g. "larger than 4194304 bytes (setting limits.manifest_bytes)"


ANSWER_CAP = Cap(MAX_ANSWER_BYTES, f"larger than {MAX_ANSWER_BYTES} bytes, far more than any real answer")


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
    """A requests session for one registry host, with its credentials, token cache and slots."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        timeout: float = 60,
        retries: int = 5,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        deadline: float = DEFAULT_DEADLINE,
        min_rate: float = DEFAULT_MIN_RATE,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.deadline = deadline
        self.min_rate = min_rate
        self.session = requests.Session()
        self._policy = retry_policy(retries, registry)
        adapter = DeadlineAdapter(max_retries=self._policy, pool_maxsize=max(max_connections, 1))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "unpacked/0.1"
        self._slots = threading.BoundedSemaphore(max(max_connections, 1))
        # Streamed answers handed to the caller: their exchange and what they are.
        self._streams: weakref.WeakKeyDictionary[requests.Response, tuple[Exchange, str]] = weakref.WeakKeyDictionary()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._bearer: dict[str, str] | None = None  # the token realm and service, once known
        self._basic = False
        self._lock = threading.Lock()
        self._scope_locks: dict[str, threading.Lock] = {}
        self._unreachable: str | None = None
        self._learning = threading.Lock()
        self._learned = threading.Event()
        if registry in _REALMS:
            self._bearer = dict(_REALMS[registry])
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
        and must close the response (it holds a connection slot and its deadline's watchdog).
        `what` names the registry and what is read, for messages. `blob=True`: the attempt may take
        longer by the bytes received (`min_rate`).
        The first request to a registry goes alone: it learns how the registry authenticates, so the
        concurrent requests behind it fetch their token first instead of each collecting a 401.
        """
        call = _Call(method, url, what or f"registry {self.registry}: {method} {_path(url)}", stream, blob, cap)
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
        return _body(response, exchange, cap, what, self.timeout)

    def _request(self, call: _Call, scope: str, given: dict[str, str] | None) -> requests.Response:
        headers = dict(given or {})
        self._authorize(headers, scope)
        response = self._send(call, headers)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        response.close()
        self._answer_challenge(challenge, scope, headers.get("Authorization"))
        self._authorize(headers, scope)
        response = self._send(call, headers)
        if response.status_code == 401:
            response.close()
            who = f"as {self.credentials.username!r}" if self.credentials else "anonymously"
            msg = (
                f"registry {self.registry}: access denied {who} to {scope}; check the "
                "credentials (~/.docker/config.json or the registry's *_env settings)"
            )
            raise AuthError(msg)
        return response

    def _send(self, call: _Call, headers: dict[str, str], **kwargs: Any) -> requests.Response:
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
                response = self._open(call, headers, exchange, **kwargs)
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
            body = b"".join(_body(response, exchange, call.cap, call.what, self.timeout))
        finally:
            response.close()
            if call.to_registry:
                self._slots.release()
        # requests serves .content, .json() and .text from what was read here.
        response._content = body
        response._content_consumed = True

    def _open(self, call: _Call, headers: dict[str, str], exchange: Exchange, **kwargs: Any) -> requests.Response:
        """Send the request and wait for the headers (urllib3 retries failures up to then)."""
        if call.to_registry:
            self._slots.acquire()
        try:
            with exchange.sending():
                response = self.session.request(
                    call.method, call.url, headers=headers, stream=True, timeout=self.timeout, **kwargs
                )
        except BaseException as err:
            if call.to_registry:
                self._slots.release()
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
        """The caller reads the body; closing the response (once) ends the exchange and frees the slot."""
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
                        self._slots.release()

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

    def _valid_token(self, scope: str) -> str | None:
        with self._lock:
            cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        return None

    def _scope_lock(self, scope: str) -> threading.Lock:
        with self._lock:
            return self._scope_locks.setdefault(scope, threading.Lock())

    def _authorize(self, headers: dict[str, str], scope: str) -> None:
        token = self._valid_token(scope)
        if token is None and self._bearer is not None:
            # The realm is known: fetch this scope's token now rather than after a 401.
            with self._scope_lock(scope):
                token = self._valid_token(scope)
                if token is None:
                    try:
                        self._fetch_token(self._bearer, scope)
                    except RegistryError:
                        if self._bearer is None or _REALMS.get(self.registry) != self._bearer:
                            raise
                        # A realm remembered from an earlier run may be gone: learn it again.
                        with self._lock:
                            self._bearer = None
                            _REALMS.pop(self.registry, None)
                    token = self._valid_token(scope)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif self._basic and self.credentials:
            headers["Authorization"] = requests.auth._basic_auth_str(
                self.credentials.username, self.credentials.password
            )
        else:
            headers.pop("Authorization", None)

    def _answer_challenge(self, challenge: str, scope: str, sent: str | None) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                msg = f"registry {self.registry} asks for a user name and password and none is configured"
                raise AuthError(msg)
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"registry {self.registry}: unsupported authentication challenge {scheme!r}")
        with self._lock:
            self._bearer = {k: v for k, v in params.items() if k != "scope"}
            _REALMS[self.registry] = self._bearer
        with self._scope_lock(scope):
            token = self._valid_token(scope)
            if token is not None and f"Bearer {token}" != sent:
                return  # another thread has just fetched a new one
            self._fetch_token(params, scope)

    def _fetch_token(self, params: dict[str, str], scope: str) -> None:
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        what = f"registry {self.registry}: token server {_path(params['realm'])}"
        call = _Call("GET", params["realm"], what, to_registry=False)
        answer = self._send(call, {}, params=query, auth=auth)
        if answer.status_code in (401, 403):
            who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
            msg = f"registry {self.registry}: token server refused {who} for {scope} (wrong password?)"
            raise AuthError(msg)
        if not answer.ok:
            raise RegistryError(f"registry {self.registry}: token server answered HTTP {answer.status_code}")
        try:
            body = answer.json()
            token = body.get("token") or body["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise RegistryError(f"registry {self.registry}: token server sent no token") from None
        try:
            lifetime = int(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        expiry = time.monotonic() + max(lifetime - TOKEN_EXPIRY_MARGIN, lifetime / 2)
        with self._lock:
            self._tokens[scope] = (token, expiry)


def _body(
    response: requests.Response, exchange: Exchange, cap: Cap | None, what: str, timeout: float
) -> Iterator[bytes]:
    """A body in chunks, reading at most one byte more than `cap` allows, then refusing it."""
    left = cap.size if cap is not None else None
    while True:
        want = CHUNK if left is None else min(CHUNK, left + 1)
        try:
            # read1: what has arrived, at once, so that a blob's progress moves its deadline
            chunk = response.raw.read1(want, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            reason = describe_failure(err, timeout, exchange=exchange).reason
            raise AnswerCutError(f"{what}: {reason}", reason, exchange.expired) from err
        if not chunk:
            break
        if left is not None:
            if len(chunk) > left:
                raise TooLargeError(f"{what}: {cap.reason}; refused")  # type: ignore[union-attr]
            left -= len(chunk)
        exchange.received(len(chunk))
        yield chunk
    if exchange.expired:  # a body without a length just ends when its socket is shut down
        raise AnswerCutError(f"{what}: {exchange.describe()}", exchange.describe(), True)
