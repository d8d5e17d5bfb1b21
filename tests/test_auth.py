"""Authentication by table: challenges, token lifetimes, the realm cache and the header for a scope.

No network: the token server is a function that answers what each case says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from unpacked.auth import (
    DEFAULT_TOKEN_LIFETIME,
    Authenticator,
    RealmCache,
    RegistryAuth,
    parse_challenge,
    token_lifetime,
    token_use_for,
)
from unpacked.credentials import Credentials
from unpacked.errors import AuthError, RegistryError

REGISTRY = "reg.example"
REALM = {"realm": "https://auth.example/token", "service": "reg.example"}
USER = Credentials("alice", "secret")


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (
            'Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull"',
            ("bearer", {**REALM, "scope": "repository:a/b:pull"}),
        ),
        ('Bearer realm="https://auth.example/token", service="reg.example"', ("bearer", REALM)),
        ('  BEARER realm="x"  ', ("bearer", {"realm": "x"})),
        ('Basic realm="Registry Realm"', ("basic", {"realm": "Registry Realm"})),
        ("Basic", ("basic", {})),
        ("Negotiate abc", ("negotiate", {})),
        ("", ("", {})),
        ('Bearer realm="a",error="invalid_token"', ("bearer", {"realm": "a", "error": "invalid_token"})),
        ('Bearer realm=""', ("bearer", {"realm": ""})),
    ],
)
def test_parse_challenge(header: str, parsed: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == parsed


@pytest.mark.parametrize(
    ("answer", "lifetime"),
    [
        ({"token": "t", "expires_in": 300}, 300),
        ({"token": "t", "expires_in": "120"}, 120),
        ({"token": "t"}, DEFAULT_TOKEN_LIFETIME),  # the distribution spec's default
        ({"token": "t", "expires_in": None}, DEFAULT_TOKEN_LIFETIME),
        ({"token": "t", "expires_in": 0}, DEFAULT_TOKEN_LIFETIME),
        ({"token": "t", "expires_in": "soon"}, DEFAULT_TOKEN_LIFETIME),
        ({"token": "t", "expires_in": [1]}, DEFAULT_TOKEN_LIFETIME),
    ],
)
def test_token_lifetime(answer: dict[str, object], lifetime: int) -> None:
    assert token_lifetime(answer) == lifetime


@pytest.mark.parametrize(
    ("lifetime", "used"),
    [
        (300, 290),  # up to 10 s before it expires
        (60, 50),
        (20, 10),
        (10, 5),  # short-lived: at least half its life
        (4, 2),
        (0, 0),
    ],
)
def test_token_use_for(lifetime: int, used: float) -> None:
    assert token_use_for(lifetime) == used


def _answer(status: int, body: object) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return response


class TokenServer:
    """Answers token requests with the given answers in turn, and records them."""

    def __init__(self, *answers: requests.Response) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, dict[str, str], tuple[str, str] | None]] = []

    def __call__(self, url: str, what: str, query: dict[str, str], basic: tuple[str, str] | None) -> requests.Response:
        self.asked.append((url, query, basic))
        return self.answers.pop(0)


def _authenticator(
    server: TokenServer, realms: RealmCache | None = None, credentials: Credentials | None = None
) -> Authenticator:
    return Authenticator(REGISTRY, credentials, realms if realms is not None else RealmCache(), server)


@pytest.mark.parametrize(
    ("realms", "answers", "header"),
    [
        ({}, [], None),  # realm unknown: nothing sent until the registry challenges
        ({REGISTRY: REALM}, [_answer(200, {"token": "abc"})], "Bearer abc"),  # known: fetched first
        ({REGISTRY: REALM}, [_answer(200, {"access_token": "xyz"})], "Bearer xyz"),  # OAuth2's name
        ({REGISTRY: REALM}, [_answer(503, {})], None),  # a remembered realm that fails: learned again
        ({"other.example": REALM}, [], None),
    ],
)
def test_header_for_a_scope(
    realms: dict[str, dict[str, str]], answers: list[requests.Response], header: str | None
) -> None:
    assert _authenticator(TokenServer(*answers), RealmCache(realms)).header("repository:a:pull") == header


def test_a_remembered_realm_that_fails_is_forgotten() -> None:
    realms = RealmCache({REGISTRY: REALM})
    _authenticator(TokenServer(_answer(503, {})), realms).header("repository:a:pull")
    assert realms.get(REGISTRY) is None


def test_a_token_is_fetched_once_per_scope() -> None:
    server = TokenServer(_answer(200, {"token": "abc", "expires_in": 300}))
    auth = _authenticator(server, RealmCache({REGISTRY: REALM}))
    headers = [auth.header("repository:a:pull") for _ in range(3)]
    assert (headers, len(server.asked)) == (["Bearer abc"] * 3, 1)


def test_the_token_request_names_scope_and_service_and_sends_the_credentials() -> None:
    server = TokenServer(_answer(200, {"token": "abc"}))
    _authenticator(server, RealmCache({REGISTRY: REALM}), USER).header("repository:a:pull")
    assert server.asked == [
        (REALM["realm"], {"scope": "repository:a:pull", "service": "reg.example"}, ("alice", "secret"))
    ]


@pytest.mark.parametrize(
    ("challenge", "credentials", "answers", "error"),
    [
        ('Basic realm="r"', None, [], "asks for a user name and password and none is configured"),
        ("Negotiate", USER, [], "unsupported authentication challenge 'negotiate'"),
        ('Bearer service="no realm"', USER, [], "unsupported authentication challenge 'bearer'"),
        ('Bearer realm="https://auth.example/token"', USER, [_answer(401, {})], "token server refused user 'alice'"),
        ('Bearer realm="https://auth.example/token"', None, [_answer(403, {})], "refused anonymous access"),
        ('Bearer realm="https://auth.example/token"', None, [_answer(500, {})], "token server answered HTTP 500"),
        ('Bearer realm="https://auth.example/token"', None, [_answer(200, {"no": "token"})], "sent no token"),
        ('Bearer realm="https://auth.example/token"', None, [_answer(200, b"<html>")], "sent no token"),
        ('Bearer realm="https://auth.example/token"', None, [_answer(200, ["token"])], "sent no token"),
    ],
)
def test_challenges_that_cannot_be_answered(
    challenge: str, credentials: Credentials | None, answers: list[requests.Response], error: str
) -> None:
    auth = _authenticator(TokenServer(*answers), credentials=credentials)
    with pytest.raises(RegistryError, match=error):
        auth.answer_challenge(challenge, "repository:a:pull", None)


def test_a_refused_password_is_an_auth_error() -> None:
    auth = _authenticator(TokenServer(_answer(401, {})), credentials=USER)
    with pytest.raises(AuthError):
        auth.answer_challenge('Bearer realm="https://auth.example/token"', "repository:a:pull", None)


@pytest.mark.parametrize(
    ("challenge", "credentials", "header"),
    [
        ('Basic realm="r"', USER, "Basic YWxpY2U6c2VjcmV0"),
        ('Bearer realm="https://auth.example/token",service="reg.example"', None, "Bearer abc"),
        ('Bearer realm="https://auth.example/token",service="reg.example"', USER, "Bearer abc"),
    ],
)
def test_a_scope_after_its_challenge(challenge: str, credentials: Credentials | None, header: str) -> None:
    scoped = RegistryAuth(_authenticator(TokenServer(_answer(200, {"token": "abc"})), credentials=credentials), "s")
    scoped.answer(challenge)
    assert scoped.header == header


def test_a_bearer_challenge_is_remembered_without_its_scope() -> None:
    realms = RealmCache()
    auth = _authenticator(TokenServer(_answer(200, {"token": "abc"})), realms)
    auth.answer_challenge(
        'Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a:pull"', "s", None
    )
    assert realms.snapshot() == {REGISTRY: REALM}


@pytest.mark.parametrize(
    ("header", "sent"),
    [("Bearer abc", "Bearer abc"), ("Basic YWxpY2U6c2VjcmV0", "Basic YWxpY2U6c2VjcmV0"), (None, None)],
)
def test_registry_auth_sets_the_header_of_its_request(header: str | None, sent: str | None) -> None:
    scoped = RegistryAuth(_authenticator(TokenServer()), "s")
    scoped.header = header
    request = requests.Request("GET", "http://reg.example/v2/", headers={"Authorization": "stale"}).prepare()
    assert scoped(request).headers.get("Authorization") == sent


@pytest.mark.parametrize(
    ("known", "registry", "params", "forgotten"),
    [
        ({REGISTRY: REALM}, REGISTRY, REALM, True),
        ({REGISTRY: REALM}, REGISTRY, {"realm": "https://other.example/token"}, False),  # learned anew since
        ({}, REGISTRY, REALM, False),
    ],
)
def test_realm_cache_forgets_only_the_realm_it_has(
    known: dict[str, dict[str, str]], registry: str, params: dict[str, str], forgotten: bool
) -> None:
    assert RealmCache(known).forget(registry, params) is forgotten


def test_realm_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "realms.json"
    RealmCache({REGISTRY: REALM}).save(path)
    loaded = RealmCache()
    loaded.load(path)
    assert loaded.snapshot() == {REGISTRY: REALM}


@pytest.mark.parametrize("content", [None, "", "not json", "[1, 2"])
def test_realm_cache_ignores_a_missing_or_broken_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "realms.json"
    if content is not None:
        path.write_text(content)
    cache = RealmCache()
    cache.load(path)
    assert cache.snapshot() == {}
