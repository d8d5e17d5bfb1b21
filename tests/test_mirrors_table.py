"""mirrors.py's pure part by table: the reference a mirror is asked with."""

from __future__ import annotations

import pytest

from unpacked.errors import ImageReferenceError
from unpacked.mirrors import mirror_ref
from unpacked.reference import ImageRef, parse_reference

# (mirror as configured, upstream entry, the reference the mirror's client is made for)
MIRRORS = [
    ("m.io", "quay.io/org/app:1", ImageRef("https", "m.io", "org/app", "latest")),
    ("https://m.io", "quay.io/org/app:1", ImageRef("https", "m.io", "org/app", "latest")),
    ("http://m.local:5000", "quay.io/org/app:1", ImageRef("http", "m.local:5000", "org/app", "latest")),
    ("localhost:5000", "quay.io/app@sha256:" + "a" * 64, ImageRef("https", "localhost:5000", "app", "latest")),
    # Docker Hub's official images are library/<name> on a mirror too (the API's name, not the recipe's)
    ("m.io", "registry.hub.docker.com/busybox:1", ImageRef("https", "m.io", "library/busybox", "latest")),
    ("m.io", "docker.io/team/app:1", ImageRef("https", "m.io", "team/app", "latest")),
]


@pytest.mark.parametrize(("mirror", "entry", "expected"), MIRRORS)
def test_mirror_ref(mirror: str, entry: str, expected: ImageRef) -> None:
    assert mirror_ref(mirror, parse_reference(entry)) == expected


@pytest.mark.parametrize("mirror", ["ftp://m.io", "", "m.io\n", "-m.io", "m_io"])  # m.io/path: the schema refuses it
def test_mirror_ref_refuses_what_is_no_host(mirror: str) -> None:
    with pytest.raises(ImageReferenceError):
        mirror_ref(mirror, parse_reference("quay.io/org/app:1"))
