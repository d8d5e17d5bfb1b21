"""RegistryClient and its transport against real loopback registries (no auth, htpasswd, token)."""

from __future__ import annotations

import base64
import json
import os
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from unpacked.auth import RealmCache
from unpacked.config import client_settings
from unpacked.errors import (
    AuthError,
    DigestMismatchError,
    ImageReferenceError,
    NotFoundError,
    RegistryError,
    UnsupportedImageError,
)
from unpacked.manifests import OCI_MANIFEST, media_type_of, parse_manifest
from unpacked.reference import parse_reference
from unpacked.registry import RegistryClient, sha256_digest

from support import oci
from support.loopback import LoopbackServer
from support.proxy import paths, serve_pages
from support.registry import LocalRegistry
from support.tokenserver import TokenServer

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"


@pytest.fixture(autouse=True)
def empty_docker_config(isolated_docker_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own empty Docker config (tests/conftest.py), and a HOME without one either."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return isolated_docker_config


def write_docker_auth(directory: Path, host: str, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def client_for(reg: LocalRegistry, repo: str, realms: RealmCache | None = None, **settings: Any) -> RegistryClient:
    ref = parse_reference(f"{reg.host}/{repo}:latest")
    config = {"registries": {reg.host: {"insecure": True, "retries": 0, **settings}}}
    return RegistryClient(ref, client_settings(config, reg.host), realms)


def small_image(marker: str) -> oci.Image:
    """A one-layer image whose digests are unique to `marker` (so tests never share blobs)."""
    layer = oci.TarLayer().add_file("hello", f"hello {marker}\n".encode()).tar_bytes()
    return oci.build_image([layer], annotations={"test": marker})


def blob_file(reg: LocalRegistry, digest: str) -> Path:
    """Where the registry's filesystem driver keeps a blob's bytes."""
    hexd = digest.split(":", 1)[1]
    path = reg.data_dir / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"
    assert path.is_file(), path
    return path


def corrupt(path: Path, old: bytes, new: bytes) -> None:
    """Change bytes in place, keeping the length (so only the digest check can notice)."""
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


# -------------------------------------------------------------------------------------------------
# No auth
# -------------------------------------------------------------------------------------------------


def test_head_digest_equals_pushed_digest(registry: LocalRegistry, repo_name: str) -> None:
    image = small_image(repo_name)
    pushed = oci.push(registry, repo_name, "v1", image)
    client = client_for(registry, repo_name)
    assert client.head_manifest(repo_name, "v1") == pushed == image.digest


def test_head_digest_of_index(registry: LocalRegistry, repo_name: str) -> None:
    index = oci.build_index([(small_image(repo_name), {"os": "linux", "architecture": "amd64"})])
    oci.push(registry, repo_name, "multi", index)
    assert client_for(registry, repo_name).head_manifest(repo_name, "multi") == index.digest


@pytest.mark.parametrize("media", ["oci", "docker"])
def test_get_manifest_by_tag_and_digest(registry: LocalRegistry, repo_name: str, media: oci.Media) -> None:
    layer = oci.TarLayer().add_file("f", repo_name.encode()).tar_bytes()
    image = oci.build_image([layer], media=media)
    oci.push(registry, repo_name, "v1", image)
    client = client_for(registry, repo_name)
    for reference in ("v1", image.digest):
        data, content_type = client.get_manifest(repo_name, reference)
        assert data == image.manifest  # byte-exact: a docker v2 manifest is not converted to schema 1
        assert content_type == image.media_type
        assert media_type_of(data, content_type, "m") == image.media_type


def test_get_manifest_verifies_digest(registry: LocalRegistry, repo_name: str) -> None:
    image = small_image(repo_name)
    oci.push(registry, repo_name, "v1", image)
    client = client_for(registry, repo_name)
    # The registry's storage is corrupted: it now serves other bytes under the same digest.
    corrupt(blob_file(registry, image.digest), repo_name.encode(), repo_name.upper().encode())
    with pytest.raises(DigestMismatchError) as info:
        client.get_manifest(repo_name, image.digest)
    message = str(info.value)
    assert registry.host in message and image.digest in message
    # By tag there is nothing to verify against; the caller gets the digest from HEAD and asks by digest.
    data, _ = client.get_manifest(repo_name, "v1")
    assert sha256_digest(data) != image.digest


def test_list_tags(registry: LocalRegistry, repo_name: str) -> None:
    image = small_image(repo_name)
    tags = ["1.0", "1.1", "2.0", "latest", "v_x-1"]
    for tag in tags:
        oci.push(registry, repo_name, tag, image)
    assert sorted(client_for(registry, repo_name).list_tags(repo_name)) == sorted(tags)


def test_not_found_names_registry(registry: LocalRegistry, repo_name: str) -> None:
    oci.push(registry, repo_name, "v1", small_image(repo_name))
    client = client_for(registry, repo_name)
    with pytest.raises(NotFoundError) as info:
        client.head_manifest(repo_name, "nope")
    assert registry.host in str(info.value) and f"{repo_name}:nope" in str(info.value)
    assert "not found" in str(info.value)
    with pytest.raises(NotFoundError) as info:
        client.get_manifest(repo_name, "nope")
    assert registry.host in str(info.value) and "MANIFEST_UNKNOWN" in str(info.value)
    with pytest.raises(NotFoundError) as info:
        client.head_manifest("no/such/repo", "v1")
    assert registry.host in str(info.value) and "no/such/repo" in str(info.value)
    with pytest.raises(NotFoundError) as info:
        client.list_tags("no/such/repo")
    assert registry.host in str(info.value) and "tag list of no/such/repo" in str(info.value)
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFoundError) as info:
        client.get_blob_bytes(repo_name, missing)
    assert registry.host in str(info.value) and missing in str(info.value)


def test_download_blob_lands_atomically(registry: LocalRegistry, repo_name: str, tmp_path: Path) -> None:
    data = (repo_name * 50_000).encode()  # several MiB-sized chunks
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    dest = tmp_path / "blobs" / "x" / digest.split(":")[1]
    client_for(registry, repo_name).download_blob(repo_name, digest, dest)
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no .part file left


def test_download_blob_refuses_wrong_bytes(registry: LocalRegistry, repo_name: str, tmp_path: Path) -> None:
    data = f"blob of {repo_name}\n".encode() * 100
    digest = oci.push_blob(oci.Client(registry), repo_name, data)
    # The registry refuses a push with a lying digest, so corrupt its storage instead.
    corrupt(blob_file(registry, digest), b"blob of", b"BLOB OF")
    dest = tmp_path / "out" / "blob"
    client = client_for(registry, repo_name)
    with pytest.raises(DigestMismatchError) as info:
        client.download_blob(repo_name, digest, dest)
    message = str(info.value)
    assert registry.host in message and digest in message and "refused" in message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the partial download is gone too
    with pytest.raises(DigestMismatchError):
        client.get_blob_bytes(repo_name, digest)


def test_download_blob_refuses_bad_digest_before_touching_disk(
    registry: LocalRegistry, repo_name: str, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "blob"
    with pytest.raises(ImageReferenceError, match="invalid digest"):
        client_for(registry, repo_name).download_blob(repo_name, "sha256:../../x", dest)
    assert not dest.parent.exists()


def test_download_blob_not_found(registry: LocalRegistry, repo_name: str, tmp_path: Path) -> None:
    oci.push(registry, repo_name, "v1", small_image(repo_name))
    dest = tmp_path / "out" / "blob"
    missing = "sha256:" + "1" * 64
    with pytest.raises(NotFoundError) as info:
        client_for(registry, repo_name).download_blob(repo_name, missing, dest)
    assert registry.host in str(info.value) and missing in str(info.value)
    assert list(dest.parent.iterdir()) == []


def test_schema1_manifest_refused(registry: LocalRegistry, repo_name: str) -> None:
    document = {"schemaVersion": 1, "name": repo_name, "tag": "v1", "architecture": "amd64", "fsLayers": []}
    data = json.dumps(document).encode()
    # distribution 2.8 refuses schema-1 pushes, so check the parser on the raw document.
    client = oci.Client(registry)
    headers = {"Content-Type": "application/vnd.docker.distribution.manifest.v1+json"}
    assert (
        client.request("PUT", f"/v2/{repo_name}/manifests/v1", repo_name, data=data, headers=headers).status_code == 400
    )
    with pytest.raises(UnsupportedImageError) as info:
        media_type_of(data, "application/vnd.docker.distribution.manifest.v1+prettyjws", f"{registry.host}/{repo_name}")
    message = str(info.value)
    assert f"{registry.host}/{repo_name}" in message and "schema 1" in message and "not supported" in message


def test_artifact_refused_as_not_runnable(registry: LocalRegistry, repo_name: str) -> None:
    image = small_image(repo_name)
    manifest = image.manifest_json
    manifest["config"]["mediaType"] = HELM_CONFIG
    data = json.dumps(manifest).encode()
    client = oci.Client(registry)
    for digest, blob in image.blobs.items():
        oci.push_blob(client, repo_name, blob, digest)
    oci.push_manifest(client, repo_name, "chart", data, OCI_MANIFEST)
    got, content_type = client_for(registry, repo_name).get_manifest(repo_name, "chart")
    assert got == data
    assert media_type_of(got, content_type, "x") == OCI_MANIFEST
    with pytest.raises(UnsupportedImageError) as info:
        parse_manifest(got, f"{registry.host}/{repo_name}:chart")
    message = str(info.value)
    assert f"{registry.host}/{repo_name}:chart" in message
    assert "not a runnable container image" in message and HELM_CONFIG in message


# -------------------------------------------------------------------------------------------------
# Token auth (Docker-Hub-like)
# -------------------------------------------------------------------------------------------------


def token_requests(server: TokenServer) -> list[Any]:
    return [r for r in server.requests if r.path == "/token"]


def test_anonymous_token_flow_reuses_tokens(
    token_registry: LocalRegistry, token_server: TokenServer, repo_name: str
) -> None:
    image = small_image(repo_name)
    oci.push(token_registry, repo_name, "v1", image)
    oci.push(token_registry, repo_name, "v2", image)
    client = client_for(token_registry, repo_name)

    before = len(token_requests(token_server))
    assert client.head_manifest(repo_name, "v1") == image.digest
    issued = token_requests(token_server)[before:]
    assert len(issued) == 1
    assert issued[0].user is None  # anonymous
    assert issued[0].query["scope"] == [f"repository:{repo_name}:pull"]
    assert issued[0].query["service"] == [token_server.service]

    before = len(token_requests(token_server))
    assert client.head_manifest(repo_name, "v1") == image.digest
    assert client.head_manifest(repo_name, "v2") == image.digest
    data, _ = client.get_manifest(repo_name, image.digest)
    assert data == image.manifest
    assert sorted(client.list_tags(repo_name)) == ["v1", "v2"]
    assert len(token_requests(token_server)) == before  # the cached token served them all

    # Another repository is another scope: one more token.
    other = f"{repo_name}-other"
    oci.push(token_registry, other, "v1", image)
    before = len(token_requests(token_server))
    assert client.head_manifest(other, "v1") == image.digest
    assert len(token_requests(token_server)) == before + 1


def test_remembered_realm_skips_the_401_and_a_stale_one_is_learned_again(
    token_registry: LocalRegistry, token_server: TokenServer, repo_name: str, tmp_path: Path
) -> None:
    image = small_image(repo_name)
    oci.push(token_registry, repo_name, "v1", image)
    path = tmp_path / "realms.json"
    learned = RealmCache()
    client_for(token_registry, repo_name, learned).head_manifest(repo_name, "v1")
    learned.save(path)
    assert json.loads(path.read_text())[token_registry.host]["realm"] == token_server.realm
    # A new process that loads the remembered realm asks for its token before the first request.
    remembered = RealmCache()
    remembered.load(path)
    fresh = client_for(token_registry, repo_name, remembered)
    assert fresh.transport._learned.is_set()
    assert fresh.head_manifest(repo_name, "v1") == image.digest
    # A realm that no longer answers is forgotten and learned again from the registry's challenge.
    path.write_text(json.dumps({token_registry.host: {"realm": "http://127.0.0.1:9/token", "service": "x"}}))
    stale = RealmCache()
    stale.load(path)
    assert client_for(token_registry, repo_name, stale).head_manifest(repo_name, "v1") == image.digest
    assert (stale.get(token_registry.host) or {}).get("realm") == token_server.realm


def test_token_with_credentials_from_docker_config(
    token_registry: LocalRegistry, token_server: TokenServer, repo_name: str, empty_docker_config: Path
) -> None:
    assert token_registry.username and token_registry.password
    oci.push(token_registry, repo_name, "v1", small_image(repo_name))
    write_docker_auth(empty_docker_config, token_registry.host, token_registry.username, token_registry.password)
    before = len(token_requests(token_server))
    client_for(token_registry, repo_name).head_manifest(repo_name, "v1")
    issued = token_requests(token_server)[before:]
    assert [r.user for r in issued] == [token_registry.username]


def test_token_wrong_password_is_clear_auth_error(
    token_registry: LocalRegistry, repo_name: str, empty_docker_config: Path
) -> None:
    assert token_registry.username
    oci.push(token_registry, repo_name, "v1", small_image(repo_name))
    wrong = "wrong-secret-4711"
    write_docker_auth(empty_docker_config, token_registry.host, token_registry.username, wrong)
    with pytest.raises(AuthError) as info:
        client_for(token_registry, repo_name).head_manifest(repo_name, "v1")
    message = str(info.value)
    assert token_registry.host in message
    assert token_registry.username in message and "wrong password" in message
    assert wrong not in message and wrong not in repr(info.value)


def test_private_token_registry_refuses_anonymous(make_registry: Any, repo_name: str) -> None:
    reg = make_registry("token", allow_anonymous_pull=False)
    oci.push(reg, repo_name, "v1", small_image(repo_name))
    with pytest.raises(AuthError) as info:
        client_for(reg, repo_name).head_manifest(repo_name, "v1")
    message = str(info.value)
    assert reg.host in message and "anonymously" in message and f"repository:{repo_name}:pull" in message


def test_expired_token_is_renewed(make_registry: Any, repo_name: str) -> None:
    # expires_in=1: the token is used for at most half its life, so every request needs a new one.
    reg = make_registry("token", expires_in=1)
    image = small_image(repo_name)
    oci.push(reg, repo_name, "v1", image)
    client = client_for(reg, repo_name)
    before = len(token_requests(reg.token_server))
    assert client.head_manifest(repo_name, "v1") == image.digest
    time.sleep(1.1)
    assert client.head_manifest(repo_name, "v1") == image.digest
    assert len(token_requests(reg.token_server)) == before + 2


# -------------------------------------------------------------------------------------------------
# htpasswd (Basic)
# -------------------------------------------------------------------------------------------------


def test_htpasswd_with_docker_config(
    htpasswd_registry: LocalRegistry, repo_name: str, empty_docker_config: Path
) -> None:
    assert htpasswd_registry.username and htpasswd_registry.password
    image = small_image(repo_name)
    oci.push(htpasswd_registry, repo_name, "v1", image)
    write_docker_auth(
        empty_docker_config, htpasswd_registry.host, htpasswd_registry.username, htpasswd_registry.password
    )
    client = client_for(htpasswd_registry, repo_name)
    assert client.head_manifest(repo_name, "v1") == image.digest
    assert client.get_manifest(repo_name, image.digest)[0] == image.manifest
    assert client.list_tags(repo_name) == ["v1"]


def test_htpasswd_with_docker_config_https_key(
    htpasswd_registry: LocalRegistry, repo_name: str, empty_docker_config: Path
) -> None:
    """`docker login` may store the entry under `https://host`."""
    assert htpasswd_registry.username and htpasswd_registry.password
    image = small_image(repo_name)
    oci.push(htpasswd_registry, repo_name, "v1", image)
    host = f"https://{htpasswd_registry.host}"
    write_docker_auth(empty_docker_config, host, htpasswd_registry.username, htpasswd_registry.password)
    assert client_for(htpasswd_registry, repo_name).head_manifest(repo_name, "v1") == image.digest


def test_htpasswd_with_env_variables(
    htpasswd_registry: LocalRegistry, repo_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert htpasswd_registry.username and htpasswd_registry.password
    image = small_image(repo_name)
    oci.push(htpasswd_registry, repo_name, "v1", image)
    monkeypatch.setenv("TEST_REG_USER", htpasswd_registry.username)
    monkeypatch.setenv("TEST_REG_PASSWORD", htpasswd_registry.password)
    client = client_for(htpasswd_registry, repo_name, username_env="TEST_REG_USER", password_env="TEST_REG_PASSWORD")
    assert client.head_manifest(repo_name, "v1") == image.digest


def test_env_variables_missing(
    htpasswd_registry: LocalRegistry, repo_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_REG_USER", raising=False)
    monkeypatch.delenv("TEST_REG_PASSWORD", raising=False)
    with pytest.raises(AuthError) as info:
        client_for(htpasswd_registry, repo_name, username_env="TEST_REG_USER", password_env="TEST_REG_PASSWORD")
    message = str(info.value)
    assert htpasswd_registry.host in message and "TEST_REG_USER" in message and "TEST_REG_PASSWORD" in message


def test_htpasswd_wrong_password_is_clear_auth_error(
    htpasswd_registry: LocalRegistry, repo_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert htpasswd_registry.username
    oci.push(htpasswd_registry, repo_name, "v1", small_image(repo_name))
    wrong = "not-the-password-0815"
    monkeypatch.setenv("TEST_REG_USER", htpasswd_registry.username)
    monkeypatch.setenv("TEST_REG_PASSWORD", wrong)
    client = client_for(htpasswd_registry, repo_name, username_env="TEST_REG_USER", password_env="TEST_REG_PASSWORD")
    with pytest.raises(AuthError) as info:
        client.head_manifest(repo_name, "v1")
    message = str(info.value)
    assert htpasswd_registry.host in message
    assert "access denied" in message and repr(htpasswd_registry.username) in message
    assert wrong not in message and wrong not in repr(info.value)
    assert wrong not in repr(client.transport.credentials)


def test_htpasswd_without_credentials(htpasswd_registry: LocalRegistry, repo_name: str) -> None:
    oci.push(htpasswd_registry, repo_name, "v1", small_image(repo_name))
    with pytest.raises(AuthError) as info:
        client_for(htpasswd_registry, repo_name).head_manifest(repo_name, "v1")
    message = str(info.value)
    assert htpasswd_registry.host in message and "none is configured" in message


# -------------------------------------------------------------------------------------------------
# Credential helpers and broken Docker configs
# -------------------------------------------------------------------------------------------------


def install_helper(directory: Path, name: str, answer: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker-credential-<name>` program that records the server it was asked about."""
    asked = directory / f"{name}.asked"
    program = directory / f"docker-credential-{name}"
    program.write_text(
        f"#!/bin/sh\n[ \"$1\" = get ] || exit 2\ncat > \"{asked}\"\nprintf '%s' '{json.dumps(answer)}'\n"
    )
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
    return asked


def test_credential_helper(
    htpasswd_registry: LocalRegistry,
    repo_name: str,
    empty_docker_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert htpasswd_registry.username and htpasswd_registry.password
    image = small_image(repo_name)
    oci.push(htpasswd_registry, repo_name, "v1", image)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = {"ServerURL": htpasswd_registry.host, "Username": htpasswd_registry.username}
    asked = install_helper(bin_dir, "testhelper", answer | {"Secret": htpasswd_registry.password}, monkeypatch)
    config = {"credHelpers": {htpasswd_registry.host: "testhelper"}}
    (empty_docker_config / "config.json").write_text(json.dumps(config))
    assert client_for(htpasswd_registry, repo_name).head_manifest(repo_name, "v1") == image.digest
    assert asked.read_text() == htpasswd_registry.host


def test_credential_helper_not_installed(
    htpasswd_registry: LocalRegistry, repo_name: str, empty_docker_config: Path
) -> None:
    config = {"credHelpers": {htpasswd_registry.host: "no-such-helper-xyz"}}
    (empty_docker_config / "config.json").write_text(json.dumps(config))
    with pytest.raises(AuthError) as info:
        client_for(htpasswd_registry, repo_name)
    assert "docker-credential-no-such-helper-xyz" in str(info.value) and "not installed" in str(info.value)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"auths": {"HOST": {"auth": "!!!not base64!!!"}}})])
def test_broken_docker_config(
    htpasswd_registry: LocalRegistry, repo_name: str, empty_docker_config: Path, content: str
) -> None:
    path = empty_docker_config / "config.json"
    path.write_text(content.replace("HOST", htpasswd_registry.host))
    with pytest.raises(AuthError) as info:
        client_for(htpasswd_registry, repo_name)
    assert str(path) in str(info.value)


# -------------------------------------------------------------------------------------------------
# Tag list pagination (docker-registry only pages when asked to, so the proxy plays a registry that
# pages on its own, like Docker Hub and Quay; more in test_registry_faults.py)
# -------------------------------------------------------------------------------------------------


def test_tag_list_pagination() -> None:
    pages: dict[str, list[tuple[list[str], str | None]]] = {
        "a/b": [
            (["1.0", "1.1"], "/v2/a/b/tags/list?page=1&n=2"),  # relative, like distribution
            (["2.0"], "http://HOST/v2/a/b/tags/list?page=2"),  # absolute, same host
            (["3.0"], None),
        ],
        "loop/x": [(["1"], "/v2/loop/x/tags/list")],  # points back at itself
        "evil/x": [(["1"], "http://localhost:1/v2/evil/x/tags/list?page=1")],  # another host
    }
    server = serve_pages(pages)
    try:
        ref = parse_reference(f"{server.host}/a/b:*")
        config = {"registries": {server.host: {"insecure": True, "retries": 0}}}
        client = RegistryClient(ref, client_settings(config, server.host))
        assert client.list_tags("a/b") == ["1.0", "1.1", "2.0", "3.0"]
        assert paths(server.requests()) == [
            "/v2/a/b/tags/list",
            "/v2/a/b/tags/list?page=1&n=2",
            "/v2/a/b/tags/list?page=2",
        ]
        assert client.list_tags("loop/x") == ["1"]  # stops instead of looping forever
        server.reset()
        with pytest.raises(RegistryError) as info:
            client.list_tags("evil/x")
        assert server.host in str(info.value) and "another host" in str(info.value)
        # Only the first page was asked for; the link to the other host was never followed.
        assert [p for p in paths(server.requests()) if "evil" in p] == ["/v2/evil/x/tags/list"]
    finally:
        server.stop()


def test_a_netrc_entry_is_never_sent_to_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """requests would add ~/.netrc's password to any request without an auth object: the registry
    client always passes its own, so credentials go only where the Docker config or settings say."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"name": "a/b", "tags": ["1"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = LoopbackServer(Handler)
    try:
        netrc = tmp_path / ".netrc"
        netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        monkeypatch.setenv("HOME", str(tmp_path))
        ref = parse_reference(f"{server.host}/a/b:1")
        client = RegistryClient(ref, client_settings({"registries": {server.host: {"insecure": True}}}, server.host))
        assert client.list_tags("a/b") == ["1"]
    finally:
        server.stop()
    assert seen == [None]
