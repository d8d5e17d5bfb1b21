"""resolve.py's pure part by table: the .multiarch directory of a platform (tag globs: reference.matching_tags,
in tests/test_reference_table.py)."""

from __future__ import annotations

from typing import Any

import pytest

from unpacked.errors import UnsupportedImageError
from unpacked.resolve import arch_directory

# (an index entry's platform, its .multiarch directory)
ARCH_DIRECTORIES: list[tuple[dict[str, Any], str]] = [
    ({"os": "linux", "architecture": "amd64"}, "amd64"),
    ({"os": "linux", "architecture": "arm64", "variant": "v8"}, "arm64:v8"),
    ({"os": "linux", "architecture": "arm", "variant": "v7"}, "arm:v7"),
    ({"os": "linux", "architecture": "arm64", "variant": ""}, "arm64"),
    ({"os": "windows", "architecture": "amd64"}, "amd64"),  # the OS is not part of it
    ({"architecture": "x" * 32}, "x" * 32),
]


@pytest.mark.parametrize(("platform", "directory"), ARCH_DIRECTORIES)
def test_arch_directory(platform: dict[str, Any], directory: str) -> None:
    assert arch_directory(platform, "idx") == directory


@pytest.mark.parametrize(
    "platform",
    [
        {},
        {"architecture": ""},
        {"architecture": "../x"},
        {"architecture": "amd64", "variant": "../../x"},
        {"architecture": "amd64/x"},
        {"architecture": "arm64", "variant": "v8:x"},
        {"architecture": 5},
        {"architecture": ["amd64"]},
        {"architecture": "x" * 33},
        {"architecture": "amd64\n"},
        {"architecture": "amd 64"},
    ],
)
def test_arch_directory_refuses(platform: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedImageError, match=r"cannot name a \.multiarch directory"):
        arch_directory(platform, "idx")
