"""credentials.py by table: where a registry's credentials come from (environment, Docker config
entries, helpers), and what is refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from unpacked.credentials import Credentials, lookup_credentials
from unpacked.errors import AuthError


def auth(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


HUB = "https://index.docker.io/v1/"

# (Docker config document, registry as the recipe writes it, credentials found)
FROM_DOCKER_CONFIG: list[tuple[dict[str, Any], str, Credentials | None]] = [
    ({}, "quay.io", None),
    ({"auths": {}}, "quay.io", None),
    ({"auths": {"quay.io": {"auth": auth("u:p")}}}, "quay.io", Credentials("u", "p")),
    ({"auths": {"https://quay.io": {"auth": auth("u:p")}}}, "quay.io", Credentials("u", "p")),
    ({"auths": {"http://quay.io": {"auth": auth("u:p")}}}, "quay.io", Credentials("u", "p")),
    ({"auths": {"https://quay.io/v1/": {"username": "u", "password": "p"}}}, "quay.io", Credentials("u", "p")),
    ({"auths": {"quay.io": {"auth": auth("u:p:with:colons")}}}, "quay.io", Credentials("u", "p:with:colons")),
    ({"auths": {"quay.io:443": {"auth": auth("u:p")}}}, "quay.io", None),  # another host[:port]
    ({"auths": {"other.io": {"auth": auth("u:p")}}}, "quay.io", None),
    ({"auths": {"quay.io": {}}}, "quay.io", None),
    ({"auths": {"quay.io": {"username": "u"}}}, "quay.io", None),  # no password
    (  # an empty entry does not hide the next key's
        {"auths": {"quay.io": {"auth": ""}, "https://quay.io": {"auth": auth("u:p")}}},
        "quay.io",
        Credentials("u", "p"),
    ),
    (  # the bare host is asked first
        {"auths": {"https://quay.io": {"auth": auth("c:d")}, "quay.io": {"auth": auth("a:b")}}},
        "quay.io",
        Credentials("a", "b"),
    ),
    ({"auths": {HUB: {"auth": auth("hub:pw")}}}, "registry.hub.docker.com", Credentials("hub", "pw")),
    ({"auths": {HUB: {"auth": auth("hub:pw")}}}, "docker.io", Credentials("hub", "pw")),
    ({"auths": {"index.docker.io": {"auth": auth("hub:pw")}}}, "registry-1.docker.io", Credentials("hub", "pw")),
    ({"auths": {HUB: {"auth": auth("hub:pw")}}}, "quay.io", None),  # Docker Hub's entry is Docker Hub's
    ({"auths": {"localhost:5000": {"auth": auth("l:p")}}}, "localhost:5000", Credentials("l", "p")),
]


@pytest.mark.parametrize(("document", "registry", "expected"), FROM_DOCKER_CONFIG)
def test_credentials_from_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: dict[str, Any], registry: str, expected: object
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(document))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert lookup_credentials(registry) == expected


# (Docker config file content, what the refusal says)
BAD_DOCKER_CONFIGS = [
    ("{", "cannot read docker credentials"),
    (json.dumps({"auths": {"quay.io": {"auth": "abc"}}}), "the 'auth' entry for quay.io is not base64 user:password"),
    (json.dumps({"auths": {"quay.io": {"auth": "/w=="}}}), "the 'auth' entry for quay.io is not base64"),  # 0xff
    (json.dumps({"credHelpers": {"quay.io": "nope-x1"}}), "credential helper docker-credential-nope-x1 named in"),
    (json.dumps({"credsStore": "nope-x2"}), "credential helper docker-credential-nope-x2 named in"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_DOCKER_CONFIGS)
def test_unusable_docker_config_is_an_auth_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, fragment: str
) -> None:
    (tmp_path / "config.json").write_text(text)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker-credential-* program anywhere
    with pytest.raises(AuthError) as info:
        lookup_credentials("quay.io")
    assert fragment in str(info.value)


def test_no_docker_config_at_all_is_anonymous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nothing"))
    assert lookup_credentials("quay.io") is None


# (settings, environment, credentials) -- the Docker config holds other credentials for every case
FROM_ENVIRONMENT: list[tuple[dict[str, str], dict[str, str], Credentials | None]] = [
    ({"username_env": "U", "password_env": "P"}, {"U": "eu", "P": "ep"}, Credentials("eu", "ep")),
    ({"username_env": "U", "password_env": "P"}, {"U": "", "P": ""}, Credentials("", "")),  # set, if empty
    ({"username_env": "U"}, {"U": "eu", "P": "ep"}, Credentials("file", "fp")),  # both names, or the file
    ({"password_env": "P"}, {"U": "eu", "P": "ep"}, Credentials("file", "fp")),
    ({}, {"U": "eu", "P": "ep"}, Credentials("file", "fp")),
]


@pytest.mark.parametrize(("settings", "environment", "expected"), FROM_ENVIRONMENT)
def test_credentials_from_the_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, str],
    environment: dict[str, str],
    expected: Credentials | None,
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"quay.io": {"auth": auth("file:fp")}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert lookup_credentials("quay.io", settings.get("username_env"), settings.get("password_env")) == expected


@pytest.mark.parametrize("unset", ["U", "P"])
def test_named_but_unset_variables_are_an_error(monkeypatch: pytest.MonkeyPatch, unset: str) -> None:
    monkeypatch.setenv("U", "u")
    monkeypatch.setenv("P", "p")
    monkeypatch.delenv(unset)
    with pytest.raises(AuthError) as info:
        lookup_credentials("quay.io", "U", "P")
    assert str(info.value) == "registry quay.io: environment variables U and P must be set"


@pytest.mark.parametrize("credentials", [Credentials("u", "s3cret-pass"), Credentials("", "s3cret-pass")])
def test_credentials_never_show_the_password(credentials: Credentials) -> None:
    assert "s3cret" not in repr(credentials) + str(credentials) + f"{credentials!r}"
