"""Hand-built OCI/Docker images, byte-exact, and a raw distribution-API pusher.

Nothing here validates what it builds: hostile tests need broken layers, wrong digests and odd
media types to reach the registry unchanged (the registry stores whatever a raw push sends).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import requests

Compression = Literal["gzip", "zstd", "none"]
Media = Literal["oci", "docker"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
ALL_MANIFEST_TYPES = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

LAYER_TYPES: dict[tuple[Media, Compression], str] = {
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    # Docker has no zstd type of its own; tools put the OCI one in v2 manifests.
    ("docker", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
}

DEFAULT_MTIME = 1_700_000_000  # fixed, so identical layers get identical digests


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class TarLayer:
    """Builds one uncompressed layer tar, entry by entry, in the order given.

    Paths are written exactly as passed (no normalisation), so `../x` or `/abs` are possible.
    """

    def __init__(self, format: int = tarfile.PAX_FORMAT, end_blocks: bool = True) -> None:
        self.format = format
        self.end_blocks = end_blocks  # False imitates umoci's layers without the 2 zero blocks
        self._chunks: list[bytes] = []

    def _info(self, path: str, type: bytes, mode: int, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path)
        info.type = type
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = mtime
        return info

    def add_raw(self, info: tarfile.TarInfo, data: bytes = b"", size: int | None = None) -> TarLayer:
        """Append any TarInfo (hostile names, odd types, pax_headers/xattrs) with its data.

        `size` overrides the header's size field, so it can lie about the data that follows.
        """
        info.size = len(data) if size is None else size
        header = info.tobuf(self.format, tarfile.ENCODING, "surrogateescape")
        self._chunks.append(header + data + _pad(len(data)))
        return self

    def add_bytes(self, raw: bytes) -> TarLayer:
        """Append raw bytes verbatim (broken headers, garbage)."""
        self._chunks.append(raw)
        return self

    def add_pax_global(self, headers: dict[str, str]) -> TarLayer:
        self._chunks.append(tarfile.TarInfo.create_pax_global_header(headers))
        return self

    def add_file(
        self,
        path: str,
        data: bytes = b"",
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: int = DEFAULT_MTIME,
        xattrs: dict[str, str] | None = None,
    ) -> TarLayer:
        info = self._info(path, tarfile.REGTYPE, mode, uid, gid, mtime)
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return self.add_raw(info, data)

    def add_dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = DEFAULT_MTIME) -> TarLayer:
        return self.add_raw(self._info(path, tarfile.DIRTYPE, mode, uid, gid, mtime))

    def add_symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> TarLayer:
        info = self._info(path, tarfile.SYMTYPE, 0o777, uid, gid, DEFAULT_MTIME)
        info.linkname = target
        return self.add_raw(info)

    def add_hardlink(self, path: str, target: str) -> TarLayer:
        info = self._info(path, tarfile.LNKTYPE, 0o644, 0, 0, DEFAULT_MTIME)
        info.linkname = target
        return self.add_raw(info)

    def add_whiteout(self, path: str) -> TarLayer:
        """Whiteout for `path`: writes `dir/.wh.name`."""
        parent, _, name = path.rstrip("/").rpartition("/")
        return self.add_file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0o600)

    def add_opaque(self, dir: str) -> TarLayer:
        """Opaque marker: writes `dir/.wh..wh..opq`."""
        dir = dir.rstrip("/")
        return self.add_file(f"{dir}/.wh..wh..opq" if dir else ".wh..wh..opq", mode=0o600)

    def add_fifo(self, path: str, mode: int = 0o644) -> TarLayer:
        return self.add_raw(self._info(path, tarfile.FIFOTYPE, mode, 0, 0, DEFAULT_MTIME))

    def add_device(self, path: str, kind: Literal["c", "b"], major: int, minor: int, mode: int = 0o666) -> TarLayer:
        type = tarfile.CHRTYPE if kind == "c" else tarfile.BLKTYPE
        info = self._info(path, type, mode, 0, 0, DEFAULT_MTIME)
        info.devmajor, info.devminor = major, minor
        return self.add_raw(info)

    def tar_bytes(self) -> bytes:
        # Two zero blocks end the archive; no padding to tarfile's 10 KiB record (Go writes none).
        return b"".join(self._chunks) + (b"\0" * 1024 if self.end_blocks else b"")


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 512)


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, mtime=0)  # mtime=0: same tar, same digest
    if compression == "zstd":
        return _zstd(data)
    raise ValueError(f"unknown compression {compression!r}")


def _zstd(data: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:
        pass
    else:
        return zstandard.ZstdCompressor().compress(data)
    zstd = shutil.which("zstd")
    if zstd is None:
        raise RuntimeError("zstd needed: pip install zstandard, or apt-get install -y zstd")
    return subprocess.run([zstd, "-q", "-c"], input=data, capture_output=True, check=True).stdout


@dataclass(frozen=True)
class LayerBlob:
    """A layer as it goes into the manifest: used verbatim, so it may lie (wrong diff_id, type)."""

    data: bytes
    media_type: str
    diff_id: str

    @classmethod
    def from_tar(cls, tar: bytes, compression: Compression = "gzip", media: Media = "oci") -> LayerBlob:
        return cls(compress(tar, compression), LAYER_TYPES[(media, compression)], sha256(tar))

    @property
    def digest(self) -> str:
        return sha256(self.data)


# ---------------------------------------------------------------------------------------------
# Images and indexes
# ---------------------------------------------------------------------------------------------


@dataclass
class Image:
    manifest: bytes
    media_type: str
    config: bytes
    layers: list[LayerBlob]
    blobs: dict[str, bytes] = field(default_factory=dict)  # config + layers, by digest

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def manifest_json(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest))

    @property
    def config_json(self) -> dict[str, Any]:
        return dict(json.loads(self.config))

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]


@dataclass
class Index:
    manifest: bytes
    media_type: str
    children: list[Image | Index]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, indent=2).encode()


def build_image(
    layers: Sequence[bytes | LayerBlob],
    compression: Compression = "gzip",
    *,
    media: Media = "oci",
    architecture: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    config: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> Image:
    """Image from uncompressed layer tars (compressed here) or ready LayerBlobs (used verbatim).

    `config` goes into the config's `config` object (Env, Entrypoint, Cmd, Labels, WorkingDir...).
    """
    blobs = [x if isinstance(x, LayerBlob) else LayerBlob.from_tar(x, compression, media) for x in layers]
    cfg: dict[str, Any] = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": architecture,
        "os": os,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]} | (config or {}),
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in blobs]},
        "history": [{"created_by": "tests/support/oci.py"} for _ in blobs],
    }
    if variant:
        cfg["variant"] = variant
    config_bytes = _dumps(cfg)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if media == "oci" else DOCKER_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG if media == "oci" else DOCKER_CONFIG,
            "digest": sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": len(b.data)} for b in blobs],
    }
    if annotations:
        manifest["annotations"] = annotations
    all_blobs = {sha256(config_bytes): config_bytes} | {b.digest: b.data for b in blobs}
    return Image(_dumps(manifest), manifest["mediaType"], config_bytes, blobs, all_blobs)


def build_index(entries: Sequence[tuple[Image | Index, dict[str, str] | None]], media: Media = "oci") -> Index:
    """Index (OCI) or manifest list (Docker) of (child, platform) pairs, in the order given."""
    manifests = []
    for child, platform in entries:
        desc: dict[str, Any] = {
            "mediaType": child.media_type,
            "digest": child.digest,
            "size": len(child.manifest),
        }
        if platform is not None:
            desc["platform"] = platform
        manifests.append(desc)
    media_type = OCI_INDEX if media == "oci" else DOCKER_LIST
    body = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    return Index(_dumps(body), media_type, [child for child, _ in entries])


# ---------------------------------------------------------------------------------------------
# Raw distribution-API client
# ---------------------------------------------------------------------------------------------


class RegistryLike(Protocol):
    url: str
    username: str | None
    password: str | None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    # Values are quoted and may contain commas (scope="repository:x:pull,push").
    for part in _split_params(rest):
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return scheme.lower(), params


def _split_params(s: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in s:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


class Client:
    """Talks to one registry, answering Basic and Bearer challenges for one repository scope."""

    def __init__(self, registry: RegistryLike, actions: str = "pull,push") -> None:
        self.registry = registry
        self.actions = actions
        self.session = requests.Session()
        self._auth: dict[str, str] = {}  # repo -> Authorization header value

    def request(self, method: str, url: str, repo: str, **kw: Any) -> requests.Response:
        if not url.startswith("http"):
            url = self.registry.url + url
        headers = dict(kw.pop("headers", {}) or {})
        for _ in range(2):
            if repo in self._auth:
                headers["Authorization"] = self._auth[repo]
            resp = self.session.request(method, url, headers=headers, timeout=30, **kw)
            if resp.status_code != 401 or repo in self._auth:
                return resp
            self._auth[repo] = self._answer(resp.headers.get("WWW-Authenticate", ""), repo)
        return resp

    def _answer(self, challenge: str, repo: str) -> str:
        scheme, params = _parse_challenge(challenge)
        user, password = self.registry.username, self.registry.password
        if scheme == "basic":
            if user is None or password is None:
                raise RuntimeError("registry asks for Basic auth but no credentials given")
            return requests.auth._basic_auth_str(user, password)
        if scheme == "bearer":
            query = {"service": params.get("service", ""), "scope": f"repository:{repo}:{self.actions}"}
            auth = (user, password) if user is not None and password is not None else None
            resp = self.session.get(params["realm"], params=query, auth=auth, timeout=30)
            resp.raise_for_status()
            body = resp.json()
            return "Bearer " + (body.get("token") or body["access_token"])
        raise RuntimeError(f"unknown auth challenge {challenge!r}")


def _check(resp: requests.Response, *ok: int) -> requests.Response:
    if resp.status_code not in ok:
        raise RuntimeError(f"{resp.request.method} {resp.url} -> {resp.status_code}: {resp.text[:500]}")
    return resp


def push_blob(client: Client, repo: str, data: bytes, digest: str | None = None) -> str:
    """Monolithic upload (POST then PUT ?digest=); `digest` may deliberately lie."""
    digest = digest or sha256(data)
    if client.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo).status_code == 200:
        return digest
    resp = _check(client.request("POST", f"/v2/{repo}/blobs/uploads/", repo), 202)
    location = resp.headers["Location"]
    if not location.startswith("http"):
        location = client.registry.url + location
    location += ("&" if "?" in location else "?") + f"digest={digest}"
    headers = {"Content-Type": "application/octet-stream"}
    _check(client.request("PUT", location, repo, data=data, headers=headers), 201)
    return digest


def push_manifest(client: Client, repo: str, ref: str, data: bytes, media_type: str) -> str:
    """PUT raw manifest bytes; returns the digest the registry reports."""
    resp = client.request("PUT", f"/v2/{repo}/manifests/{ref}", repo, data=data, headers={"Content-Type": media_type})
    _check(resp, 201)
    return resp.headers.get("Docker-Content-Digest", sha256(data))


def push(
    registry: RegistryLike,
    repo: str,
    ref: str,
    item: Image | Index,
    client: Client | None = None,
) -> str:
    """Push an image or index (children first, by digest) and tag it as `ref` (tag or digest)."""
    client = client or Client(registry)
    if isinstance(item, Index):
        for child in item.children:
            push(registry, repo, child.digest, child, client)
    else:
        for digest, data in item.blobs.items():
            push_blob(client, repo, data, digest)
    return push_manifest(client, repo, ref, item.manifest, item.media_type)


def head_manifest(registry: RegistryLike, repo: str, ref: str) -> requests.Response:
    client = Client(registry, "pull")
    headers = {"Accept": ALL_MANIFEST_TYPES}
    return client.request("HEAD", f"/v2/{repo}/manifests/{ref}", repo, headers=headers)


def get_manifest(registry: RegistryLike, repo: str, ref: str) -> tuple[bytes, str]:
    """(bytes, Content-Type) of a manifest, asking for all four manifest types."""
    client = Client(registry, "pull")
    headers = {"Accept": ALL_MANIFEST_TYPES}
    resp = _check(client.request("GET", f"/v2/{repo}/manifests/{ref}", repo, headers=headers), 200)
    return resp.content, resp.headers.get("Content-Type", "")


def delete_manifest(registry: RegistryLike, repo: str, digest: str) -> None:
    """DELETE by digest; this also drops every tag pointing at it (distribution 2.8)."""
    client = Client(registry, "pull,push,delete")
    _check(client.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo), 202)


def delete_tag(registry: RegistryLike, repo: str, tag: str) -> str:
    """Remove a tag by deleting the manifest it points at; returns that digest.

    distribution 2.8 refuses DELETE by tag, so the manifest (and all its tags) goes.
    """
    resp = _check(head_manifest(registry, repo, tag), 200)
    digest = resp.headers["Docker-Content-Digest"]
    delete_manifest(registry, repo, digest)
    return digest


def tree_layer(root: Path) -> bytes:
    """A real tar layer of a directory tree (what `docker build` or umoci would produce)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()
