"""markers.published_problem by table: every way a name marked published can be broken in the root,
each in a small root of its own (a few files: no image is unpacked)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from unpacked.markers import drop_stale_markers, published_problem
from unpacked.state import ResolvedImage, save_published_marker
from unpacked.store import Store

NAME = "quay.io/org/app:1"
CONFIG = "sha256:" + "c0" * 32
OTHER = "sha256:" + "d0" * 32


def image(config: str = CONFIG) -> ResolvedImage:
    return ResolvedImage(
        reference=f"https://{NAME}",
        name=NAME,
        registry="quay.io",
        repository="org/app",
        source_digest="sha256:" + "50" * 32,
        manifest_digest="sha256:" + "50" * 32,
        config_digest=config,
        platform="linux/amd64",
        platforms=("linux/amd64",),
        layers=(),
    )


def published(store: Store) -> None:
    """What a publish leaves: the flat image, its link, the metadata, the marker."""
    store.flat(CONFIG).mkdir(parents=True)
    store.link(NAME).parent.mkdir(parents=True)
    os.symlink(store.link_target(NAME, CONFIG), store.link(NAME))
    store.metadata(NAME).mkdir(parents=True)
    (store.metadata(NAME) / "record.json").write_text("{}")
    save_published_marker(store, image())


def no_marker(store: Store) -> None:
    published(store)
    store.published_marker(NAME).unlink()


def damaged_marker(store: Store) -> None:
    published(store)
    store.published_marker(NAME).write_text("{")


def link_removed(store: Store) -> None:
    published(store)
    store.link(NAME).unlink()


def link_is_a_directory(store: Store) -> None:
    link_removed(store)
    store.link(NAME).mkdir()


def link_elsewhere(store: Store) -> None:
    link_removed(store)
    os.symlink(store.link_target(NAME, OTHER), store.link(NAME))


def flat_removed(store: Store) -> None:
    published(store)
    store.flat(CONFIG).rmdir()


def flat_is_a_file(store: Store) -> None:
    flat_removed(store)
    store.flat(CONFIG).write_text("")


def metadata_removed(store: Store) -> None:
    published(store)
    (store.metadata(NAME) / "record.json").unlink()


def marker_of_an_older_image(store: Store) -> None:
    """The marker names the config the link points to: what counts is that the root agrees with it."""
    published(store)
    save_published_marker(store, image(OTHER))


# (how the root was left, the problem found: `{root}` is the root)
CASES: list[tuple[Callable[[Store], None], str | None]] = [
    (published, None),
    (no_marker, None),  # not published yet: nothing to repair, the DAG has its job
    (damaged_marker, "its publish marker is damaged"),
    (link_removed, f"the link {{root}}/{NAME} is missing"),
    (link_is_a_directory, f"{{root}}/{NAME} is not a link"),
    (link_elsewhere, f"the link {{root}}/{NAME} points to ../../.flat/d0/{'d0' * 32}, not to its image"),
    (flat_removed, f"its flat image {{root}}/.flat/c0/{'c0' * 32} is missing"),
    (flat_is_a_file, f"its flat image {{root}}/.flat/c0/{'c0' * 32} is missing"),
    (metadata_removed, f"its metadata {{root}}/.metadata/{NAME} is missing"),
    (marker_of_an_older_image, f"the link {{root}}/{NAME} points to ../../.flat/c0/{'c0' * 32}, not to its image"),
]


@pytest.mark.parametrize(("make", "problem"), CASES, ids=[make.__name__ for make, _ in CASES])
def test_published_problem(tmp_path: Path, make: Callable[[Store], None], problem: str | None) -> None:
    store = Store(tmp_path / "work", tmp_path / "root")
    make(store)
    expected = None if problem is None else problem.format(root=store.root)
    assert published_problem(store, NAME, {}) == expected


def test_published_problem_trusts_its_cache_of_flat_images(tmp_path: Path) -> None:
    """`flats` says which flat images exist, looked up once per config for all the names that share it."""
    store = Store(tmp_path / "work", tmp_path / "root")
    flat_removed(store)
    assert published_problem(store, NAME, {CONFIG: True}) is None


def moved_upstream(store: Store) -> None:
    """Published and intact, but the tag now resolves to another manifest of the same config."""
    published(store)
    marker = store.published_marker(NAME)
    marker.write_text(marker.read_text().replace("50" * 32, "51" * 32))


@pytest.mark.parametrize(
    ("make", "problem"), [*CASES, (moved_upstream, None)], ids=[make.__name__ for make, _ in CASES] + ["moved"]
)
def test_the_publish_job_of_a_flat_image_runs_again_for_each_name_to_publish(
    tmp_path: Path, make: Callable[[Store], None], problem: str | None
) -> None:
    """Its output is removed, and the name listed, whenever the name is not published as it resolves now."""
    store = Store(tmp_path / "work", tmp_path / "root")
    make(store)
    done = store.flat_published(CONFIG)
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    check = drop_stale_markers(store, {NAME: image()})
    intact = make is published
    assert check.to_publish == (set() if intact else {NAME})
    assert done.exists() == intact
    assert bool(check.found) == (problem is not None), check.found
