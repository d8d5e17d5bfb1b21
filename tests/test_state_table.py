"""state.py by table: every record through its file format and back, and what is refused or dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unpacked.state import (
    FORMAT,
    Failure,
    FlatMarker,
    JobFailure,
    LayerRecord,
    Notice,
    Resolution,
    ResolvedImage,
    StateError,
    SyncRecord,
    load_image,
    load_image_file,
    load_job_failures,
    load_published_marker,
    load_record,
    load_resolution,
    record_json,
    save_flat_marker,
    save_image,
    save_job_failure,
    save_published_marker,
    save_resolution,
)
from unpacked.store import Store


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


LAYER = LayerRecord(digest(10), digest(11), "application/vnd.oci.image.layer.v1.tar+gzip", 1234)
PLAIN = ResolvedImage(
    reference="https://quay.io/org/app:1",
    name="quay.io/org/app:1",
    registry="quay.io",
    repository="org/app",
    source_digest=digest(1),
    manifest_digest=digest(1),
    config_digest=digest(2),
    platform="linux/amd64",
    platforms=("linux/amd64",),
    layers=(LAYER,),
)
MULTI = ResolvedImage(
    reference="https://registry.hub.docker.com/busybox:1",
    name="registry.hub.docker.com/busybox:1",
    registry="registry.hub.docker.com",
    repository="library/busybox",
    source_digest=digest(3),
    manifest_digest=digest(4),
    config_digest=digest(5),
    platform="linux/arm64/v8",
    platforms=("linux/arm64/v8", "linux/amd64", "linux/s390x"),
    layers=(LAYER, LayerRecord(digest(12), digest(13), "application/vnd.oci.image.layer.v1.tar", 0)),
    multiarch=(".multiarch/arm64:v8/registry.hub.docker.com/busybox:1",),
    missing_platforms=("linux/s390x",),
)
EMPTY_LISTS = ResolvedImage(**{**vars(PLAIN), "layers": (), "multiarch": (), "missing_platforms": ()})
IMAGES = [PLAIN, MULTI, EMPTY_LISTS]
IDS = ["plain", "multiarch", "empty lists"]


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_resolved_image_round_trip(image: ResolvedImage) -> None:
    assert ResolvedImage.from_json(image.to_json()) == image


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_resolved_image_round_trip_through_json_text(image: ResolvedImage) -> None:
    assert ResolvedImage.from_json(json.loads(json.dumps(image.to_json()))) == image


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_resolved_image_round_trip_through_its_file(tmp_path: Path, image: ResolvedImage) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    save_image(store, image)
    assert load_image(store, image.name) == image


# (image, the keys its file has: the optional ones only when they say something, `None` being nothing)
KEYS = [
    (PLAIN, set()),
    (MULTI, {"multiarch", "missing_platforms"}),
    (EMPTY_LISTS, {"multiarch", "missing_platforms"}),  # () is not None: an answer, kept
]
BASE_KEYS = {"format", "reference", "name", "registry", "repository", "source_digest", "manifest_digest"}
BASE_KEYS |= {"config_digest", "platform", "platforms", "layers"}


@pytest.mark.parametrize(("image", "optional"), KEYS, ids=IDS)
def test_resolved_image_keys(image: ResolvedImage, optional: set[str]) -> None:
    assert set(image.to_json()) == BASE_KEYS | optional


def test_resolved_image_writes_this_format() -> None:
    assert PLAIN.to_json()["format"] == FORMAT == 1


# (the `format` a file says, read?) -- a file without one predates it: format 1
FORMATS: list[tuple[dict[str, Any], bool]] = [
    ({"format": 1}, True),
    ({}, True),
    ({"format": 2}, False),  # newer: refused, never misread
    ({"format": 0}, False),
    ({"format": "1"}, False),
    ({"format": None}, False),
]


@pytest.mark.parametrize(("override", "read"), FORMATS)
def test_resolved_image_format(override: dict[str, Any], read: bool) -> None:
    document = {key: value for key, value in PLAIN.to_json().items() if key != "format"} | override
    if read:
        assert ResolvedImage.from_json(document) == PLAIN
    else:
        with pytest.raises(StateError, match=r"^state of format .*, but this unpacked reads format 1"):
            ResolvedImage.from_json(document)


# (what a state file holds, what load_image_file makes of it: None is "resolve it again")
FILES: list[tuple[str, ResolvedImage | type[Exception] | None]] = [
    (json.dumps(PLAIN.to_json()), PLAIN),
    ("", None),
    ("{", None),
    ("[]", None),
    ("{}", None),
    (json.dumps({**PLAIN.to_json(), "layers": [{"digest": digest(1)}]}), None),  # a layer lacks keys
    (json.dumps({**PLAIN.to_json(), "name": None} | {"platforms": 7}), None),  # not a list
    (json.dumps({**PLAIN.to_json(), "format": 2}), StateError),  # newer: never silently redone
]


@pytest.mark.parametrize(("text", "expected"), FILES)
def test_load_image_file(tmp_path: Path, text: str, expected: ResolvedImage | type[Exception] | None) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    if isinstance(expected, type):
        with pytest.raises(expected):
            load_image_file(path)
    else:
        assert load_image_file(path) == expected


def test_load_image_file_missing(tmp_path: Path) -> None:
    assert load_image_file(tmp_path / "nothing.json") is None


# -- the whole resolution -----------------------------------------------------------------------------

RESOLUTIONS = [
    Resolution(),
    Resolution(images={PLAIN.name: PLAIN}),
    Resolution(
        images={PLAIN.name: PLAIN, MULTI.name: MULTI},
        failures=[Failure("https://quay.io/x:1", "not found", False), Failure("https://q.io/y:2", "boom", True)],
        notices=[Notice(MULTI.reference, ("linux/s390x",)), Notice("https://q.io/z:1", ("linux/a", "linux/b"))],
    ),
]


@pytest.mark.parametrize("resolution", RESOLUTIONS, ids=["empty", "one image", "everything"])
def test_resolution_round_trip(tmp_path: Path, resolution: Resolution) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    save_resolution(store, resolution)
    assert load_resolution(store) == resolution


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (None, Resolution()),  # no file: nothing resolved yet
        ("not json", Resolution()),
        ({"images": ["gone/x:1"]}, Resolution()),  # an image without its state file is left out
        (
            {"format": 1, "images": [], "failures": [{"reference": "r", "error": "e", "ignored": True}]},
            Resolution(failures=[Failure("r", "e", True)]),
        ),
    ],
)
def test_load_resolution(tmp_path: Path, index: object, expected: Resolution) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    if index is not None:
        store.resolved.parent.mkdir(parents=True)
        store.resolved.write_text(index if isinstance(index, str) else json.dumps(index))
    assert load_resolution(store) == expected


def test_load_resolution_refuses_a_newer_format(tmp_path: Path) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    store.resolved.parent.mkdir(parents=True)
    store.resolved.write_text(json.dumps({"format": 2, "images": []}))
    with pytest.raises(StateError):
        load_resolution(store)


@pytest.mark.parametrize(
    ("first", "second", "changed"),
    [
        (PLAIN, PLAIN, False),  # equal content: the file is not rewritten (Snakemake sees no change)
        (PLAIN, ResolvedImage(**{**vars(PLAIN), "config_digest": digest(9)}), True),
    ],
)
def test_save_image_says_whether_it_wrote(
    tmp_path: Path, first: ResolvedImage, second: ResolvedImage, changed: bool
) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    save_image(store, first)
    assert save_image(store, second) is changed


# -- the other records ---------------------------------------------------------------------------------

JOB_FAILURES = [
    [],
    [JobFailure("fetch-blob", digest(1), "connection reset", (PLAIN.name, MULTI.name), 1700000000.5)],
    [
        JobFailure("publish", PLAIN.name, "disk full", (PLAIN.name,), 1.0),
        JobFailure("flatten", MULTI.name, "bad layer", (), 2.0),
    ],
]


@pytest.mark.parametrize("failures", JOB_FAILURES, ids=["none", "one", "two"])
def test_job_failures_round_trip(tmp_path: Path, failures: list[JobFailure]) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    for failure in failures:
        save_job_failure(store, failure)
    assert sorted(load_job_failures(store), key=lambda f: f.time) == failures


@pytest.mark.parametrize("image", [PLAIN, MULTI], ids=["plain", "multiarch"])
def test_published_marker_round_trip(tmp_path: Path, image: ResolvedImage) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    save_published_marker(store, image)
    marker = load_published_marker(store, image.name)
    assert marker is not None and (marker.name, marker.config_digest, marker.source_digest) == (
        image.name,
        image.config_digest,
        image.source_digest,
    )


@pytest.mark.parametrize("text", ["", "{", "[]", '{"name": "x"}'])
def test_damaged_published_marker_is_a_state_error(tmp_path: Path, text: str) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    store.published_marker(PLAIN.name).parent.mkdir(parents=True)
    store.published_marker(PLAIN.name).write_text(text)
    with pytest.raises(StateError, match="damaged publish marker"):
        load_published_marker(store, PLAIN.name)


def test_missing_published_marker_is_none(tmp_path: Path) -> None:
    assert load_published_marker(Store(tmp_path / "work", tmp_path / "root"), PLAIN.name) is None


# (flat marker, what its file says: unset fields are left out)
FLAT_MARKERS = [
    (FlatMarker(digest(2)), {"config_digest": digest(2)}),
    (FlatMarker(digest(2), files=0), {"config_digest": digest(2), "files": 0}),  # 0 is a count, kept
    (FlatMarker(digest(2), files=12, kept=False), {"config_digest": digest(2), "files": 12}),
    (FlatMarker(digest(2), kept=True), {"config_digest": digest(2), "kept": True}),
]


@pytest.mark.parametrize(("marker", "document"), FLAT_MARKERS)
def test_flat_marker_file(tmp_path: Path, marker: FlatMarker, document: dict[str, Any]) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    save_flat_marker(store, marker)
    assert json.loads(store.flat_marker(marker.config_digest).read_text()) == document


RECORD = SyncRecord(PLAIN.reference, digest(1), digest(1), digest(2), "linux/amd64", "2026-01-02T03:04:05Z", "x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (record_json(RECORD).decode(), RECORD),
        (json.dumps({**vars(RECORD), "extra": 1}), RECORD),  # a newer field is ignored
        (json.dumps({k: v for k, v in vars(RECORD).items() if k != "platform"}), None),
        ("[1]", None),
        ("", None),
    ],
)
def test_load_record(tmp_path: Path, text: str, expected: SyncRecord | None) -> None:
    path = tmp_path / "record.json"
    path.write_text(text)
    assert load_record(path) == expected


def test_record_json_is_sorted_so_equal_records_are_equal_bytes() -> None:
    assert list(json.loads(record_json(RECORD))) == sorted(vars(RECORD))
