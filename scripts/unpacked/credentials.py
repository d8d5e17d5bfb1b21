"""Where registry credentials come from: environment variables and ~/.docker/config.json.

Secrets are returned to the transport only; they never go into logs, errors or state files.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AuthError
from .reference import DOCKER_HUB_NAMES

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the secret by accident
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"


def _config_keys(registry: str) -> list[str]:
    """Keys under which `docker login` may have stored a registry's entry."""
    keys = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"]
    if registry in DOCKER_HUB_NAMES:
        keys.insert(0, DOCKER_HUB_AUTH_KEY)
        keys.extend(("docker.io", "index.docker.io"))
    return keys


def _from_helper(helper: str, server: str) -> Credentials | None:
    """Ask a `docker-credential-<helper>` program, as the Docker credential protocol says."""
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run([program, "get"], input=server, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} named in {docker_config_path()} is not installed") from None
    if done.returncode != 0:
        return None  # "credentials not found" is a normal answer
    try:
        answer = json.loads(done.stdout)
        return Credentials(answer["Username"], answer["Secret"])
    except (ValueError, KeyError):
        raise AuthError(f"credential helper {program} gave an unreadable answer for {server}") from None


def _from_docker_config(registry: str) -> Credentials | None:
    path = docker_config_path()
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise AuthError(f"cannot read docker credentials {path}: {err}") from err
    keys = _config_keys(registry)
    helpers = document.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], key)
    auths = document.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"{path}: the 'auth' entry for {key} is not base64 user:password") from None
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    if document.get("credsStore"):
        return _from_helper(document["credsStore"], keys[0])
    return None


def lookup_credentials(
    registry: str, user_var: str | None = None, password_var: str | None = None
) -> Credentials | None:
    """Credentials for `registry` (as written in the recipe), or None for anonymous access.

    Order: the environment variables named in the registry's settings (`username_env`,
    `password_env`), then the Docker config.
    """
    if user_var and password_var:
        user, password = os.environ.get(user_var), os.environ.get(password_var)
        if user is None or password is None:
            msg = f"registry {registry}: environment variables {user_var} and {password_var} must be set"
            raise AuthError(msg)
        return Credentials(user, password)
    return _from_docker_config(registry)
