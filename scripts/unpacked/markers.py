"""Self-repair before the DAG: a marker whose product is gone or wrong is removed, so it is rebuilt.

Snakemake sees only the markers (`<work>/published_flats/<hex>.json` for the names of a flat image,
`<work>/layers/xx/<hex>/layer.json`; `<work>/published/<name>.json` and `<work>/flats/<hex>.json`
are written by the publish job), not the products they stand for. A link, a flat image or a
whole output root removed by hand, or a changed `output_root`, would otherwise stay broken while
every run says "Nothing to be done". The checks are cheap (a few `lstat`/`readlink` per name, no
file contents read); `unpacked verify` compares the trees themselves.

A root that merely cannot be seen is not repaired: one that exists without the `.metadata/`
directory every publish writes, while names are marked published, is an empty mount point (a
network filesystem or CernVM-FS not mounted), and a read error other than "not found" stops the
run. Rebuilding thousands of images into the wrong filesystem is worse than stopping.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StoreError
from .state import PublishedMarker, ResolvedImage, StateError, load_published_marker
from .store import Store


def check_root_is_there(store: Store, images: dict[str, ResolvedImage]) -> None:
    """Refuse to repair into a root that looks unmounted (see the module documentation)."""
    if store.root.is_dir():
        looks_unmounted = not store.metadata_root.is_dir()
    else:
        looks_unmounted = not store.build_in_root  # a transaction publisher's root always exists
    if not looks_unmounted:
        return
    published = sum(1 for name in images if store.published_marker(name).exists())
    if not published:
        return  # a first run
    if store.root.is_dir():
        msg = (
            f"output root {store.root} exists but holds no .metadata/, while {published} name(s) are marked "
            "published: is its filesystem mounted? If it was emptied on purpose, remove the directory itself "
            "(or create an empty .metadata/ in it) and run again: everything is then published again"
        )
        raise StoreError(msg)
    msg = (
        f"output root {store.root} does not exist, while {published} name(s) are marked published "
        "through the transaction publisher: is the repository mounted?"
    )
    raise StoreError(msg)


@dataclass
class MarkerCheck:
    """What the check before the DAG found: one line per marker removed, and the names whose
    publish job has work to do (no marker, or one for another image)."""

    found: list[str] = field(default_factory=list)
    to_publish: set[str] = field(default_factory=set)


def drop_stale_markers(store: Store, images: dict[str, ResolvedImage], republish: Collection[str] = ()) -> MarkerCheck:
    """Remove the markers of `images`' products that are missing or wrong.

    A flat image's publish job (one per flat image, for all of its names) is marked done only while
    each of its names still has its own marker for the image it resolves to now: a name added, moved
    to it, or unmarked here or by a failed transaction makes its job run again. `republish`: names
    to publish again whatever their marker says (those of a transaction a crash left open, which a
    dry-run leaves marked).
    """
    check_root_is_there(store, images)
    check = MarkerCheck()
    found = check.found
    configs: set[str] = set()
    layers: set[str] = set()
    flats: dict[str, bool] = {}  # config digest -> its flat image is in the root (shared by tags)
    for name, image in sorted(images.items()):
        configs.add(image.config_digest)
        layers.update(image.layer_digests)
        marker, problem = _checked(store, name, flats)
        if problem:
            _unmark(store.published_marker(name))
            found.append(f"{image.reference}: {problem}; publishing it again")
        moved = marker and not marker.is_for(image.source_digest, image.config_digest)
        if not marker or problem or moved or name in republish:  # its publish job has this name to publish
            check.to_publish.add(name)
    names_of: dict[str, list[str]] = {}
    for name, image in images.items():
        names_of.setdefault(image.config_digest, []).append(name)
    for config in sorted(configs):
        flat = store.built_flat(config)
        if store.flat_marker(config).exists() and not flat.is_dir():
            # The publish job of its names builds it: it runs again once unmarked.
            _unmark(store.flat_marker(config))
            for name in names_of[config]:
                _unmark(store.published_marker(name))
            check.to_publish.update(names_of[config])
            found.append(f"flat image {flat} is missing; building it again")
        if any(name in check.to_publish for name in names_of[config]):
            _unmark(store.flat_published(config))
    for digest in sorted(layers):
        rootfs = store.layer_rootfs(digest)
        if store.layer_marker(digest).exists() and not rootfs.is_dir():
            _unmark(store.layer_marker(digest))
            found.append(f"extracted layer {store.layer(digest)} has no rootfs; extracting it again")
    return check


def published_problem(store: Store, name: str, flats: dict[str, bool]) -> str | None:
    """What is wrong with the published name `name` if its marker says it is published, else None
    (also when it has no marker: not published yet).

    `flats` caches which flat images exist, by config digest."""
    return _checked(store, name, flats)[1]


def _checked(store: Store, name: str, flats: dict[str, bool]) -> tuple[PublishedMarker | None, str | None]:
    """The name's publish marker (None if missing or damaged) and what is wrong with it, if anything."""
    try:
        marker = load_published_marker(store, name)
    except StateError:
        return None, "its publish marker is damaged"
    return marker, _problem(store, name, marker, flats) if marker else None


def _problem(store: Store, name: str, marker: PublishedMarker, flats: dict[str, bool]) -> str | None:
    config = marker.config_digest
    link = store.link(name)
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return f"the link {link} is missing"
    except OSError as err:
        if err.errno != errno.EINVAL:  # EIO, ENOTCONN, EACCES: cannot tell, so touch nothing
            raise StoreError(f"cannot read {link}: {err.strerror}; check the output root's filesystem") from err
        return f"{link} is not a link"
    if target != store.link_target(name, config):
        return f"the link {link} points to {target}, not to its image"
    if config not in flats:
        flats[config] = store.flat(config).is_dir()
    if not flats[config]:
        return f"its flat image {store.flat(config)} is missing"
    if not store.record(name).is_file():
        return f"its metadata {store.metadata(name)} is missing"
    return None


def _unmark(marker: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
