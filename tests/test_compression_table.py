"""compression.py by table: a layer's compression told by its first bytes, whatever its media type says."""

from __future__ import annotations

import pytest

from unpacked.compression import detect

# (first bytes of a layer blob, its compression, whatever its media type says)
MAGIC = [
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd\x04", "zstd"),
    (b"\x28\xb5\x2f", "none"),  # cut short: not zstd
    (b"\x1f", "none"),
    (b"", "none"),
    (b"etc/\x00\x00", "none"),  # a tar header
    (b"\x8b\x1f", "none"),
]


@pytest.mark.parametrize(("head", "kind"), MAGIC)
def test_detect(head: bytes, kind: str) -> None:
    assert detect(head) == kind
