"""Credentials (Docker config `auths`, `credHelpers`, `credsStore`, environment) and registry mirrors.

Real registries on 127.0.0.1: a token-authenticated one that refuses anonymous pulls, and plain ones
playing a mirror and a registry that is down. The workflow tests grep everything a run leaves behind
(Snakemake's log and output, job logs, state, failure records, published metadata) for the password,
its base64 form and every token the token server issued.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from unpacked.config import validate_config
from unpacked.recipe import parse_recipe
from unpacked.resolve import Resolver
from unpacked.state import Resolution
from unpacked.store import store_for

from support import oci
from support.registry import LocalRegistry
from support.tokenserver import TokenServer
from support.workflow import run_workflow, workflow_env, write_config

UNPACKED = [sys.executable, "-m", "unpacked.cli"]


def small_image(marker: str) -> oci.Image:
    layer = oci.TarLayer().add_dir("etc").add_file("etc/marker", f"{marker}\n".encode()).tar_bytes()
    return oci.build_image([layer])


def record_tokens(server: TokenServer) -> list[str]:
    """Every token `server` issues from now on (the server's own `issue`, wrapped)."""
    issued: list[str] = []
    real = server.issue

    def issue(user: str | None, scopes: list[str], service: str | None = None) -> str:
        token = real(user, scopes, service)
        issued.append(token)
        return token

    server.issue = issue  # type: ignore[method-assign]
    return issued


def install_helper(bin_dir: Path, name: str, answers: dict[str, dict[str, str]]) -> Path:
    """A real `docker-credential-<name>` program: `get` reads a server URL on stdin, answers JSON.

    It logs the servers it was asked about (never the secret) to `<name>.asked`.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    asked = bin_dir / f"{name}.asked"
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(
        "#!" + sys.executable + "\n"
        "import json, sys\n"
        f"answers = {json.dumps(answers)}\n"
        "if sys.argv[1:] != ['get']:\n"
        "    sys.exit(2)\n"
        "server = sys.stdin.read().strip()\n"
        f"with open({str(asked)!r}, 'a') as log:\n"
        "    log.write(server + '\\n')\n"
        "if server not in answers:\n"
        "    print('credentials not found in native keychain')\n"
        "    sys.exit(1)\n"
        "print(json.dumps(dict(answers[server], ServerURL=server)))\n"
    )
    program.chmod(0o755)
    return asked


def everything_written(directory: Path, *outputs: str) -> dict[str, str]:
    """Every file a run left (logs, state, failures, metadata, Snakemake's logs) and its outputs."""
    found = {f"output {i}": text for i, text in enumerate(outputs)}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink() and ".flat" not in path.parts and "blobs" not in path.parts:
            found[str(path.relative_to(directory))] = path.read_text(errors="replace")
    return found


def assert_no_secret(texts: dict[str, str], secrets: list[str]) -> None:
    assert secrets and all(len(s) >= 8 for s in secrets)
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {where}"


def workflow_dir(top: Path, recipe: list[str], registries: dict[str, Any], docker_config: dict[str, Any]) -> Path:
    directory = top / "run"
    (directory / "config").mkdir(parents=True)
    (directory / "config" / "recipe.yaml").write_text(json.dumps(recipe))
    (directory / "config" / "config.yaml").write_text(json.dumps({"registries": registries}))
    (top / "docker").mkdir()
    (top / "docker" / "config.json").write_text(json.dumps(docker_config))
    return directory


@pytest.fixture
def private(make_registry: Callable[..., LocalRegistry]) -> LocalRegistry:
    """A token registry whose token server refuses anonymous pulls."""
    return make_registry("token", allow_anonymous_pull=False)


# -------------------------------------------------------------------------------------------------
# Whole workflow: no secret anywhere
# -------------------------------------------------------------------------------------------------


@pytest.mark.workflow
def test_creds_store_workflow_leaks_no_secret(private: LocalRegistry, tmp_path: Path) -> None:
    assert private.username and private.password and private.token_server
    image = small_image("private")
    oci.push(private, "team/app", "1.0", image)
    tokens = record_tokens(private.token_server)
    asked = install_helper(
        tmp_path / "bin", "teststore", {private.host: {"Username": private.username, "Secret": private.password}}
    )
    directory = workflow_dir(
        tmp_path,
        [f"http://{private.host}/team/app:1.0"],
        {private.host: {"insecure": True}},
        {"credsStore": "teststore"},
    )
    env = dict(
        os.environ,
        DOCKER_CONFIG=str(tmp_path / "docker"),
        PATH=f"{tmp_path / 'bin'}:{workflow_env()['PATH']}",
    )
    done = run_workflow(directory, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    link = directory / "output" / private.host / "team/app:1.0"
    assert (link.parent / os.readlink(link) / "etc/marker").read_text() == "private\n"
    # The helper was asked (by the resolver and by the fetch jobs), and the token server saw the user.
    assert set(asked.read_text().split()) == {private.host}
    assert tokens, "the registry needed tokens"
    assert {r.user for r in private.token_server.requests if r.path == "/token"} == {private.username}
    # A verbose resolution too: DEBUG logging of every request.
    verbose = subprocess.run(
        [*UNPACKED, "-v", "resolve", "--config", "config/config.yaml"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr
    basic = base64.b64encode(f"{private.username}:{private.password}".encode()).decode()
    texts = everything_written(directory, done.stdout, done.stderr, verbose.stdout, verbose.stderr)
    assert any("metadata" in where for where in texts) and any("logs" in where for where in texts)
    assert_no_secret(texts, [private.password, basic, *tokens])


@pytest.mark.workflow
def test_wrong_password_fails_clearly_and_leaks_no_secret(private: LocalRegistry, tmp_path: Path) -> None:
    assert private.username and private.password and private.token_server
    oci.push(private, "team/app", "1.0", small_image("private"))
    tokens = record_tokens(private.token_server)
    wrong = "not-the-password-31415"
    auth = base64.b64encode(f"{private.username}:{wrong}".encode()).decode()
    directory = workflow_dir(
        tmp_path,
        [f"http://{private.host}/team/app:1.0"],
        {private.host: {"insecure": True}},
        {"auths": {private.host: {"auth": auth}}},
    )
    env = workflow_env(DOCKER_CONFIG=str(tmp_path / "docker"))
    done = run_workflow(directory, env=env)
    assert done.returncode != 0
    assert f"token server refused user {private.username!r}" in done.stderr
    assert "wrong password?" in done.stderr
    resolved = json.loads((directory / "work/state/resolved.json").read_text())
    assert len(resolved["failures"]) == 1 and "wrong password?" in resolved["failures"][0]["error"]
    assert not (directory / "output" / private.host).exists()
    texts = everything_written(directory, done.stdout, done.stderr)
    assert_no_secret(texts, [wrong, auth, private.password, *tokens])


@pytest.mark.workflow
def test_the_users_own_docker_config_is_never_read(make_registry: Callable[..., LocalRegistry], tmp_path: Path) -> None:
    """tests/conftest.py gives every test an empty DOCKER_CONFIG, so a credential in the real home's
    ~/.docker/config.json is not used: here a fake home holds a wrong password for this very registry,
    which would fail the pull, while anonymous pulls are allowed."""
    registry = make_registry("token")  # its token server lets anonymous callers pull
    assert registry.token_server
    oci.push(registry, "team/app", "1.0", small_image("anonymous"))
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    wrong = base64.b64encode(b"intruder:not-the-password-27182").decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": wrong}}}))
    asked_before = len(registry.token_server.requests)

    directory = tmp_path / "run"
    write_config(directory, [f"http://{registry.host}/team/app:1.0"], {registry.host: {"insecure": True}})
    done = run_workflow(directory, env=workflow_env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache")))
    assert done.returncode == 0, done.stderr[-4000:]
    link = directory / "output" / registry.host / "team/app:1.0"
    assert (link.parent / os.readlink(link) / "etc/marker").read_text() == "anonymous\n"
    users = {r.user for r in registry.token_server.requests[asked_before:] if r.path == "/token"}
    assert users == {None}, "only anonymous token requests: the home's credential was not sent"
    isolated = Path(os.environ["DOCKER_CONFIG"])
    assert not isolated.is_relative_to(home) and not any(isolated.iterdir())


# -------------------------------------------------------------------------------------------------
# Resolver level: credHelpers and environment variables against the token registry
# -------------------------------------------------------------------------------------------------


def resolve(tmp_path: Path, registries: dict[str, Any], *entries: str) -> Resolution:
    config = validate_config({"registries": registries, "work_dir": str(tmp_path / "work")})
    return Resolver(config, store_for(config)).run(parse_recipe(list(entries)))


def test_cred_helpers_per_registry(private: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert private.username and private.password and private.token_server
    image = small_image("helpers")
    oci.push(private, "team/app", "1.0", image)
    asked = install_helper(
        tmp_path / "bin", "perhost", {private.host: {"Username": private.username, "Secret": private.password}}
    )
    (tmp_path / "docker").mkdir()
    # credHelpers wins over a (wrong) auths entry and over credsStore for its registry.
    wrong = base64.b64encode(f"{private.username}:wrong-password".encode()).decode()
    document = {"credHelpers": {private.host: "perhost"}, "auths": {private.host: {"auth": wrong}}, "credsStore": "x"}
    (tmp_path / "docker" / "config.json").write_text(json.dumps(document))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    result = resolve(tmp_path, {private.host: {"insecure": True}}, f"{private.host}/team/app:1.0")
    assert result.failures == []
    assert result.images[f"{private.host}/team/app:1.0"].manifest_digest == image.digest
    assert asked.read_text().split() == [private.host]


def test_environment_variables_win(private: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert private.username and private.password
    image = small_image("env")
    oci.push(private, "team/app", "1.0", image)
    (tmp_path / "docker").mkdir()
    wrong = base64.b64encode(f"{private.username}:wrong-password".encode()).decode()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {private.host: {"auth": wrong}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("TEST_REG_USER", private.username)
    monkeypatch.setenv("TEST_REG_PASS", private.password)
    settings = {"insecure": True, "username_env": "TEST_REG_USER", "password_env": "TEST_REG_PASS"}
    result = resolve(tmp_path, {private.host: settings}, f"{private.host}/team/app:1.0")
    assert result.failures == []
    assert result.images[f"{private.host}/team/app:1.0"].manifest_digest == image.digest
    monkeypatch.delenv("TEST_REG_PASS")
    failure = resolve(tmp_path / "again", {private.host: settings}, f"{private.host}/team/app:1.0").failures[0]
    assert "TEST_REG_USER and TEST_REG_PASS must be set" in failure.error


# -------------------------------------------------------------------------------------------------
# Mirrors
# -------------------------------------------------------------------------------------------------


def requests_in(reg: LocalRegistry) -> int:
    log = reg.log
    return log.count('"GET /v2/') + log.count('"HEAD /v2/')


@pytest.mark.workflow
def test_mirror_serves_while_upstream_is_down(make_registry: Callable[..., LocalRegistry], tmp_path: Path) -> None:
    mirror, upstream = make_registry(), make_registry()
    image = small_image("mirrored")
    oci.push(mirror, "team/app", "1.0", image)
    upstream.stop()  # nothing listens on its port any more
    directory = workflow_dir(
        tmp_path,
        [f"http://{upstream.host}/team/app:1.0"],
        {upstream.host: {"insecure": True, "retries": 0, "mirrors": [f"http://{mirror.host}"]}},
        {},
    )
    env = workflow_env(DOCKER_CONFIG=str(tmp_path / "docker"))
    done = run_workflow(directory, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    # Published under the upstream registry's name, with the image the mirror served.
    link = directory / "output" / upstream.host / "team/app:1.0"
    assert (link.parent / os.readlink(link) / "etc/marker").read_text() == "mirrored\n"
    record = json.loads((directory / "output/.metadata" / upstream.host / "team/app:1.0/record.json").read_text())
    assert record["reference"] == f"http://{upstream.host}/team/app:1.0"
    assert record["manifest_digest"] == image.digest
    assert not (directory / "output" / mirror.host).exists()
    log = mirror.log
    assert '"HEAD /v2/team/app/manifests/1.0' in log
    assert f'"GET /v2/team/app/blobs/{image.layers[0].digest}' in log


def test_mirror_without_the_image_falls_back_to_upstream(
    make_registry: Callable[..., LocalRegistry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    empty_mirror, down_mirror, upstream = make_registry(), make_registry(), make_registry()
    image = small_image("upstream")
    oci.push(upstream, "team/app", "1.0", image)
    down_mirror.stop()
    registries = {
        upstream.host: {"insecure": True, "mirrors": [down_mirror.host, f"http://{empty_mirror.host}"]},
        down_mirror.host: {"insecure": True, "retries": 0, "timeout": 2},
    }
    result = resolve(tmp_path, registries, f"{upstream.host}/team/app:1.0", f"{upstream.host}/team/app:*")
    assert result.failures == []
    assert result.images[f"{upstream.host}/team/app:1.0"].manifest_digest == image.digest
    assert requests_in(empty_mirror) >= 1, "the mirror was asked first"
    assert requests_in(upstream) >= 1


def test_mirror_gets_its_own_credentials_never_upstreams(
    make_registry: Callable[..., LocalRegistry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = make_registry("htpasswd")
    upstream = make_registry("token", allow_anonymous_pull=False)
    assert mirror.username and mirror.password and upstream.password and upstream.token_server
    image = small_image("mirror creds")
    oci.push(mirror, "team/app", "1.0", image)
    (tmp_path / "docker").mkdir()
    mirror_auth = base64.b64encode(f"{mirror.username}:{mirror.password}".encode()).decode()
    upstream_auth = base64.b64encode(f"{upstream.username}:{upstream.password}".encode()).decode()
    document = {"auths": {mirror.host: {"auth": mirror_auth}, upstream.host: {"auth": upstream_auth}}}
    (tmp_path / "docker" / "config.json").write_text(json.dumps(document))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    registries = {upstream.host: {"insecure": True, "mirrors": [mirror.host]}, mirror.host: {"insecure": True}}
    result = resolve(tmp_path, registries, f"{upstream.host}/team/app:1.0")
    assert result.failures == []
    assert result.images[f"{upstream.host}/team/app:1.0"].manifest_digest == image.digest
    assert upstream.token_server.requests == [], "the upstream registry was never needed"
