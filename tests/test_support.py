"""The test infrastructure itself: real registries, hand-built and tool-built images."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from support import oci
from support import registry as registry_module
from support.registry import LocalRegistry, require_binary
from support.tokenserver import TokenServer
from support.umoci_images import add_layout_index, build_layout, skopeo_push
from support.workflow import snakemake_command

REGISTRY_KINDS = ["registry", "htpasswd_registry", "token_registry"]


def small_layers() -> list[bytes]:
    base = (
        oci.TarLayer()
        .add_dir("etc")
        .add_file("etc/hello", b"hello\n")
        .add_symlink("bin", "usr/bin")
        .add_dir("usr/bin")
        .tar_bytes()
    )
    top = oci.TarLayer().add_whiteout("etc/hello").add_opaque("usr").add_fifo("run.fifo")
    return [base, top.tar_bytes()]


def test_tar_layer_entries_are_exact() -> None:
    layer = oci.TarLayer(end_blocks=False)
    layer.add_whiteout("a/b").add_opaque("c").add_hardlink("d", "a/x").add_file("../evil", b"x")
    data = layer.tar_bytes()
    assert len(data) % 512 == 0
    assert data[-1024:] != b"\0" * 1024  # no end blocks, like umoci's layers
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["a/.wh.b", "c/.wh..wh..opq", "d", "../evil"]
    assert members[2].islnk() and members[2].linkname == "a/x"


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_blob_compression_and_diff_id(compression: oci.Compression) -> None:
    tar = small_layers()[0]
    blob = oci.LayerBlob.from_tar(tar, compression)
    magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "none": tar[:2]}[compression]
    assert blob.data.startswith(magic)
    assert blob.diff_id == oci.sha256(tar)
    assert blob.media_type.endswith({"gzip": "+gzip", "zstd": "+zstd", "none": ".tar"}[compression])


@pytest.mark.parametrize("kind", REGISTRY_KINDS)
@pytest.mark.parametrize("media", ["oci", "docker"])
def test_push_hand_built_image(request: pytest.FixtureRequest, kind: str, media: oci.Media, repo_name: str) -> None:
    reg: LocalRegistry = request.getfixturevalue(kind)
    image = oci.build_image(small_layers(), media=media, config={"Entrypoint": ["/bin/sh"]})
    assert oci.push(reg, repo_name, "v1", image) == image.digest

    head = oci.head_manifest(reg, repo_name, "v1")
    assert head.status_code == 200
    assert head.headers["Docker-Content-Digest"] == image.digest
    body, content_type = oci.get_manifest(reg, repo_name, "v1")
    assert body == image.manifest
    assert content_type == image.media_type
    assert image.config_json["rootfs"]["diff_ids"] == [oci.sha256(t) for t in small_layers()]


def test_push_zstd_and_uncompressed_layers(registry: LocalRegistry, repo_name: str) -> None:
    tar = small_layers()[0]
    layers = [oci.LayerBlob.from_tar(tar, "zstd"), oci.LayerBlob.from_tar(tar, "none")]
    image = oci.build_image(layers)
    oci.push(registry, repo_name, "mixed", image)
    client = oci.Client(registry)
    got = client.request("GET", f"/v2/{repo_name}/blobs/{layers[0].digest}", repo_name)
    assert got.content == layers[0].data


def test_token_registry_demands_bearer_token(token_registry: LocalRegistry) -> None:
    resp = requests.get(f"{token_registry.url}/v2/some/repo/manifests/latest", timeout=10)
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{token_registry.token_server.realm}"' in challenge  # type: ignore[union-attr]
    assert 'scope="repository:some/repo:pull"' in challenge


def test_token_server_rejects_wrong_password(token_registry: LocalRegistry, token_server: TokenServer) -> None:
    before = len(token_server.requests)
    resp = requests.get(
        token_server.realm,
        params={"service": token_server.service, "scope": "repository:x:pull"},
        auth=(token_registry.username or "", "wrong"),
        timeout=10,
    )
    assert resp.status_code == 401
    assert token_server.requests[before:][0].user == token_registry.username


def test_anonymous_token_cannot_push(token_registry: LocalRegistry, repo_name: str) -> None:
    server = token_registry.token_server
    assert server is not None
    token = server.issue(None, [f"repository:{repo_name}:pull,push"])
    resp = requests.post(
        f"{token_registry.url}/v2/{repo_name}/blobs/uploads/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert resp.status_code == 401
    assert "insufficient_scope" in resp.headers["WWW-Authenticate"]


def test_token_pushes_are_counted(token_registry: LocalRegistry, repo_name: str) -> None:
    server = token_registry.token_server
    assert server is not None
    before = len(server.requests)
    oci.push(token_registry, repo_name, "v1", oci.build_image(small_layers()))
    scopes = [r.query.get("scope") for r in server.requests[before:]]
    assert scopes == [[f"repository:{repo_name}:pull,push"]]  # one token, cached by the client


def test_htpasswd_registry_sends_basic_challenge(htpasswd_registry: LocalRegistry) -> None:
    resp = requests.get(f"{htpasswd_registry.url}/v2/", timeout=10)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")


@pytest.mark.parametrize("media", ["oci", "docker"])
def test_multi_arch_index(registry: LocalRegistry, repo_name: str, media: oci.Media) -> None:
    amd = oci.build_image(small_layers(), media=media)
    arm = oci.build_image(small_layers()[:1], media=media, architecture="arm64", variant="v8")
    index = oci.build_index(
        [
            (amd, {"os": "linux", "architecture": "amd64"}),
            (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        ],
        media=media,
    )
    assert oci.push(registry, repo_name, "multi", index) == index.digest
    body, content_type = oci.get_manifest(registry, repo_name, "multi")
    assert (body, content_type) == (index.manifest, index.media_type)
    for child in (amd, arm):
        assert oci.get_manifest(registry, repo_name, child.digest)[0] == child.manifest


def test_delete_tag(registry: LocalRegistry, repo_name: str) -> None:
    image = oci.build_image(small_layers())
    oci.push(registry, repo_name, "gone", image)
    assert oci.delete_tag(registry, repo_name, "gone") == image.digest
    assert oci.head_manifest(registry, repo_name, "gone").status_code == 404


def test_skopeo_pushes_umoci_image(
    token_registry: LocalRegistry, busybox_rootfs: Path, tmp_path: Path, repo_name: str
) -> None:
    def base(rootfs: Path) -> None:
        for item in busybox_rootfs.iterdir():
            item.rename(rootfs / item.name)

    def add_file(rootfs: Path) -> None:
        (rootfs / "etc" / "motd").write_text("hi\n")

    layout = build_layout(
        tmp_path / "layout",
        [base, add_file],
        tag="v1",
        env=["GREETING=hi"],
        entrypoint=["/bin/sh", "-c"],
        cmd=["echo $GREETING"],
    )
    digest = skopeo_push(layout, "v1", token_registry, repo_name)
    head = oci.head_manifest(token_registry, repo_name, "v1")
    assert head.headers["Docker-Content-Digest"] == digest
    manifest = json.loads(oci.get_manifest(token_registry, repo_name, digest)[0])
    assert len(manifest["layers"]) == 2
    client = oci.Client(token_registry, "pull")
    url = f"/v2/{repo_name}/blobs/{manifest['config']['digest']}"
    config = client.request("GET", url, repo_name).json()
    assert "GREETING=hi" in config["config"]["Env"]
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c"]


def test_skopeo_pushes_layout_index(registry: LocalRegistry, tmp_path: Path, repo_name: str) -> None:
    def step(rootfs: Path) -> None:
        (rootfs / "arch").write_text("x\n")

    layout = tmp_path / "layout"
    build_layout(layout, [step], tag="amd64", architecture="amd64")
    build_layout(layout, [step], tag="arm64", architecture="arm64")
    platforms = {a: {"os": "linux", "architecture": a} for a in ("amd64", "arm64")}
    index_digest = add_layout_index(layout, "multi", platforms)
    assert skopeo_push(layout, "multi", registry, repo_name, all=True) == index_digest
    assert oci.get_manifest(registry, repo_name, "multi")[1] == oci.OCI_INDEX


def test_missing_binary_names_package() -> None:
    with pytest.raises(RuntimeError, match="apt-get install -y some-package"):
        require_binary("no-such-binary-for-tests", "some-package")


def test_registry_start_failure_shows_its_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as busy:  # a port already taken makes the registry exit at once
        busy.bind(("127.0.0.1", 0))
        monkeypatch.setattr(registry_module, "free_port", lambda: busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="address already in use"):
            LocalRegistry(workdir=tmp_path / "reg")


def test_private_token_registry_without_anonymous_pull(
    make_registry: Callable[..., LocalRegistry],
) -> None:
    reg = make_registry("token", allow_anonymous_pull=False, expires_in=5)
    server = reg.token_server
    assert server is not None and server.expires_in == 5
    oci.push(reg, "private/repo", "v1", oci.build_image(small_layers()))
    anonymous = server.issue(None, ["repository:private/repo:pull"])
    resp = requests.head(
        f"{reg.url}/v2/private/repo/manifests/v1",
        headers={"Authorization": f"Bearer {anonymous}", "Accept": oci.ALL_MANIFEST_TYPES},
        timeout=10,
    )
    assert resp.status_code == 401
    assert oci.head_manifest(reg, "private/repo", "v1").status_code == 200


def test_an_unmarked_test_cannot_start_snakemake(tmp_path: Path) -> None:
    """`pytest -m "not workflow"` stays fast: the runner refuses a test without the `workflow` marker."""
    with pytest.raises(AssertionError, match=r"mark it with @pytest\.mark\.workflow"):
        snakemake_command(tmp_path)


@pytest.mark.workflow
def test_a_marked_test_may_start_snakemake(tmp_path: Path) -> None:
    assert snakemake_command(tmp_path)[-2:] == ["--cores", "2"]
