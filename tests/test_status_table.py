"""How `unpacked status` reads a published name or a recipe entry into registry, repository and tag."""

from __future__ import annotations

from pathlib import Path

import pytest

from unpacked.status import _name_of_entry, _split_name, parse_age

HEX = "a" * 64


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("127.0.0.1:5000/a/b:1", ("127.0.0.1:5000", "a/b", "1")),
        ("registry.example/library/alpine:3.20", ("registry.example", "library/alpine", "3.20")),
        (f"reg/pinned@sha256:{HEX}", ("reg", "pinned", f"sha256:{HEX}")),
        (f"reg:5000/x/y@sha256:{HEX}", ("reg:5000", "x/y", f"sha256:{HEX}")),
        (".multiarch/arm64/reg:5000/x/y:2", ("reg:5000", "x/y", "2")),
        (".multiarch/arm:v7/reg/app:1", ("reg", "app", "1")),
    ],
)
def test_split_name(name: str, parts: tuple[str, str, str]) -> None:
    assert _split_name(name) == parts


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("http://127.0.0.1:5000/views/missing:1", "127.0.0.1:5000/views/missing:1"),
        (f"https://reg/x@sha256:{HEX}", f"reg/x@sha256:{HEX}"),
        ("https://registry.hub.docker.com/library/alpine:3.20", "registry.hub.docker.com/library/alpine:3.20"),
    ],
)
def test_an_entry_that_never_resolved_is_shown_under_its_published_name(reference: str, name: str) -> None:
    assert _name_of_entry(reference) == name


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30m", 1800), ("12h", 43200), ("2d", 172800), ("1w", 604800), ("1.5h", 5400)]
)
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "two days", "2y", "-1d", "1 d h"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not an age"):
        parse_age(text)


def test_every_name_of_a_multiarch_entry_that_failed_shows_the_failure(tmp_path: Path) -> None:
    from unpacked.state import Failure, LayerRecord, Resolution, ResolvedImage
    from unpacked.status import rows
    from unpacked.store import Store

    reference = "https://reg/app:1"
    layer = LayerRecord(f"sha256:{HEX}", f"sha256:{HEX}", "application/vnd.oci.image.layer.v1.tar+gzip", 10)

    def image(name: str, platform: str) -> ResolvedImage:
        digest = f"sha256:{HEX}"
        return ResolvedImage(reference, name, "reg", "app", digest, digest, digest, platform, (platform,), (layer,))

    names = {
        "reg/app:1": "linux/amd64",
        ".multiarch/amd64/reg/app:1": "linux/amd64",
        ".multiarch/arm64/reg/app:1": "linux/arm64",
    }
    resolution = Resolution(
        images={name: image(name, platform) for name, platform in names.items()},
        failures=[Failure(reference, "registry reg: cannot connect", False)],
    )
    found = {
        row["name"]: (row["state"], row["error"]) for row in rows(Store(tmp_path / "w", tmp_path / "r"), resolution)
    }
    assert found == {name: ("failed", "registry reg: cannot connect") for name in names}, (
        "and no extra row for the entry"
    )
