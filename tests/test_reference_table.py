"""reference.py by table: names and paths of a reference, glob detection, tag-glob matching, and the
anchors of every pattern (a trailing newline is not a valid end of a name that becomes a path)."""

from __future__ import annotations

import pytest

from unpacked.errors import ImageReferenceError
from unpacked.reference import ImageRef, is_glob, matching_tags, parse_reference, validate_digest

DIGEST = "sha256:" + "ab" * 32

# -- what one parsed reference names ------------------------------------------------------------------

# (entry, property, expected)
PROPERTIES = [
    ("quay.io/a/b:1", "name", "quay.io/a/b"),
    ("quay.io/a/b:1", "published_name", "quay.io/a/b:1"),
    ("quay.io/a/b@" + DIGEST, "published_name", "quay.io/a/b@" + DIGEST),
    ("quay.io/a/b:1@" + DIGEST, "published_name", "quay.io/a/b:1"),  # the tag names it, the digest pins it
    ("quay.io/a/b:1", "manifest_reference", "1"),
    ("quay.io/a/b:1@" + DIGEST, "manifest_reference", DIGEST),
    ("quay.io/a/b:1", "api_host", "quay.io"),
    ("docker.io/busybox:1", "api_host", "registry-1.docker.io"),
    ("registry.hub.docker.com/busybox:1", "api_repository", "library/busybox"),
    ("registry.hub.docker.com/team/app:1", "api_repository", "team/app"),
    ("quay.io/busybox:1", "api_repository", "busybox"),
    ("http://127.0.0.1:5000/a:1", "base_url", "http://127.0.0.1:5000"),
    ("index.docker.io/a:1", "base_url", "https://registry-1.docker.io"),
    ("registry.hub.docker.com/busybox:1", "name", "registry.hub.docker.com/busybox"),  # as written
    ("quay.io/a/b:v*", "is_glob", True),
    ("quay.io/a/b:v1", "is_glob", False),
    ("quay.io/a/b@" + DIGEST, "is_glob", False),
]


@pytest.mark.parametrize(("entry", "attribute", "expected"), PROPERTIES)
def test_reference_property(entry: str, attribute: str, expected: object) -> None:
    assert getattr(parse_reference(entry), attribute) == expected


# str() is the entry with its scheme made explicit; parsing it again gives the same reference.
ROUND_TRIPS = [
    ("quay.io/a/b:1", "https://quay.io/a/b:1"),
    ("http://localhost:5000/a:1", "http://localhost:5000/a:1"),
    ("quay.io/a/b@" + DIGEST, "https://quay.io/a/b@" + DIGEST),
    ("quay.io/a/b:1@" + DIGEST, "https://quay.io/a/b:1@" + DIGEST),
    (" quay.io/a/b:1 ", "https://quay.io/a/b:1"),
]


@pytest.mark.parametrize(("entry", "text"), ROUND_TRIPS)
def test_str_is_the_explicit_entry(entry: str, text: str) -> None:
    assert str(parse_reference(entry)) == text


@pytest.mark.parametrize(("entry", "text"), ROUND_TRIPS)
def test_str_parses_back_to_the_same_reference(entry: str, text: str) -> None:
    assert parse_reference(text) == parse_reference(entry)


# with_tag: a glob reference expanded to one tag keeps everything but the tag, and loses any digest.
@pytest.mark.parametrize(
    ("ref", "tag", "expected"),
    [
        (ImageRef("https", "quay.io", "a/b", "v*"), "v1", ImageRef("https", "quay.io", "a/b", "v1")),
        (ImageRef("http", "h:1", "a", "1", DIGEST), "2", ImageRef("http", "h:1", "a", "2", None)),
    ],
)
def test_with_tag(ref: ImageRef, tag: str, expected: ImageRef) -> None:
    assert ref.with_tag(tag) == expected


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("*", True), ("v?", True), ("v[12]", True), ("1.0", False), ("latest", False), ("a!b^", False), ("", False)],
)
def test_is_glob(tag: str, expected: bool) -> None:
    assert is_glob(tag) is expected


# -- tag globs over a registry's tag list -----------------------------------------------------------

# (tags the registry lists, pattern, tags matched: valid ones only, sorted, once each)
MATCHING_TAGS = [
    (["1.0", "1.1", "2.0"], "1.*", ["1.0", "1.1"]),
    (["b", "a", "a"], "*", ["a", "b"]),
    (["v1", "V1"], "v*", ["v1"]),  # case matters, as in the registry
    (["1.0", "10"], "1?0", ["1.0"]),  # ? is one character, the dot too
    (["v1", "v2", "va"], "v[0-9]", ["v1", "v2"]),
    (["v1", "v2", "va"], "v[!0-9]", ["va"]),
    ([], "*", []),
    (["1.0"], "2.*", []),
    ([".hidden", "-x", "ok"], "*", ["ok"]),  # a tag starts with a letter, digit or _
    (["a/b", "../x", "a"], "*", ["a"]),  # a tag is one path component
    ([1, None, {"tag": "x"}, "1"], "*", ["1"]),  # a hostile answer may hold anything
    (["x" * 129, "x" * 128], "x*", ["x" * 128]),  # 128 characters at most
    (["latest\n", "latest"], "*", ["latest"]),  # no newline in a file name
    (["a b", "a"], "a*", ["a"]),
]


@pytest.mark.parametrize(("tags", "pattern", "expected"), MATCHING_TAGS)
def test_matching_tags(tags: list[object], pattern: str, expected: list[str]) -> None:
    assert matching_tags(tags, pattern) == expected


# -- anchors: a name with a newline at its end is refused, not kept in a path --------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "quay.io/a/b\n:1",  # repository
        "quay.io\n/a:1",  # registry host
        "quay.io/a/b:1\n@" + DIGEST,  # tag before a digest
        "http://localhost:5000/a/b\n@" + DIGEST,  # repository before a digest
    ],
)
def test_newline_inside_an_entry_is_refused(entry: str) -> None:
    with pytest.raises(ImageReferenceError):
        parse_reference(entry)


@pytest.mark.parametrize("digest", [DIGEST + "\n", DIGEST + "\n\n", "\n" + DIGEST, DIGEST + " "])
def test_digest_with_whitespace_is_refused(digest: str) -> None:
    with pytest.raises(ImageReferenceError, match="invalid digest"):
        validate_digest(digest)
