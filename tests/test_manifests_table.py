"""manifests.py by table: platform matching and choice, media types, manifest and config refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from unpacked.errors import ImageReferenceError, UnsupportedImageError
from unpacked.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    FOREIGN_LAYER,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    check_image_config,
    choose_platform,
    media_type_of,
    parse_index,
    parse_manifest,
    parse_platform,
    platform_matches,
)


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64"}
ARM64_V8 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
ARM_V7 = {"os": "linux", "architecture": "arm", "variant": "v7"}
S390X = {"os": "linux", "architecture": "s390x"}
ATTESTATION = {"os": "unknown", "architecture": "unknown"}


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("linux/amd64", AMD64),
        ("linux/arm64/v8", ARM64_V8),
        ("linux/arm/v7", ARM_V7),
        ("windows/amd64", {"os": "windows", "architecture": "amd64"}),
    ],
)
def test_parse_platform(text: str, platform: dict[str, str]) -> None:
    assert parse_platform(text) == platform


# (an index entry's platform, the wanted platform, match?)
MATCHES: list[tuple[dict[str, Any] | None, str, bool]] = [
    (None, "linux/amd64", False),  # no platform: cannot be chosen
    ({}, "linux/amd64", False),
    (AMD64, "linux/amd64", True),
    (ARM64, "linux/amd64", False),
    ({"os": "windows", "architecture": "amd64"}, "linux/amd64", False),
    (ARM64_V8, "linux/arm64", True),  # no variant wanted: any variant
    (ARM64, "linux/arm64/v8", True),  # arm64 without a variant is v8 (OCI normalisation)
    ({**ARM64, "variant": ""}, "linux/arm64/v8", True),
    ({**ARM64, "variant": "v9"}, "linux/arm64/v8", False),
    (ARM_V7, "linux/arm/v7", True),
    ({"os": "linux", "architecture": "arm"}, "linux/arm/v7", False),  # only arm64 is normalised
    ({**ARM_V7, "variant": "v6"}, "linux/arm/v7", False),
    ({**AMD64, "variant": "v2"}, "linux/amd64", True),
    (AMD64, "linux/amd64/v2", False),
    (ATTESTATION, "unknown/unknown", False),  # attestations are never images
    ({"os": "linux", "architecture": "unknown"}, "linux/unknown", False),
]


@pytest.mark.parametrize(("entry", "wanted", "expected"), MATCHES)
def test_platform_matches(entry: dict[str, Any] | None, wanted: str, expected: bool) -> None:
    assert platform_matches(entry, parse_platform(wanted)) is expected


def entries(*platforms: dict[str, Any] | None) -> list[Descriptor]:
    """Index entries numbered from 1 in their digests."""
    return [Descriptor(OCI_MANIFEST, digest(n), 100, p) for n, p in enumerate(platforms, start=1)]


# (index entries' platforms, wanted platforms, (number of the chosen entry, the platform it was chosen for))
CHOICES: list[tuple[list[dict[str, Any] | None], list[str], tuple[int, str]]] = [
    ([AMD64], ["linux/amd64"], (1, "linux/amd64")),
    ([ARM64_V8, AMD64], ["linux/amd64", "linux/arm64"], (2, "linux/amd64")),  # the first wanted wins
    ([ARM64_V8, AMD64], ["linux/arm64", "linux/amd64"], (1, "linux/arm64")),
    ([ARM64_V8, AMD64], ["linux/ppc64le", "linux/arm64"], (1, "linux/arm64")),
    ([AMD64, AMD64], ["linux/amd64"], (1, "linux/amd64")),  # the first matching entry
    ([ATTESTATION, None, AMD64], ["linux/amd64"], (3, "linux/amd64")),
    ([ARM64], ["linux/arm64/v8"], (1, "linux/arm64/v8")),
]


@pytest.mark.parametrize(("platforms", "wanted", "chosen"), CHOICES)
def test_choose_platform(platforms: list[dict[str, Any] | None], wanted: list[str], chosen: tuple[int, str]) -> None:
    entry, text = choose_platform(entries(*platforms), wanted, "idx")
    assert (entry.digest, text) == (digest(chosen[0]), chosen[1])


# (index entries' platforms, wanted platforms, the whole message)
NO_CHOICE: list[tuple[list[dict[str, Any] | None], list[str], str]] = [
    ([], ["linux/amd64"], "idx: no image for platform(s) linux/amd64; the index offers none"),
    ([S390X], ["linux/amd64"], "idx: no image for platform(s) linux/amd64; the index offers linux/s390x"),
    (
        [S390X, ATTESTATION, None],
        ["linux/amd64", "linux/arm64"],
        "idx: no image for platform(s) linux/amd64, linux/arm64; the index offers linux/s390x",
    ),
    (
        [ARM64_V8, ARM64_V8, S390X],  # offered once each, sorted
        ["linux/amd64"],
        "idx: no image for platform(s) linux/amd64; the index offers linux/arm64/v8, linux/s390x",
    ),
    ([ARM_V7], ["linux/arm64"], "idx: no image for platform(s) linux/arm64; the index offers linux/arm/v7"),
]


@pytest.mark.parametrize(("platforms", "wanted", "message"), NO_CHOICE)
def test_choose_platform_refuses(platforms: list[dict[str, Any] | None], wanted: list[str], message: str) -> None:
    with pytest.raises(UnsupportedImageError) as info:
        choose_platform(entries(*platforms), wanted, "idx")
    assert str(info.value) == message


# (manifest document, Content-Type header, media type)
MEDIA_TYPES = [
    ({"mediaType": OCI_INDEX}, "", OCI_INDEX),
    ({"mediaType": DOCKER_LIST}, OCI_MANIFEST, DOCKER_LIST),  # the document wins over the header
    ({}, f"{DOCKER_MANIFEST}; charset=utf-8", DOCKER_MANIFEST),
    ({"schemaVersion": 2}, f" {DOCKER_LIST} ", DOCKER_LIST),
    ({"manifests": []}, "", OCI_INDEX),  # neither says: guessed from the content
    ({"layers": []}, "", OCI_MANIFEST),
]


@pytest.mark.parametrize(("document", "header", "expected"), MEDIA_TYPES)
def test_media_type_of(document: dict[str, Any], header: str, expected: str) -> None:
    assert media_type_of(json.dumps(document).encode(), header, "m") == expected


@pytest.mark.parametrize(
    ("data", "header", "fragment"),
    [
        (b'{"schemaVersion": 1}', DOCKER_MANIFEST, "m: Docker schema 1 manifest"),
        (b'{"mediaType": "text/html"}', "", "m: unsupported manifest media type 'text/html'"),
        (b"{}", "application/json", "m: unsupported manifest media type 'application/json'"),
        (b"[]", OCI_MANIFEST, "m: not a JSON object"),
        (b"{", OCI_MANIFEST, "m: not valid JSON"),
        (b"\xff", OCI_MANIFEST, "m: not valid JSON"),
    ],
)
def test_media_type_of_refuses(data: bytes, header: str, fragment: str) -> None:
    with pytest.raises(UnsupportedImageError, match="^" + fragment):
        media_type_of(data, header, "m")


CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(1), "size": 10}


def layer(media_type: str, n: int = 2) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest(n), "size": 5}


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ],
)
def test_parse_manifest_accepts_layer_type(media_type: str) -> None:
    manifest = parse_manifest(json.dumps({"config": CONFIG, "layers": [layer(media_type)]}).encode(), "m")
    assert manifest.layers == [Descriptor(media_type, digest(2), 5)]


# (manifest document, what the refusal says)
BAD_MANIFESTS: list[tuple[dict[str, Any], str]] = [
    ({"layers": []}, "m: malformed descriptor None"),
    ({"config": {"mediaType": CONFIG["mediaType"]}}, "m: malformed descriptor"),
    ({"config": [CONFIG]}, "m: malformed descriptor"),
    ({"config": {**CONFIG, "mediaType": "application/vnd.cncf.helm.config.v1+json"}}, "not a runnable container"),
    ({"config": CONFIG, "layers": [layer(FOREIGN_LAYER)]}, f"m: layer {digest(2)} is a foreign (Windows) layer"),
    ({"config": CONFIG, "layers": [layer("application/x-tar")]}, "has unsupported type 'application/x-tar'"),
    ({"config": CONFIG, "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar"}]}, "malformed descriptor"),
]


@pytest.mark.parametrize(("document", "fragment"), BAD_MANIFESTS)
def test_parse_manifest_refuses(document: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UnsupportedImageError) as info:
        parse_manifest(json.dumps(document).encode(), "m")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "bad_digest", ["sha256:../../etc", "sha512:" + "a" * 128, "sha256:" + "A" * 64, "sha256:" + "a" * 64 + "\n"]
)
def test_a_descriptor_digest_becomes_a_path_only_when_valid(bad_digest: str) -> None:
    document = {"manifests": [{"mediaType": OCI_MANIFEST, "digest": bad_digest, "size": 1, "platform": AMD64}]}
    with pytest.raises(ImageReferenceError, match="invalid digest"):
        parse_index(json.dumps(document).encode(), "idx")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({}, []),
        ({"manifests": None}, []),
        (
            {"manifests": [{"digest": digest(3), "platform": AMD64}]},
            [Descriptor("", digest(3), -1, AMD64)],  # media type and size may be missing
        ),
    ],
)
def test_parse_index(document: dict[str, Any], expected: list[Descriptor]) -> None:
    assert parse_index(json.dumps(document).encode(), "idx") == expected


# (image config, number of layers, refusal or None)
CONFIGS: list[tuple[dict[str, Any], int, str | None]] = [
    ({"rootfs": {"diff_ids": [digest(1)]}}, 1, None),
    ({"rootfs": {"diff_ids": []}}, 0, None),
    ({"rootfs": {"diff_ids": [digest(1)]}}, 2, "c: config lists 1 diff_ids for 2 layers"),
    ({"rootfs": {"diff_ids": [digest(1), digest(2)]}}, 1, "c: config lists 2 diff_ids for 1 layers"),
    ({}, 1, "c: config lists 0 diff_ids for 1 layers"),
    ({"rootfs": None}, 1, "c: config lists 0 diff_ids for 1 layers"),
    ({"rootfs": {"diff_ids": digest(1)}}, 1, "c: config lists 0 diff_ids for 1 layers"),  # a string, not a list
]


@pytest.mark.parametrize(("config", "layers", "refusal"), CONFIGS)
def test_check_image_config(config: dict[str, Any], layers: int, refusal: str | None) -> None:
    data = json.dumps(config).encode()
    if refusal is None:
        assert check_image_config(data, layers, "c") == config
    else:
        with pytest.raises(UnsupportedImageError) as info:
            check_image_config(data, layers, "c")
        assert str(info.value) == refusal


def test_check_image_config_refuses_a_diff_id_that_is_no_digest() -> None:
    with pytest.raises(ImageReferenceError, match="invalid digest"):
        check_image_config(json.dumps({"rootfs": {"diff_ids": ["sha256:x"]}}).encode(), 1, "c")
