"""HTTP transport for one registry: retries, timeouts, politeness and Bearer/Basic authentication.

One retry policy, in one place (`retry_policy`, `RegistryRetry`, `resume_backoff`):
- retried: connection errors, read timeouts, HTTP 429, 500, 502, 503 and 504, for GET and HEAD;
- never retried: any other 4xx (401 is answered once with credentials by `request`, not retried);
- waits: exponential backoff with jitter (0 s, then 1, 2, 4, ... s plus up to 0.5 s), or the
  `Retry-After` the registry sends (seconds or an HTTP date); every single wait is capped at
  `MAX_WAIT` seconds, and a `Retry-After` longer than that ends the retries at once (the error says
  when to come back). So one request waits at most `retries` x `MAX_WAIT` seconds in total (150 s
  with the default 5 retries), plus `timeout` per attempt.
- A body cut in the middle (blob downloads) is resumed by the caller at most `RESUME_ATTEMPTS` times,
  waiting `resume_backoff(n)` between attempts.

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
import threading
import time
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.util.retry import Retry

from .credentials import Credentials
from .errors import AuthError, RegistryError
from .fsutil import json_bytes, write_if_changed

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
        retry = super().increment(method, url, *args, **kwargs)
        what = f"HTTP {response.status}" if response is not None else type(error).__name__
        log.warning("registry %s: %s %s: %s; retrying", self.registry, method, _path(url), what)
        return retry


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


def _path(url: str | None) -> str:
    """The URL without its query (a token realm's query is harmless, but keep logs short)."""
    return (url or "").split("?", 1)[0]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="..",service=".."` into ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def describe_failure(err: BaseException, timeout: float) -> tuple[str, bool]:
    """A short reason for a failed request, and whether the registry could not be connected to."""
    reason: BaseException | None = err
    for _depth in range(12):  # a chain of causes is short; never loop on a strange one
        if reason is None:
            break
        if isinstance(reason, MaxRetryError) and reason.reason is not None:
            reason = reason.reason
            continue
        if isinstance(reason, ResponseError) and str(reason).startswith("rate limited"):
            return str(reason), False
        if isinstance(reason, NewConnectionError):  # (a subclass of ConnectTimeoutError)
            return "cannot connect (connection refused or host unreachable)", True
        if isinstance(reason, ConnectTimeoutError | requests.ConnectTimeout):
            return f"cannot connect within {timeout:g} s (setting timeout)", True
        if isinstance(reason, ReadTimeoutError | requests.ReadTimeout | TimeoutError):
            return f"no answer within {timeout:g} s (setting timeout)", False
        if isinstance(reason, ProtocolError | ConnectionError):
            return "connection dropped by the registry or the network", False
        nested = reason.args[0] if reason.args and isinstance(reason.args[0], BaseException) else None
        reason = nested or reason.__cause__ or reason.__context__
    return type(err).__name__, False


# Token realms learned from registries' challenges, by registry, shared by every transport of this
# process and saved between runs (`save_realms`), so that even the first request of a run fetches its
# token first instead of collecting a 401.
_REALMS: dict[str, dict[str, str]] = {}


def load_realms(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        _REALMS.update(json.loads(path.read_text()))


def save_realms(path: Path) -> None:
    write_if_changed(path, json_bytes(_REALMS))


class RegistryTransport:
    """A requests session for one registry host, with its credentials, token cache and slots."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        timeout: float = 60,
        retries: int = 5,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry_policy(retries, registry), pool_maxsize=max(max_connections, 1))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "unpacked/0.1"
        self._slots = threading.BoundedSemaphore(max(max_connections, 1))
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

    def request(self, method: str, url: str, scope: str, **kwargs: Any) -> requests.Response:
        """Send a request, answering one authentication challenge if the registry sends one.

        With `stream=True` the caller must close the response (it holds a connection slot).
        The first request to a registry goes alone: it learns how the registry authenticates, so the
        concurrent requests behind it fetch their token first instead of each collecting a 401.
        """
        if not self._learned.is_set():
            with self._learning:
                if not self._learned.is_set():
                    try:
                        return self._request(method, url, scope, **kwargs)
                    finally:
                        self._learned.set()
        return self._request(method, url, scope, **kwargs)

    def _request(self, method: str, url: str, scope: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        headers = dict(kwargs.pop("headers", {}) or {})
        self._authorize(headers, scope)
        response = self._send(method, url, headers, **kwargs)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        response.close()
        self._answer_challenge(challenge, scope, headers.get("Authorization"))
        self._authorize(headers, scope)
        response = self._send(method, url, headers, **kwargs)
        if response.status_code == 401:
            response.close()
            who = f"as {self.credentials.username!r}" if self.credentials else "anonymously"
            msg = (
                f"registry {self.registry}: access denied {who} to {scope}; check the "
                "credentials (~/.docker/config.json or the registry's *_env settings)"
            )
            raise AuthError(msg)
        return response

    def _send(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
        if self._unreachable:
            raise RegistryError(f"registry {self.registry}: {method} {_path(url)} not sent: {self._unreachable}")
        self._slots.acquire()
        try:
            response = self.session.request(method, url, headers=headers, **kwargs)
        except requests.RequestException as err:
            self._slots.release()
            reason, unreachable = describe_failure(err, self.timeout)
            if unreachable:
                self._unreachable = f"unreachable earlier in this run ({reason})"
            msg = f"registry {self.registry}: {method} {_path(url)} failed (up to {self.retries} retries): {reason}"
            raise RegistryError(msg) from err
        except BaseException:
            self._slots.release()
            raise
        self._note_rate_limit(response)
        if kwargs.get("stream"):
            _release_on_close(response, self._slots)
        else:
            self._slots.release()
        return response

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
        try:
            answer = self.session.get(params["realm"], params=query, auth=auth, timeout=self.timeout)
        except requests.RequestException as err:
            reason, _ = describe_failure(err, self.timeout)
            msg = f"registry {self.registry}: token server {_path(params['realm'])} unreachable: {reason}"
            raise RegistryError(msg) from err
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


def _release_on_close(response: requests.Response, slots: threading.BoundedSemaphore) -> None:
    """Give the connection slot back when the streamed response is closed (once)."""
    close = response.close
    released = threading.Event()

    def close_and_release() -> None:
        try:
            close()
        finally:
            if not released.is_set():
                released.set()
                slots.release()

    response.close = close_and_release  # type: ignore[method-assign]
