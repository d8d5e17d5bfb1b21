"""Bearer and Basic authentication for one registry, with its token cache and the token realms known.

Tokens are cached per scope until shortly before they expire, fetched once per scope even when
threads race, and fetched ahead of a request once the registry's token realm is known (no 401 round
trip per repository). The realms come from a `RealmCache` the caller owns: it may load them from an
earlier run and save them for the next, so that even a run's first request fetches its token first.
Authorization is never sent to another host: requests drops it on a redirect to a different host
(and does not call the auth again), and tokens are only requested from the realm the registry names.
Nothing here logs a credential or a token.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
from requests.auth import AuthBase, _basic_auth_str

from .credentials import Credentials
from .errors import AuthError, RegistryError
from .fsutil import json_bytes
from .safefs import write_if_changed

# Seconds before a token's stated expiry at which we stop using it (clock skew, slow requests).
TOKEN_EXPIRY_MARGIN = 10
# Registries that omit expires_in mean 60 s (distribution token spec).
DEFAULT_TOKEN_LIFETIME = 60
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')

# Sends a GET to a token server: (url, what it is for messages, query, Basic credentials or None).
TokenFetch = Callable[[str, str, dict[str, str], tuple[str, str] | None], requests.Response]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split `Bearer realm="..",service=".."` into ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def token_lifetime(answer: Mapping[str, Any]) -> int:
    """Seconds a token server's answer says its token lasts (`expires_in`, else the spec's default)."""
    try:
        return int(answer.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
    except (TypeError, ValueError):
        return DEFAULT_TOKEN_LIFETIME


def token_use_for(lifetime: int) -> float:
    """Seconds a token of `lifetime` is used: up to the margin before it expires, at least half of it."""
    return max(lifetime - TOKEN_EXPIRY_MARGIN, lifetime / 2)


class RealmCache:
    """Token realms (realm, service) learned from registries' challenges, by registry; thread-safe.

    One object is shared by every client of a run, so one registry's realm is learned once.
    """

    def __init__(self, realms: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._realms: dict[str, dict[str, str]] = {k: dict(v) for k, v in (realms or {}).items()}
        self._lock = threading.Lock()

    def load(self, path: Path) -> None:
        """Add the realms saved in `path` (a missing or unreadable file adds nothing)."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            saved = json.loads(path.read_text())
            with self._lock:
                self._realms.update(saved)

    def save(self, path: Path) -> None:
        write_if_changed(path, json_bytes(self.snapshot()))

    def snapshot(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {k: dict(v) for k, v in self._realms.items()}

    def get(self, registry: str) -> dict[str, str] | None:
        with self._lock:
            found = self._realms.get(registry)
            return dict(found) if found is not None else None

    def remember(self, registry: str, params: Mapping[str, str]) -> None:
        with self._lock:
            self._realms[registry] = dict(params)

    def forget(self, registry: str, params: Mapping[str, str]) -> bool:
        """Forget `registry`'s realm if it is still `params`; whether it was."""
        with self._lock:
            if self._realms.get(registry) != params:
                return False
            del self._realms[registry]
            return True


class TokenCache:
    """Bearer tokens by scope until they are due to expire, and one lock per scope for fetching."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, scope: str) -> str | None:
        with self._lock:
            cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        return None

    def put(self, scope: str, token: str, lifetime: int) -> None:
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + token_use_for(lifetime))

    def lock(self, scope: str) -> threading.Lock:
        """The lock that makes racing threads fetch one scope's token once."""
        with self._lock:
            return self._locks.setdefault(scope, threading.Lock())


class RegistryAuth(AuthBase):
    """The Authorization of requests to one registry for one scope (`Authenticator.for_scope`).

    Its header is fixed when it is made (the token fetched first if need be), so every attempt of
    the request sends the same one, and answering a challenge says which one was refused. (Given an
    auth, requests no longer lets a ~/.netrc entry replace the header.)
    """

    def __init__(self, authenticator: Authenticator, scope: str) -> None:
        self.authenticator = authenticator
        self.scope = scope
        self.header = authenticator.header(scope)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.header is not None:
            request.headers["Authorization"] = self.header
        else:
            request.headers.pop("Authorization", None)
        return request

    def answer(self, challenge: str) -> None:
        """Learn from a 401's `WWW-Authenticate`, then take the header that answers it."""
        self.authenticator.answer_challenge(challenge, self.scope, self.header)
        self.header = self.authenticator.header(self.scope)


class Authenticator:
    """How one registry authenticates (its realm, or Basic), with its credentials and token cache."""

    def __init__(self, registry: str, credentials: Credentials | None, realms: RealmCache, fetch: TokenFetch) -> None:
        self.registry = registry
        self.credentials = credentials
        self.realms = realms
        self.tokens = TokenCache()
        self._fetch = fetch
        self._lock = threading.Lock()
        self._bearer = realms.get(registry)  # the token realm and service, once known
        self._basic = False

    @property
    def realm_known(self) -> bool:
        return self._bearer is not None

    def for_scope(self, scope: str) -> RegistryAuth:
        return RegistryAuth(self, scope)

    def header(self, scope: str) -> str | None:
        """The Authorization for `scope`, fetching its token first once the realm is known."""
        token = self.tokens.get(scope)
        bearer = self._bearer
        if token is None and bearer is not None:
            # The realm is known: fetch this scope's token now rather than after a 401.
            with self.tokens.lock(scope):
                token = self.tokens.get(scope)
                if token is None:
                    try:
                        self._fetch_token(bearer, scope)
                    except RegistryError:
                        # A realm remembered from an earlier run may be gone: learn it again.
                        if not self.realms.forget(self.registry, bearer):
                            raise
                        with self._lock:
                            self._bearer = None
                    token = self.tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        if self._basic and self.credentials:
            return _basic_auth_str(self.credentials.username, self.credentials.password)
        return None

    def answer_challenge(self, challenge: str, scope: str, sent: str | None) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                msg = f"registry {self.registry} asks for a user name and password and none is configured"
                raise AuthError(msg)
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"registry {self.registry}: unsupported authentication challenge {scheme!r}")
        bearer = {k: v for k, v in params.items() if k != "scope"}
        with self._lock:
            self._bearer = bearer
        self.realms.remember(self.registry, bearer)
        with self.tokens.lock(scope):
            token = self.tokens.get(scope)
            if token is not None and f"Bearer {token}" != sent:
                return  # another thread has just fetched a new one
            self._fetch_token(params, scope)

    def _fetch_token(self, params: Mapping[str, str], scope: str) -> None:
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        basic = (self.credentials.username, self.credentials.password) if self.credentials else None
        realm = params["realm"]
        answer = self._fetch(realm, f"registry {self.registry}: token server {realm.split('?', 1)[0]}", query, basic)
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
        self.tokens.put(scope, token, token_lifetime(body))
