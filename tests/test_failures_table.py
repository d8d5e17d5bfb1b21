"""failures.py by table: which images a failed job leaves out of date, and the end-of-run texts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from unpacked.failures import NOTICES_SHOWN, images_affected, notices_text, summary_text
from unpacked.state import Failure, LayerRecord, Notice, Resolution, ResolvedImage


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def layer(n: int) -> LayerRecord:
    return LayerRecord(digest(n), digest(n + 100), "application/vnd.oci.image.layer.v1.tar", 1)


BASE = ResolvedImage(
    reference="https://q.io/a:1",
    name="q.io/a:1",
    registry="q.io",
    repository="a",
    source_digest=digest(90),
    manifest_digest=digest(91),
    config_digest=digest(1),
    platform="linux/amd64",
    platforms=("linux/amd64",),
    layers=(layer(11), layer(12)),
)
# a:1 and its .multiarch name are one image; b:1 shares layer 12 with them; c:1 has a config of its own.
RESOLUTION = Resolution(
    images={
        "q.io/a:1": BASE,
        ".multiarch/amd64/q.io/a:1": replace(BASE, name=".multiarch/amd64/q.io/a:1"),
        "q.io/b:1": replace(BASE, name="q.io/b:1", config_digest=digest(2), layers=(layer(12), layer(13))),
        "q.io/c:1": replace(BASE, name="q.io/c:1", config_digest=digest(3), layers=(layer(14),)),
    }
)

# (failed action, what it ran for, the published names it leaves out of date)
AFFECTED = [
    ("publish", "q.io/a:1", ["q.io/a:1"]),  # publishing is per name
    ("publish", "q.io/gone:1", ["q.io/gone:1"]),
    ("flatten", "q.io/a:1", ["q.io/a:1", ".multiarch/amd64/q.io/a:1"]),  # one flat image, two names
    ("flatten", "q.io/b:1", ["q.io/b:1"]),
    ("flatten", "q.io/gone:1", ["q.io/gone:1"]),
    ("fetch-blob", digest(12), ["q.io/a:1", ".multiarch/amd64/q.io/a:1", "q.io/b:1"]),  # a shared layer
    ("extract-layer", digest(13), ["q.io/b:1"]),
    ("extract-layer", digest(11), ["q.io/a:1", ".multiarch/amd64/q.io/a:1"]),
    ("fetch-blob", digest(3), ["q.io/c:1"]),  # a config blob
    ("fetch-blob", digest(1), ["q.io/a:1", ".multiarch/amd64/q.io/a:1"]),
    ("fetch-blob", digest(111), [digest(111)]),  # a diff_id is not a blob anyone fetches
    ("fetch-blob", digest(99), [digest(99)]),  # nobody's: the key itself
]


@pytest.mark.parametrize(("action", "key", "names"), AFFECTED)
def test_images_affected(action: str, key: str, names: list[str]) -> None:
    assert images_affected(RESOLUTION, action, key) == names


def test_images_affected_with_nothing_resolved() -> None:
    assert images_affected(Resolution(), "flatten", "q.io/a:1") == ["q.io/a:1"]


# (failures, the summary, word for word)
SUMMARIES = [
    ([], "0 image(s) failed:"),
    ([Failure("https://q.io/a:1", "boom", False)], "1 image(s) failed:\n  https://q.io/a:1\n      boom"),
    (
        [Failure("https://q.io/a:1", "boom", True)],
        "1 image(s) failed:\n  https://q.io/a:1 (ignored: matches ignoreErrors)\n      boom",
    ),
    (
        [Failure("https://q.io/b:1", "second", False), Failure("https://q.io/a:1", "first", True)],
        "2 image(s) failed:\n  https://q.io/b:1\n      second\n"
        "  https://q.io/a:1 (ignored: matches ignoreErrors)\n      first",  # in the order given
    ),
]


@pytest.mark.parametrize(("found", "text"), SUMMARIES)
def test_summary_text(found: list[Failure], text: str) -> None:
    assert summary_text(found) == text


HEADER = "image(s) lack some wanted platform(s) (published for the others):"


def notices(count: int) -> list[Notice]:
    return [Notice(f"https://q.io/n{i}:1", ("linux/arm64",)) for i in range(count)]


# (notices, the note, word for word)
NOTES = [
    ([], ""),
    (
        [Notice("https://q.io/a:1", ("linux/arm64", "linux/ppc64le"))],
        f"1 {HEADER}\n  https://q.io/a:1: no linux/arm64, linux/ppc64le",
    ),
    (
        notices(2),
        f"2 {HEADER}\n  https://q.io/n0:1: no linux/arm64\n  https://q.io/n1:1: no linux/arm64",
    ),
]


@pytest.mark.parametrize(("given", "text"), NOTES)
def test_notices_text(given: list[Notice], text: str) -> None:
    assert notices_text(given) == text


# (number of notices, lines of the note: a header, at most NOTICES_SHOWN tags, then how many more)
@pytest.mark.parametrize(
    ("count", "lines"), [(1, 2), (NOTICES_SHOWN, NOTICES_SHOWN + 1), (NOTICES_SHOWN + 1, NOTICES_SHOWN + 2)]
)
def test_notices_text_length(count: int, lines: int) -> None:
    assert len(notices_text(notices(count)).splitlines()) == lines


@pytest.mark.parametrize(("count", "more"), [(NOTICES_SHOWN + 1, 1), (NOTICES_SHOWN + 7, 7)])
def test_notices_text_counts_what_it_cuts(count: int, more: int) -> None:
    assert notices_text(notices(count)).splitlines()[-1] == f"  ... and {more} more (see state/resolved.json)"


def test_notices_text_header_counts_all() -> None:
    assert notices_text(notices(NOTICES_SHOWN + 7)).splitlines()[0] == f"{NOTICES_SHOWN + 7} {HEADER}"
