"""Manifest and index parsing, platform selection, image-config checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .bounded import bounded_repr
from .errors import UnsupportedImageError
from .reference import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
IMAGE_CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as err:
        raise UnsupportedImageError(f"{what}: not valid JSON ({err})") from None
    if not isinstance(document, dict):
        raise UnsupportedImageError(f"{what}: not a JSON object")
    return document


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict) or "digest" not in raw:
        raise UnsupportedImageError(f"{what}: malformed descriptor {bounded_repr(raw)}")
    digest = validate_digest(str(raw["digest"]))
    return Descriptor(str(raw.get("mediaType", "")), digest, int(raw.get("size", -1)), raw.get("platform"))


def media_type_of(data: bytes, header_type: str, what: str) -> str:
    """The manifest's media type: from its own `mediaType`, else the HTTP Content-Type."""
    document = _load(data, what)
    if document.get("schemaVersion") == 1:
        msg = f"{what}: Docker schema 1 manifest; this obsolete format is not supported, push the image again"
        raise UnsupportedImageError(msg)
    media = document.get("mediaType") or header_type.split(";")[0].strip()
    if not media:
        media = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media not in INDEX_TYPES | MANIFEST_TYPES:
        raise UnsupportedImageError(f"{what}: unsupported manifest media type {media!r}")
    return media


def parse_index(data: bytes, what: str) -> list[Descriptor]:
    document = _load(data, what)
    return [_descriptor(entry, what) for entry in document.get("manifests") or []]


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor
    layers: list[Descriptor]


def parse_manifest(data: bytes, what: str) -> ImageManifest:
    document = _load(data, what)
    config = _descriptor(document.get("config"), what)
    if config.media_type not in IMAGE_CONFIG_TYPES:
        msg = (
            f"{what}: not a runnable container image (config type {config.media_type!r}; "
            "an artifact such as a Helm chart, signature or SBOM?)"
        )
        raise UnsupportedImageError(msg)
    layers = [_descriptor(layer, what) for layer in document.get("layers") or []]
    for layer in layers:
        if layer.media_type == FOREIGN_LAYER:
            msg = f"{what}: layer {layer.digest} is a foreign (Windows) layer; such images are not supported"
            raise UnsupportedImageError(msg)
        if layer.media_type not in LAYER_TYPES:
            raise UnsupportedImageError(f"{what}: layer {layer.digest} has unsupported type {layer.media_type!r}")
    return ImageManifest(config, layers)


def parse_platform(text: str) -> dict[str, str]:
    parts = text.split("/")
    platform = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        platform["variant"] = parts[2]
    return platform


def platform_matches(entry: dict[str, Any] | None, wanted: dict[str, str]) -> bool:
    """OCI matching: os and architecture equal; a wanted variant must match the entry's."""
    if not entry or entry.get("architecture") == "unknown":  # attestations, not images
        return False
    if entry.get("os") != wanted["os"] or entry.get("architecture") != wanted["architecture"]:
        return False
    if "variant" not in wanted:
        return True
    # An arm64 entry without a variant is v8 (the OCI image-index spec's normalisation).
    variant = entry.get("variant") or ("v8" if entry.get("architecture") == "arm64" else None)
    return variant == wanted["variant"]


def choose_platform(entries: list[Descriptor], platforms: list[str], what: str) -> tuple[Descriptor, str]:
    """The first index entry matching the first wanted platform that the index offers."""
    for text in platforms:
        wanted = parse_platform(text)
        for entry in entries:
            if platform_matches(entry.platform, wanted):
                return entry, text
    offered = sorted(
        {
            "/".join(str(p.platform.get(k)) for k in ("os", "architecture", "variant") if p.platform.get(k))
            for p in entries
            if p.platform and p.platform.get("architecture") != "unknown"  # attestations are not images
        }
    )
    msg = f"{what}: no image for platform(s) {', '.join(platforms)}; the index offers {', '.join(offered) or 'none'}"
    raise UnsupportedImageError(msg)


def check_image_config(data: bytes, layers: int, what: str) -> dict[str, Any]:
    """Parse an image config and check it has one diff_id per layer."""
    document = _load(data, what)
    diff_ids = (document.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != layers:
        count = len(diff_ids) if isinstance(diff_ids, list) else 0
        raise UnsupportedImageError(f"{what}: config lists {count} diff_ids for {layers} layers")
    for diff_id in diff_ids:
        validate_digest(str(diff_id))
    return document
