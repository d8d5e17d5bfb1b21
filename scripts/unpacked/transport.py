"""HTTP transport for one registry: retries, timeouts and Bearer/Basic authentication.

One policy, in one place: connection errors, 5xx and 429 are retried with exponential backoff and
jitter, honouring `Retry-After`; 4xx answers are never retried. Tokens are cached per scope until
shortly before they expire. Authorization is never sent to another host: requests drops it on a
redirect to a different host, and tokens are only requested from the realm the registry names.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .credentials import Credentials
from .errors import AuthError, RegistryError

log = logging.getLogger(__name__)

# Seconds before a token's stated expiry at which we stop using it (clock skew, slow requests).
TOKEN_EXPIRY_MARGIN = 10
# Registries that omit expires_in mean 60 s (distribution token spec).
DEFAULT_TOKEN_LIFETIME = 60
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def retry_policy(retries: int) -> Retry:
    """Retries of temporary failures only; `backoff_max` bounds each wait."""
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=0.5,
        backoff_jitter=0.5,
        backoff_max=30,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="..",service=".."` into ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class RegistryTransport:
    """A requests session for one registry host, with its credentials and token cache."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        timeout: float = 60,
        retries: int = 5,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry_policy(retries), pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "unpacked/0.1"
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False
        self._lock = threading.Lock()

    def request(self, method: str, url: str, scope: str, **kwargs: Any) -> requests.Response:
        """Send a request, answering one authentication challenge if the registry sends one."""
        kwargs.setdefault("timeout", self.timeout)
        headers = dict(kwargs.pop("headers", {}) or {})
        self._authorize(headers, scope)
        response = self._send(method, url, headers, **kwargs)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        response.close()
        self._answer_challenge(challenge, scope)
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
        try:
            return self.session.request(method, url, headers=headers, **kwargs)
        except requests.RequestException as err:
            msg = f"registry {self.registry}: {method} {url} failed after retries: {type(err).__name__}"
            raise RegistryError(msg) from err

    def _authorize(self, headers: dict[str, str], scope: str) -> None:
        with self._lock:
            cached = self._tokens.get(scope)
            if cached and cached[1] > time.monotonic():
                headers["Authorization"] = f"Bearer {cached[0]}"
                return
        if self._basic and self.credentials:
            headers["Authorization"] = requests.auth._basic_auth_str(
                self.credentials.username, self.credentials.password
            )
        else:
            headers.pop("Authorization", None)

    def _answer_challenge(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                msg = f"registry {self.registry} asks for a user name and password and none is configured"
                raise AuthError(msg)
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"registry {self.registry}: unsupported authentication challenge {scheme!r}")
        self._fetch_token(params, scope)

    def _fetch_token(self, params: dict[str, str], scope: str) -> None:
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        try:
            answer = self.session.get(params["realm"], params=query, auth=auth, timeout=self.timeout)
        except requests.RequestException as err:
            msg = f"registry {self.registry}: token server {params['realm']} unreachable: {type(err).__name__}"
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
        except (ValueError, KeyError):
            raise RegistryError(f"registry {self.registry}: token server sent no token") from None
        lifetime = int(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        expiry = time.monotonic() + max(lifetime - TOKEN_EXPIRY_MARGIN, lifetime / 2)
        with self._lock:
            self._tokens[scope] = (token, expiry)
