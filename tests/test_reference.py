"""Image references: grammar, Docker Hub naming, globs, refusals with clear messages."""

from __future__ import annotations

import pytest

from unpacked.errors import ImageReferenceError
from unpacked.reference import ImageRef, is_glob, parse_reference, validate_digest

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://quay.io/stimela/casa:1.7.1", ImageRef("https", "quay.io", "stimela/casa", "1.7.1", None)),
        ("quay.io/stimela/casa:1.7.1", ImageRef("https", "quay.io", "stimela/casa", "1.7.1", None)),
        ("http://127.0.0.1:5000/a/b:v1", ImageRef("http", "127.0.0.1:5000", "a/b", "v1", None)),
        (
            "https://gitlab-p4n.aip.de:5005/compute4punch/container-stacks/htcondor-wn:latest",
            ImageRef("https", "gitlab-p4n.aip.de:5005", "compute4punch/container-stacks/htcondor-wn", "latest"),
        ),
        (
            "ghcr.io/dluitz/bonn-comp-phys-c--dev:main",
            ImageRef("https", "ghcr.io", "dluitz/bonn-comp-phys-c--dev", "main"),
        ),
        ("quay.io/a/b@" + DIGEST, ImageRef("https", "quay.io", "a/b", None, DIGEST)),
        ("quay.io/a/b:v2@" + DIGEST, ImageRef("https", "quay.io", "a/b", "v2", DIGEST)),
        ("  quay.io/a/b:v2  ", ImageRef("https", "quay.io", "a/b", "v2")),
        ("reg.example:443/a__b/c.d/e-f:Tag_1.0-x", ImageRef("https", "reg.example:443", "a__b/c.d/e-f", "Tag_1.0-x")),
    ],
)
def test_grammar(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


def test_tag_and_digest_properties() -> None:
    ref = parse_reference("https://quay.io/a/b:v2@" + DIGEST)
    assert ref.manifest_reference == DIGEST  # a pinned digest wins over the tag
    assert ref.published_name == "quay.io/a/b:v2"
    assert str(ref) == "https://quay.io/a/b:v2@" + DIGEST
    by_digest = parse_reference("quay.io/a/b@" + DIGEST)
    assert by_digest.published_name == "quay.io/a/b@" + DIGEST
    assert by_digest.manifest_reference == DIGEST
    tagged = parse_reference("quay.io/a/b:v2")
    assert tagged.manifest_reference == "v2"
    assert tagged.base_url == "https://quay.io"


def test_port_and_scheme_kept() -> None:
    ref = parse_reference("http://127.0.0.1:5000/nested/deep/repo:1")
    assert ref.api_host == "127.0.0.1:5000"
    assert ref.base_url == "http://127.0.0.1:5000"
    assert ref.api_repository == "nested/deep/repo"
    assert ref.published_name == "127.0.0.1:5000/nested/deep/repo:1"


@pytest.mark.parametrize("host", ["registry.hub.docker.com", "docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_api_host_and_library(host: str) -> None:
    ref = parse_reference(f"https://{host}/centos:centos7")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.api_repository == "library/centos"
    # The published directory keeps the registry as the recipe wrote it (unpacked.cern.ch layout).
    assert ref.published_name == f"{host}/centos:centos7"
    assert ref.name == f"{host}/centos"


def test_docker_hub_two_components_get_no_library() -> None:
    ref = parse_reference("https://registry.hub.docker.com/stimela/pybdsf:1.6.6")
    assert ref.api_repository == "stimela/pybdsf"
    assert ref.api_host == "registry-1.docker.io"
    assert ref.published_name == "registry.hub.docker.com/stimela/pybdsf:1.6.6"


def test_other_registries_get_no_library() -> None:
    ref = parse_reference("https://quay.io/centos:7")
    assert ref.api_repository == "centos"
    assert ref.api_host == "quay.io"


@pytest.mark.parametrize("tag", ["*", "21.2.1*", "1.?", "v[0-9]*", "[!a]*"])
def test_glob_tags(tag: str) -> None:
    ref = parse_reference(f"https://registry.hub.docker.com/atlas/analysisbase:{tag}")
    assert ref.is_glob
    assert ref.tag == tag
    assert is_glob(tag)
    expanded = ref.with_tag("21.2.1")
    assert not expanded.is_glob
    assert expanded.published_name == "registry.hub.docker.com/atlas/analysisbase:21.2.1"


def test_plain_tag_is_not_glob() -> None:
    assert not parse_reference("quay.io/a/b:1.0").is_glob
    assert not parse_reference("quay.io/a/b@" + DIGEST).is_glob


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("quay.io/Stimela/casa:1", ["invalid repository", "'Stimela/casa'"]),
        ("quay.io/a//b:1", ["invalid repository"]),
        ("quay.io/a/b-:1", ["invalid repository"]),
        ("quay.io/a/b@sha256:../../x", ["invalid digest", "sha256:../../x"]),
        ("quay.io/a/b@sha256:" + "AB" * 32, ["invalid digest"]),
        ("quay.io/a/b@sha512:" + "ab" * 64, ["invalid digest"]),
        ("quay.io/a/b:", ["empty tag"]),
        ("quay.io/a/b", ["no tag or digest"]),
        ("ftp://quay.io/a/b:1", ["scheme 'ftp'", "not supported"]),
        ("quay.io/a/b:.hidden", ["invalid tag '.hidden'"]),
        ("quay.io/a/b:-x", ["invalid tag '-x'"]),
        ("quay.io/a/b:" + "x" * 129, ["invalid tag"]),
        ("quay.io/a/b:a/b", ["invalid"]),
        ("centos:7", ["no registry host"]),
        ("bad_host!/a:1", ["not a valid registry host"]),
        ("", ["empty image reference"]),
        ("   ", ["empty image reference"]),
        ("quay.io/a/b:v*@" + DIGEST, ["glob tag cannot be pinned"]),
    ],
)
def test_invalid_references(text: str, fragments: list[str]) -> None:
    with pytest.raises(ImageReferenceError) as info:
        parse_reference(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    if text.strip():
        assert repr(text) in message  # the entry is named as written


@pytest.mark.parametrize(
    ("text", "host", "instead"),
    [
        ("library/busybox:1.36", "library", "registry.hub.docker.com/library/busybox:1.36"),
        ("myorg/app:1", "myorg", "registry.hub.docker.com/myorg/app:1"),
        ("https://myorg/deep/app@" + DIGEST, "myorg", f"registry.hub.docker.com/myorg/deep/app@{DIGEST}"),
        ("http://team/app:1", "team", "http://registry.hub.docker.com/team/app:1"),
        ("Library/busybox:1", "Library", "registry.hub.docker.com/Library/busybox:1"),
    ],
)
def test_first_component_without_dot_or_port_is_not_a_host(text: str, host: str, instead: str) -> None:
    """Docker's rule: `library/busybox:1.36` names a Docker Hub repository, not a host `library`."""
    with pytest.raises(ImageReferenceError) as info:
        parse_reference(text)
    assert str(info.value) == (
        f"{text!r}: {host!r} is not a registry host (a host has a '.' or a ':', or is localhost); "
        f"name the registry first, e.g. {instead}"
    )


@pytest.mark.parametrize("text", ["centos:7", "busybox@" + DIGEST])
def test_single_component_suggests_docker_hub_library(text: str) -> None:
    with pytest.raises(ImageReferenceError) as info:
        parse_reference(text)
    assert (
        str(info.value)
        == f"{text!r}: no registry host; name the registry first, e.g. registry.hub.docker.com/library/{text}"
    )


@pytest.mark.parametrize(
    ("text", "registry"),
    [
        ("localhost/a:1", "localhost"),
        ("localhost:5000/a:1", "localhost:5000"),
        ("127.0.0.1/a:1", "127.0.0.1"),
        ("http://127.0.0.1:5000/a/b:1", "127.0.0.1:5000"),
        ("intranet:443/a:1", "intranet:443"),
        ("registry.local/a:1", "registry.local"),
    ],
)
def test_hosts_by_dot_port_or_localhost(text: str, registry: str) -> None:
    assert parse_reference(text).registry == registry


def test_longest_valid_tag() -> None:
    assert parse_reference("quay.io/a/b:" + "x" * 128).tag == "x" * 128


@pytest.mark.parametrize("digest", ["sha256:../../x", "sha256:" + "a" * 63, "sha256:" + "g" * 64, "../" + "a" * 64, ""])
def test_validate_digest_refuses(digest: str) -> None:
    with pytest.raises(ImageReferenceError, match="invalid digest"):
        validate_digest(digest)


def test_validate_digest_accepts() -> None:
    assert validate_digest(DIGEST) == DIGEST


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("https://quay.io/stimela/*", True),
        ("quay.io/stimela/*", True),
        ("http://quay.io/stimela/*", True),  # the scheme is not part of the match
        ("quay.io/stimela/casa:1.7.1", True),
        ("quay.io/stimela/casa:1.7.?", True),
        ("quay.io/stimela/casa:1.6*", False),
        ("quay.io/other/*", False),
        ("ghcr.io/*", False),
        ("*", True),
    ],
)
def test_matches_ignore_errors_globs(pattern: str, expected: bool) -> None:
    ref = parse_reference("https://quay.io/stimela/casa:1.7.1")
    assert ref.matches(pattern) is expected


def test_matches_is_case_sensitive() -> None:
    ref = parse_reference("https://quay.io/stimela/casa:Latest")
    assert ref.matches("quay.io/stimela/casa:Latest")
    assert not ref.matches("quay.io/stimela/casa:latest")
