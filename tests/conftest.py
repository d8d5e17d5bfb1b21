"""Shared fixtures: real loopback registries (no auth, htpasswd, token) and image helpers.

Missing tools make fixtures ERROR with an apt-get hint instead of skipping: a skipped
integration test looks like a passing one in CI.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Make `support` importable whatever pytest's import mode (importlib mode leaves sys.path alone).
sys.path.insert(0, str(Path(__file__).parent))

import support.workflow
from support.registry import AuthMode, LocalRegistry
from support.tokenserver import TokenServer
from support.umoci_images import make_busybox_rootfs
from support.workflow import Workdir


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of `item` starts: only a test marked `workflow` may start Snakemake (the
    support runner refuses otherwise), so that `pytest -m "not workflow"` is the fast loop it says."""
    support.workflow.UNMARKED_TEST = None if item.get_closest_marker("workflow") else item.nodeid


@pytest.fixture(scope="session", autouse=True)
def session_docker_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty DOCKER_CONFIG for the module and session fixtures too (they start before any test's)."""
    directory = tmp_path_factory.mktemp("docker-config-session")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_CONFIG", str(directory))
        yield directory


@pytest.fixture(autouse=True)
def isolated_docker_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty DOCKER_CONFIG of its own, so neither the package nor the Snakemake runs
    it starts read the user's ~/.docker/config.json (credentials, helpers). Tests that need a Docker
    config set DOCKER_CONFIG themselves, which wins. Not under tmp_path: some tests list that."""
    directory = tmp_path_factory.mktemp("docker-config")
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """Registry without auth, shared by the session: use a unique repository per test."""
    with LocalRegistry(workdir=tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """Registry with Basic auth; credentials in `.username` / `.password`."""
    with LocalRegistry("htpasswd", workdir=tmp_path_factory.mktemp("htpasswd-registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    """The session's token server; `.requests` accumulates over the session, so compare counts."""
    with TokenServer(tmp_path_factory.mktemp("token-server")) as server:
        yield server


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer) -> Iterator[LocalRegistry]:
    """Registry with Docker-Hub-style Bearer token auth via `token_server`."""
    workdir = tmp_path_factory.mktemp("token-registry")
    with LocalRegistry("token", token_server=token_server, workdir=workdir) as reg:
        yield reg


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[Callable[..., LocalRegistry]]:
    """Factory for a private registry (fresh storage), e.g. with its own TokenServer settings.

    `make_registry("token", expires_in=5, allow_anonymous_pull=False)` starts a new token server
    too (reachable as `.token_server`). Everything stops at the end of the test.
    """
    started: list[LocalRegistry | TokenServer] = []

    def make(auth: AuthMode = "none", **token_options: Any) -> LocalRegistry:
        n = len(started)
        server = None
        if auth == "token":
            server = TokenServer(tmp_path / f"token-server-{n}", **token_options)
            started.append(server)
        elif token_options:
            raise TypeError("token options only apply to auth='token'")
        workdir = tmp_path / f"registry-{n}"
        reg = LocalRegistry(auth, token_server=server, workdir=workdir)
        started.append(reg)
        return reg

    yield make
    for item in reversed(started):
        item.stop()


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> str:
    """A valid, per-test repository name, so tests can share the session registries."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"test/{name[:120] or 'repo'}"


@pytest.fixture
def workdir(tmp_path: Path, registry: LocalRegistry) -> Workdir:
    """A workflow directory `tmp_path/run` for the session registry (plain HTTP); `configure` writes
    its recipe and config, `run` runs Snakemake (tests that use it are marked `workflow`)."""
    return Workdir(tmp_path / "run", {registry.host: {"insecure": True}})


@pytest.fixture
def busybox_rootfs(tmp_path: Path) -> Path:
    """A minimal rootfs with a static busybox shell (needs Debian's busybox-static)."""
    return make_busybox_rootfs(tmp_path / "rootfs")
