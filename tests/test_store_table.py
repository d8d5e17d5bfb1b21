"""store.py by table: every path the Store names, Snakemake patterns, link targets, metadata versions."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from unpacked.errors import ImageReferenceError
from unpacked.store import WORK_LAYOUT, Store, digest_hex

HEX = "ab" + "01" * 31
DIGEST = f"sha256:{HEX}"
NAME = "quay.io/org/app:1"
WORK, ROOT = Path("/w"), Path("/r")
STORE = Store(WORK, ROOT)
TRANSACTION = Store(WORK, ROOT, build_in_root=False)

# (what is asked of the store, the path it names)
PATHS: list[tuple[Callable[[], Path], str]] = [
    (lambda: STORE.blob(DIGEST), f"/w/blobs/sha256/{HEX}"),
    (lambda: STORE.layer(DIGEST), f"/w/layers/ab/{HEX}"),
    (lambda: STORE.layer_marker(DIGEST), f"/w/layers/ab/{HEX}/layer.json"),
    (lambda: STORE.flat_marker(DIGEST), f"/w/flats/{HEX}.json"),
    (lambda: STORE.flat(DIGEST), f"/r/.flat/ab/{HEX}"),
    (lambda: STORE.built_flat(DIGEST), f"/r/.flat/ab/{HEX}"),  # a directory publisher builds in place
    (lambda: TRANSACTION.built_flat(DIGEST), f"/w/flat/ab/{HEX}"),  # a transaction copies it in
    (lambda: TRANSACTION.flat(DIGEST), f"/r/.flat/ab/{HEX}"),
    (lambda: STORE.state(NAME), "/w/state/images/quay.io/org/app:1.json"),
    (lambda: STORE.state(f".multiarch/arm64:v8/{NAME}"), "/w/state/images/.multiarch/arm64:v8/quay.io/org/app:1.json"),
    (lambda: STORE.published_marker(NAME), "/w/published/quay.io/org/app:1.json"),
    (lambda: STORE.flat_published(DIGEST), f"/w/published_flats/{HEX}.json"),
    (lambda: STORE.flat_names(DIGEST), f"/w/state/flats/{HEX}.json"),
    (lambda: STORE.batch(DIGEST), f"/w/state/batches/{HEX}.json"),
    (lambda: STORE.batch_published(DIGEST), f"/w/published_batches/{HEX}.json"),
    (lambda: STORE.link(NAME), "/r/quay.io/org/app:1"),
    (lambda: STORE.metadata(NAME), "/r/.metadata/quay.io/org/app:1"),
    (lambda: STORE.metadata_versions_dir(NAME), "/r/.metadata/quay.io/org/.app:1.meta"),
    (lambda: STORE.metadata_version(NAME, "0123456789abcdef"), "/r/.metadata/quay.io/org/.app:1.meta/0123456789abcdef"),
    (lambda: STORE.resolved, "/w/state/resolved.json"),
    (lambda: STORE.realms, "/w/state/realms.json"),
    (lambda: STORE.settings, "/w/state/settings.json"),
    (lambda: STORE.run_settings("k1"), "/w/state/settings/k1.json"),
    (lambda: STORE.run_lock, "/w/state/run.lock"),
    (lambda: STORE.publish_lock, "/w/publish.lock"),
    (lambda: STORE.failures, "/w/failures"),
    (lambda: STORE.unresolved, "/w/failures/unresolved"),
    (lambda: STORE.work_trash, "/w/trash"),
    (lambda: STORE.root_trash, "/r/.trash"),
    (lambda: STORE.placeholders, "/w/state/placeholders"),
    (lambda: STORE.layer_rootfs(DIGEST), f"/w/layers/ab/{HEX}/rootfs"),
    (lambda: STORE.metadata_root, "/r/.metadata"),
    (lambda: STORE.record(NAME), "/r/.metadata/quay.io/org/app:1/record.json"),
    # sha256("") is e3b0c442 98fc1c14 9afbf4c8 996fb924 27ae41e4...: its first 32 hex characters name the key "".
    (lambda: STORE.failure_record("publish", ""), "/w/failures/publish-e3b0c44298fc1c149afbf4c8996fb924.json"),
]


@pytest.mark.parametrize(("path", "expected"), PATHS)
def test_store_path(path: Callable[[], Path], expected: str) -> None:
    assert path() == Path(expected)


# (layout entry, its Snakemake pattern: the fields left as wildcards)
PATTERNS = [
    ("blob", "/w/blobs/sha256/{hex}"),
    ("layer", "/w/layers/{xx}/{hex}"),
    ("layer_marker", "/w/layers/{xx}/{hex}/layer.json"),
    ("flat_marker", "/w/flats/{hex}.json"),
    ("flat_lock", "/w/flats/{hex}.lock"),
    ("built_flat", "/w/flat/{xx}/{hex}"),
    ("published_marker", "/w/published/{name}.json"),
    ("flat_published", "/w/published_flats/{hex}.json"),
    ("flat_names", "/w/state/flats/{hex}.json"),
    ("batch", "/w/state/batches/{hex}.json"),
    ("batch_published", "/w/published_batches/{hex}.json"),
    ("state", "/w/state/images/{name}.json"),
    ("unresolved", "/w/failures/unresolved"),
    ("log.fetch_blob", "/w/logs/fetch_blob/{hex}.log"),
    ("log.extract_layer", "/w/logs/extract_layer/{xx}/{hex}.log"),
    ("log.publish_image", "/w/logs/publish_image/{hex}.log"),
    ("log.publish_batch", "/w/logs/publish_batch/{hex}.log"),
    ("log.report_unresolved", "/w/logs/report_unresolved.log"),
    ("log.report_views", "/w/logs/report_views.log"),
    ("run_settings", "/w/state/settings/{name}.json"),
]


@pytest.mark.parametrize(("what", "expected"), PATTERNS)
def test_pattern(what: str, expected: str) -> None:
    assert STORE.pattern(what) == expected


def test_every_layout_entry_is_in_the_pattern_table() -> None:
    assert sorted(WORK_LAYOUT) == sorted(what for what, _ in PATTERNS)


# A path method filled in is its pattern with the fields put in: the rules and the code agree.
@pytest.mark.parametrize(
    ("what", "path"),
    [
        ("blob", lambda: STORE.blob(DIGEST)),
        ("layer", lambda: STORE.layer(DIGEST)),
        ("layer_marker", lambda: STORE.layer_marker(DIGEST)),
        ("flat_marker", lambda: STORE.flat_marker(DIGEST)),
        ("built_flat", lambda: TRANSACTION.built_flat(DIGEST)),
        ("published_marker", lambda: STORE.published_marker(NAME)),
        ("state", lambda: STORE.state(NAME)),
    ],
)
def test_paths_fill_their_pattern(what: str, path: Callable[[], Path]) -> None:
    assert str(path()) == STORE.pattern(what).format(hex=HEX, xx=HEX[:2], name=NAME)


def test_store_pattern_refuses_an_unknown_entry() -> None:
    with pytest.raises(KeyError):
        STORE.pattern("blobs")


# (published name, the relative target of its link)
LINK_TARGETS = [
    ("quay.io/org/app:1", f"../../.flat/ab/{HEX}"),
    ("quay.io/app:1", f"../.flat/ab/{HEX}"),
    ("127.0.0.1:5000/a/b/c:1", f"../../../.flat/ab/{HEX}"),
    (f"quay.io/org/app@sha256:{'c' * 64}", f"../../.flat/ab/{HEX}"),
    (".multiarch/arm64:v8/quay.io/org/app:1", f"../../../../.flat/ab/{HEX}"),
]


@pytest.mark.parametrize(("name", "target"), LINK_TARGETS)
def test_link_target(name: str, target: str) -> None:
    assert STORE.link_target(name, DIGEST) == target


@pytest.mark.parametrize(("name", "target"), LINK_TARGETS)
def test_link_target_leads_from_the_link_to_the_flat_image(name: str, target: str) -> None:
    assert os.path.normpath(STORE.link(name).parent / STORE.link_target(name, DIGEST)) == str(STORE.flat(DIGEST))


@pytest.mark.parametrize(
    "bad", ["sha256:../../etc", f"sha512:{HEX}", f"sha256:{HEX.upper()}", f"sha256:{HEX}\n", HEX, ""]
)
@pytest.mark.parametrize(
    "use",
    [STORE.blob, STORE.layer, STORE.flat, STORE.flat_marker, lambda d: STORE.link_target(NAME, d), digest_hex],
    ids=["blob", "layer", "flat", "flat_marker", "link_target", "digest_hex"],
)
def test_no_path_from_an_invalid_digest(bad: str, use: Callable[[str], object]) -> None:
    with pytest.raises(ImageReferenceError):
        use(bad)


# (entry in a name's metadata versions directory, is it a version?)
VERSIONS = [
    ("0123456789abcdef", True),
    ("ffffffffffffffff", True),
    ("0123456789abcde", False),  # 15
    ("0123456789abcdef0", False),  # 17
    ("0123456789ABCDEF", False),
    ("0123456789abcdeg", False),
    (".0123456789abcdef.tmp-1", False),  # a staging directory
    ("0123456789abcdef\n", False),
]


@pytest.mark.parametrize(("entry", "listed"), VERSIONS)
def test_metadata_versions_lists_complete_versions_only(tmp_path: Path, entry: str, listed: bool) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    (store.metadata_versions_dir(NAME) / entry).mkdir(parents=True)
    assert (store.metadata_versions(NAME) == [store.metadata_version(NAME, entry)]) is listed


def test_metadata_versions_of_a_name_never_published(tmp_path: Path) -> None:
    assert Store(tmp_path / "work", tmp_path / "root").metadata_versions(NAME) == []


def _make(paths: list[Path]) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


# (kind, entries made on disk relative to the store's base, the products listed, the dot-named listed)
ON_DISK = [
    (
        "blob",
        [f"w/blobs/sha256/{HEX}", "w/blobs/sha256/.part-1"],
        [f"w/blobs/sha256/{HEX}"],
        ["w/blobs/sha256/.part-1"],
    ),
    (
        "layer",
        [f"w/layers/ab/{HEX}/layer.json", "w/layers/ab/.tmp-x/f"],
        [f"w/layers/ab/{HEX}"],
        ["w/layers/ab/.tmp-x"],
    ),
    ("root.flat", [f"r/.flat/ab/{HEX}/f", "r/.flat/ab/.old/f"], [f"r/.flat/ab/{HEX}"], ["r/.flat/ab/.old"]),
    ("built_flat", [f"w/flat/ab/{HEX}/f"], [f"w/flat/ab/{HEX}"], []),
    ("run_settings", ["w/state/settings/k1.json", "w/state/settings/.k2.json.1.tmp"], ["w/state/settings/k1.json"], []),
    ("blob", [], [], []),  # nothing on disk, not even the directory
]


@pytest.mark.parametrize(("what", "made", "products", "dot_named"), ON_DISK)
def test_on_disk_and_beside(
    tmp_path: Path, what: str, made: list[str], products: list[str], dot_named: list[str]
) -> None:
    store = Store(tmp_path / "w", tmp_path / "r")
    _make([tmp_path / p for p in made])
    assert (store.on_disk(what), [p for p in store.beside(what) if what != "run_settings"]) == (
        [tmp_path / p for p in products],
        [tmp_path / p for p in dot_named],
    )


def test_state_files_are_found_at_any_depth(tmp_path: Path) -> None:
    store = Store(tmp_path / "w", tmp_path / "r")
    names = [NAME, f".multiarch/arm64:v8/{NAME}", "localhost:5000/a:1"]
    _make([store.state(name) for name in names])
    assert store.state_files() == sorted(store.state(name) for name in names)
